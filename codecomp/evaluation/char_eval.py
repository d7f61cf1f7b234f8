"""Held-out evaluation of a Char-LSTM against a character n-gram baseline trained on the same train split."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from codecomp.data.shards import TextShard
from codecomp.evaluation.line_completion import LineTask, line_metrics, sample_line_tasks, sample_positions
from codecomp.inference.char_lstm import CharLSTMCompleter
from codecomp.inference.completer import CompletionOptions, CompletionRequest
from codecomp.models.ngram import CharNGram
from codecomp.models.ngram_lines import complete_line

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CharEvalSettings:
    ngram_order: int = 6
    ngram_discount: float | None = None  # None: modified Kneser-Ney
    next_char_positions: int = 20000
    line_positions: int = 200
    beam_size: int = 4
    max_chars: int = 80
    context_bytes: int = 4096
    max_documents: int | None = None
    seed: int = 0


def evaluate_language(
    completer: CharLSTMCompleter,
    corpus: Path,
    split: str,
    language: str,
    settings: CharEvalSettings,
    fit_corpus: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics of the model and of the baseline on one language's files of `corpus`'s `split`, and their ratios;
    the baseline is fitted on the train split of `fit_corpus` (the corpus the model learnt from; default `corpus`)."""
    shard = TextShard(corpus / split / language)
    chosen: Sequence[int] = range(len(shard))
    if settings.max_documents is not None and settings.max_documents < len(shard):  # a seeded sample of all files
        rng = np.random.default_rng(settings.seed)
        chosen = sorted(rng.choice(len(shard), size=settings.max_documents, replace=False).tolist())
    documents = [shard.document(i) for i in chosen]
    train = TextShard((corpus if fit_corpus is None else fit_corpus) / "train" / language)
    log.info("%s: fitting the %d-gram baseline on %s", language, settings.ngram_order, train.folder)
    reading = tqdm(train, total=len(train), desc=f"{language}: n-gram fit, reading", unit="file")
    ngram = CharNGram(settings.ngram_order, settings.ngram_discount).fit(reading)

    log.info("%s: scoring %d held-out files", language, len(documents))
    with tqdm(total=sum(map(len, documents)), desc=f"{language}: scoring", unit="B", unit_scale=True) as bar:
        scored = completer.score(documents, language, progress=bar.update)
    model_bits = np.concatenate([bits for bits, _ in scored])
    baseline_bits = np.concatenate([ngram.document_bits(document) for document in documents])
    positions = sample_positions(documents, settings.next_char_positions, settings.seed)
    model_correct = [bool(scored[d][1][i]) for d, i in positions]
    context = settings.ngram_order - 1  # all the n-gram reads: no copy of a long file's whole prefix per position
    baseline_correct = [int(np.argmax(ngram.distribution(documents[d][max(0, i - context) : i]))) == documents[d][i]
                        for d, i in positions]  # fmt: skip

    tasks = sample_line_tasks(documents, settings.line_positions, settings.seed)
    log.info("%s: completing %d lines", language, len(tasks))
    model_lines = _complete_with_model(completer, tasks, language, settings)
    baseline_lines = [_first(complete_line(ngram, t.prefix[-settings.context_bytes :], settings.beam_size,
                                           settings.max_chars))
                      for t in tqdm(tasks, desc=f"{language}: n-gram line completion", unit="line")]  # fmt: skip
    targets = [t.target for t in tasks]

    model = {"bpc": float(model_bits.mean()), "next_char_accuracy": 100.0 * float(np.mean(model_correct))}
    baseline = {"bpc": float(baseline_bits.mean()), "next_char_accuracy": 100.0 * float(np.mean(baseline_correct))}
    model.update(line_metrics(model_lines, targets))
    baseline.update(line_metrics(baseline_lines, targets))
    ratio = {key: model[key] / baseline[key] if baseline[key] else None for key in model}  # None: baseline at 0
    counts = {"files": len(documents), "bytes": int(model_bits.size), "line_tasks": len(tasks),
              "next_char_positions": len(positions)}  # fmt: skip
    return {"model": model, "baseline": baseline, "ratio": ratio, "counts": counts}


def _complete_with_model(
    completer: CharLSTMCompleter, tasks: Sequence[LineTask], language: str, settings: CharEvalSettings, batch: int = 32
) -> list[bytes]:
    out = []
    options = CompletionOptions(k=1, beam=settings.beam_size, max_chars=settings.max_chars)
    with tqdm(total=len(tasks), desc=f"{language}: model line completion", unit="line") as bar:
        for start in range(0, len(tasks), batch):
            requests = [CompletionRequest(t.prefix, b"", language) for t in tasks[start : start + batch]]
            for candidates in completer.complete(requests, options):
                out.append(candidates[0].text if candidates else b"")
            bar.update(len(requests))
    return out


def _first(candidates: list[tuple[bytes, float]]) -> bytes:
    return candidates[0][0] if candidates else b""
