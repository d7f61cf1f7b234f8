"""Which corpora an evaluation reads: the split it scores, and the train split its baselines are fitted on.

A model is scored on any built corpus and split (a test-only corpus too), but its baselines must learn from
what the model learnt from: the train split of the corpus it was trained on. Checkpoints record that corpus
(`codecomp.checkpoint.Description.corpus`); `fit_corpus` names another; a checkpoint written before the
corpus was recorded falls back to the corpus scored, and says so.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

ShardKind = Literal["text", "trees"]
# The file that says a shard of each kind is there (see codecomp.data.shards).
_SHARD_MARKER: dict[ShardKind, str] = {"text": "files.json", "trees": "trees/meta.json"}


class CorpusError(FileNotFoundError):
    """A corpus, split or language shard that an evaluation needs is not there."""


@dataclasses.dataclass(frozen=True)
class EvalCorpora:
    """Attributes:
    scored: the corpus folder whose `split` is scored.
    split: the split scored.
    fitted: the corpus folder whose train split the baselines are fitted on.
    fitted_from: why that one: "fit_corpus", "checkpoint" or "scored corpus".
    languages: the languages scored (those of the request that the scored split has).
    """

    scored: Path
    split: str
    fitted: Path
    fitted_from: str
    languages: tuple[str, ...]

    def summary(self) -> dict[str, Any]:
        """What a report says of them (the languages are its results' keys)."""
        return {"corpus": str(self.scored), "split": self.split, "fit_corpus": str(self.fitted),
                "fit_corpus_from": self.fitted_from}  # fmt: skip


def has_shard(corpus: Path, split: str, language: str, kind: ShardKind) -> bool:
    return (corpus / split / language / _SHARD_MARKER[kind]).is_file()


def resolve_corpora(
    scored: str | Path,
    split: str,
    languages: Sequence[str],
    fit_corpus: str | Path | None,
    recorded: Mapping[str, str] | None,
    kind: ShardKind,
    checkpoint: str | Path = "the checkpoint",
) -> EvalCorpora:
    """The corpora of one evaluation, checked before any work starts.

    Args:
        scored: the corpus folder to score; `split` its split.
        languages: the languages asked for; those the scored split lacks are left out (with a warning).
        fit_corpus: the corpus folder to fit baselines on, or None for the one the checkpoint records.
        recorded: the checkpoint's `corpus` entry ({"name", "path"}), None when it has none.
        kind: the shards the evaluation reads, "text" (Char-LSTM) or "trees" (Tree-LSTM).
        checkpoint: named in messages.

    Raises:
        CorpusError: the scored split has none of the languages, or the fitted corpus lacks a train shard of
            one of them; the message says which folder and how to build or name another.
    """
    scored = Path(scored)
    if not (scored / split).is_dir():
        raise CorpusError(f"no split {split!r} in corpus {scored} (no folder {scored / split}): build it with "
                          f"`codecomp-data recipe=<name>`, or choose corpus=... split=...")  # fmt: skip
    present = tuple(language for language in languages if has_shard(scored, split, language, kind))
    missing = [language for language in languages if language not in present]
    if not present:
        raise CorpusError(f"{scored / split} has no {kind} shard of {list(languages)}")
    if missing:
        log.warning("%s has no %s shard of %s: scoring %s only", scored / split, kind, missing, list(present))
    if fit_corpus is not None:
        fitted, because = Path(fit_corpus), "fit_corpus"
    elif recorded is not None and recorded.get("path"):
        fitted, because = Path(recorded["path"]), "checkpoint"
    else:
        fitted, because = scored, "scored corpus"
        log.warning("%s does not record the corpus it was trained on (written before codecomp recorded it): the "
                    "baselines fit on the train split of %s, the corpus scored; name the training corpus with "
                    "fit_corpus=PATH if it is another", checkpoint, scored)  # fmt: skip
    for language in present:
        if not has_shard(fitted, "train", language, kind):
            hint = {"fit_corpus": "the fit_corpus given", "checkpoint": f"the corpus {checkpoint} was trained on",
                    "scored corpus": "the corpus scored"}[because]  # fmt: skip
            raise CorpusError(
                f"the baselines fit on the train split of {fitted} ({hint}), which has no {language} {kind} shard "
                f"(no {fitted / 'train' / language / _SHARD_MARKER[kind]}): build that corpus "
                f"(`codecomp-data recipe={fitted.name}`), or name another with fit_corpus=PATH"
            )
    log.info("scoring %s [%s] %s; baselines fit on %s/train (from the %s)", scored, split, list(present), fitted,
             because)  # fmt: skip
    return EvalCorpora(scored, split, fitted, because, present)
