"""The Char-LSTM mixed with the cache n-gram, scored beside each alone (Hellendoorn & Devanbu, FSE 2017).

Per byte, the two models' next-symbol distributions are interpolated linearly:

    P(b | before) = w * P_lstm(b | before) + (1 - w) * P_cache_ngram(b | before)

with one weight w per language, fitted by EM (the maximum-likelihood weight) on the per-byte probabilities of a
seeded sample of files of the valid split. On the scored split each system gets bits per character and
next-character accuracy on the same files and positions: the Char-LSTM, the n-gram alone (its global model,
cache off), the cache n-gram, and the mixture; and the last three complete the same lines as `char_eval` samples
(the Char-LSTM's line completion is in the main results). The mixture completes lines by the n-gram completer's
beam search (`LineBeams`) over the mixed distributions, each hypothesis's LSTM state its parent's advanced by one
byte.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from codecomp.data.char_vocab import EOF_ID, PAD_ID, encode_document
from codecomp.data.shards import TextShard
from codecomp.evaluation.line_completion import line_metrics, sample_line_tasks, sample_positions
from codecomp.inference.char_lstm import CharLSTMCompleter
from codecomp.inference.completer import Candidate, CompletionOptions, CompletionRequest
from codecomp.inference.line_beams import LineBeams
from codecomp.inference.ngram import NGramCompleter
from codecomp.models.ngram import N_SYMBOLS

log = logging.getLogger(__name__)

SYSTEMS = ("char_lstm", "ngram", "cache_ngram", "mixture")
LINE_METRICS = ("exact_match", "edit_similarity", "chars_saved")


@dataclasses.dataclass(frozen=True)
class MixtureSettings:
    """Attributes:
    fit_documents: valid files sampled to fit the weight (None: all).
    next_char_positions: positions sampled for next-character accuracy, per language.
    line_positions, beam_size, max_chars: line completion, as `codecomp.evaluation.char_eval` samples and runs it.
    max_documents: files of the scored split sampled (None: all).
    seed: the samples' seed.
    """

    fit_documents: int | None = 40
    next_char_positions: int = 20000
    line_positions: int = 200
    beam_size: int = 4
    max_chars: int = 80
    max_documents: int | None = None
    seed: int = 0


def fit_weight(p_lstm: np.ndarray, p_ngram: np.ndarray, iterations: int = 500, tolerance: float = 1e-10) -> float:
    """The weight w in (0, 1) of the first model that maximises the likelihood of w * p_lstm + (1 - w) * p_ngram,
    by EM: w <- the mean over bytes of the first model's share of the mixed probability.

    Args:
        p_lstm, p_ngram: (N,) each model's probability of each byte, all positive.
    """
    if len(p_lstm) != len(p_ngram) or not len(p_lstm):
        raise ValueError(f"need as many probabilities of each model, at least one: {len(p_lstm)}, {len(p_ngram)}")
    weight = 0.5
    for _ in range(iterations):
        mine = weight * p_lstm
        updated = float(np.mean(mine / (mine + (1.0 - weight) * p_ngram)))
        if abs(updated - weight) < tolerance:
            return updated
        weight = updated
    return weight


def evaluate_mixture(
    lstm: CharLSTMCompleter,
    ngram: NGramCompleter,
    corpus: Path,
    split: str,
    fit_corpus: Path,
    language: str,
    settings: MixtureSettings,
) -> dict[str, Any]:
    """Fit the weight on `fit_corpus`'s valid split, then score the four systems on `corpus`'s `split`."""
    fit_docs = sample_documents(TextShard(fit_corpus / "valid" / language), settings.fit_documents, settings.seed)
    log.info("%s: fitting the mixture weight on %d valid files", language, len(fit_docs))
    fit_lstm, _ = lstm_scores(lstm, fit_docs, language, desc=f"{language}: mixture fit, Char-LSTM")
    fit_ngram = np.concatenate([ngram.score_document(d, language)[0] for d in fit_docs])
    weight = fit_weight(2.0 ** -np.concatenate(fit_lstm), 2.0**-fit_ngram)

    documents = sample_documents(TextShard(corpus / split / language), settings.max_documents, settings.seed)
    positions = sample_positions(documents, settings.next_char_positions, settings.seed)
    at = np.array(positions, dtype=np.int64).reshape(-1, 2)  # (P, 2): document, position; sorted
    keep = [at[at[:, 0] == doc, 1] for doc in range(len(documents))]
    lstm_bits, lstm_kept = lstm_scores(lstm, documents, language, keep, desc=f"{language}: mixture, Char-LSTM")
    bits: dict[str, list[np.ndarray]] = {system: [] for system in SYSTEMS}
    correct: dict[str, list[np.ndarray]] = {system: [] for system in SYSTEMS}
    for doc, document in enumerate(tqdm(documents, desc=f"{language}: mixture, n-grams", unit="file")):
        targets = np.frombuffer(document, dtype=np.uint8)[keep[doc]]
        cached_bits, _, cached = ngram.score_document(document, language, keep[doc])
        plain_bits, _, plain_kept = ngram.score_document(document, language, keep[doc], cache=False)
        mixed = weight * lstm_kept[doc] + (1.0 - weight) * cached  # (P, 257)
        p_mix = weight * 2.0 ** -lstm_bits[doc] + (1.0 - weight) * 2.0**-cached_bits
        for system, system_bits, dist in (("char_lstm", lstm_bits[doc], lstm_kept[doc]),
                                          ("ngram", plain_bits, plain_kept), ("cache_ngram", cached_bits, cached),
                                          ("mixture", -np.log2(p_mix), mixed)):  # fmt: skip
            bits[system].append(system_bits)
            correct[system].append(dist.argmax(axis=1) == targets)
    systems = {
        system: {"bpc": float(np.concatenate(bits[system]).mean()),
                 "next_char_accuracy": 100.0 * float(np.concatenate(correct[system]).mean())}
        for system in SYSTEMS
    }  # fmt: skip
    tasks = sample_line_tasks(documents, settings.line_positions, settings.seed)
    options = CompletionOptions(k=1, beam=settings.beam_size, max_chars=settings.max_chars)
    plain_ngram = NGramCompleter(ngram.models, cache=False)
    for system, complete in (("ngram", plain_ngram.complete), ("cache_ngram", ngram.complete),
                             ("mixture", partial(complete_mixture, lstm, ngram, weight=weight))):  # fmt: skip
        lines = []
        for start in tqdm(range(0, len(tasks), 32), desc=f"{language}: mixture, {system} lines", unit="batch"):
            requests = [CompletionRequest(t.prefix, b"", language) for t in tasks[start : start + 32]]
            lines += [candidates[0].text if candidates else b"" for candidates in complete(requests, options)]
        systems[system].update(line_metrics(lines, [t.target for t in tasks]))
    baseline = systems["ngram"]["bpc"]
    return {
        "weight": weight,
        "fit": {"corpus": str(fit_corpus), "split": "valid", "files": len(fit_docs), "bytes": len(fit_ngram)},
        "systems": systems,
        "bpc_ratio_to_ngram": {system: scores["bpc"] / baseline for system, scores in systems.items()},
        "counts": {
            "files": len(documents),
            "bytes": int(sum(map(len, documents))),
            "next_char_positions": len(positions),
            "line_tasks": len(tasks),
        },
    }


@torch.inference_mode()
def complete_mixture(
    lstm: CharLSTMCompleter,
    ngram: NGramCompleter,
    requests: Sequence[CompletionRequest],
    options: CompletionOptions,
    weight: float,
) -> list[list[Candidate]]:
    """Line completion with the mixture w * P_lstm + (1 - w) * P_cache_ngram: the n-gram completer's beam search
    over bytes, each hypothesis's LSTM state its parent's advanced by the hypothesis's last byte (no deadlines).

    Returns:
        per request, up to `options.k` candidates, best first.
    """
    states = lstm.read(requests)
    scorer = ngram.line_scorer(requests)
    beams = LineBeams(len(requests), options.beam, options.k)
    # (request, text) -> (h, c, log-probabilities of the next symbol) after reading the prefix and the text
    known = {(r, b""): (state.h, state.c, state.log_probs) for r, state in enumerate(states)}
    for _ in range(options.max_chars):
        rows = beams.hypotheses()
        if not rows:
            break
        fresh = [row for row in rows if row not in known]  # one byte past a hypothesis of the last step
        if fresh:
            parents = [known[(request, text[:-1])] for request, text in fresh]
            tokens = torch.tensor([text[-1] for _, text in fresh], device=lstm.device)
            start = (torch.stack([p[0] for p in parents], 1), torch.stack([p[1] for p in parents], 1))
            log_probs, (h, c) = lstm.model.step(tokens, start)  # (N, V), (layers, N, H) each
            for j, row in enumerate(fresh):
                known[row] = (h[:, j], c[:, j], log_probs[j])
        known = {row: known[row] for row in rows}  # the next step extends only these
        p_lstm = torch.stack([known[row][2] for row in rows])[:, : EOF_ID + 1].double().exp().cpu().numpy()
        beams.advance(np.log(weight * p_lstm + (1.0 - weight) * scorer(rows)))
    return beams.results()


@torch.inference_mode()
def lstm_scores(
    completer: CharLSTMCompleter,
    documents: Sequence[bytes],
    language: str,
    keep: Sequence[np.ndarray] | None = None,
    batch_size: int = 16,
    chunk: int = 1024,
    desc: str = "Char-LSTM",
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each document read by the Char-LSTM from its file start, as `CharLSTMCompleter.score` reads it (batches
    of files of about one length, `chunk` steps at a time), keeping also whole distributions at some positions.

    Args:
        keep: per document, sorted positions whose next-symbol distributions to keep.

    Returns:
        per document: bits (len,) float64 of each byte given the bytes before it; and the distributions over
        bytes and EOF at the `keep` positions, (len(keep[d]), 257) float64.
    """
    keep = keep if keep is not None else [np.zeros(0, dtype=np.int64)] * len(documents)
    bits = [np.zeros(len(document)) for document in documents]
    kept = [np.zeros((len(want), N_SYMBOLS)) for want in keep]
    order = sorted(range(len(documents)), key=lambda i: len(documents[i]))
    with tqdm(total=sum(map(len, documents)), desc=desc, unit="B", unit_scale=True) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            sequences = [torch.from_numpy(encode_document(documents[i], language)[:-1]) for i in batch]
            tokens = pad_sequence(sequences, batch_first=True, padding_value=PAD_ID).to(completer.device)  # (B, L+1)
            state = None
            for offset in range(0, tokens.shape[1] - 1, chunk):
                inputs, targets = tokens[:, offset : offset + chunk], tokens[:, offset + 1 : offset + chunk + 1]
                logits, state = completer.model(inputs[:, : targets.shape[1]], state)
                log_probs = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
                chunk_bits = (-log_probs.gather(-1, targets[..., None])[..., 0] / math.log(2)).cpu().numpy()  # (B, T)
                for row, index in enumerate(batch):
                    stop = min(offset + targets.shape[1], len(documents[index]))
                    if stop <= offset:
                        continue  # this file ended in an earlier chunk
                    bits[index][offset:stop] = chunk_bits[row, : stop - offset]
                    inside = (keep[index] >= offset) & (keep[index] < stop)
                    at = torch.from_numpy(keep[index][inside] - offset).to(log_probs.device)
                    kept[index][inside] = log_probs[row, at, : EOF_ID + 1].double().exp().cpu().numpy()
            bar.update(sum(len(documents[i]) for i in batch))
    return bits, kept


def sample_documents(shard: TextShard, count: int | None, seed: int) -> list[bytes]:
    """A seeded sample of `count` files of a shard, in shard order (all of them when None or more)."""
    chosen: Sequence[int] = range(len(shard))
    if count is not None and count < len(shard):
        chosen = sorted(np.random.default_rng(seed).choice(len(shard), size=count, replace=False).tolist())
    return [shard.document(i) for i in chosen]


def print_mixture(report: dict[str, Any], console: Console) -> None:
    """The mixture's table, where the report has one (a Char-LSTM evaluated with `mixture.ngram_ckpt_path`)."""
    results = {language: result["mixture"] for language, result in report["languages"].items() if "mixture" in result}
    if not results:
        return
    table = Table(title="Char-LSTM + cache n-gram, per-byte mixture (weight fitted on the valid split)")
    for column in ("language", "system", "bpc", "bpc / n-gram", "next char %", "exact %", "edit sim.", "saved %"):
        table.add_column(column, justify="left" if column in ("language", "system") else "right")
    for language, mixture in results.items():
        for system, scores in mixture["systems"].items():
            name = f"mixture (w={mixture['weight']:.3f})" if system == "mixture" else system
            lines = [f"{scores[key]:.1f}" if key in scores else "above" for key in LINE_METRICS]
            table.add_row(language, name, f"{scores['bpc']:.3f}", f"{mixture['bpc_ratio_to_ngram'][system]:.3f}",
                          f"{scores['next_char_accuracy']:.1f}", *lines)  # fmt: skip
    console.print(table)
