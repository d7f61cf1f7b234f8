"""N-gram completer: the byte Kneser-Ney model with a file cache, batched line completion with deadlines.

The global model (`codecomp.models.ngram.CharNGram`, one per language, fitted by `codecomp-fit-ngram`) is mixed
with a cache n-gram of the text at hand (`codecomp.models.ngram_cache`, whose docstring gives the formula):

- completing, the cache counts the current document around the cursor (up to `max_context` bytes before the
  line being typed and `max_suffix` bytes after the cursor) and the session's recent files: the texts last seen
  in up to `recent_files` other sessions of the same user and language. A session is "user\\0file\\0language"
  as the service names it; the user is its part before the first NUL (a session without one shares nothing).
  The counts of a session's document are kept while its text outside the current line is unchanged, so typing
  within a line costs no counting;
- scoring (evaluation), each byte is predicted with the cache counting the bytes before it in its file.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from codecomp.checkpoint import LoadedCheckpoint, load
from codecomp.inference.completer import Candidate, CompletionOptions, CompletionRequest
from codecomp.inference.decoding import complete_stepwise
from codecomp.inference.ngram_decoding import NGramDecoding
from codecomp.models.ngram import N_SYMBOLS, CharNGram
from codecomp.models.ngram_cache import (
    MAX_ORDER,
    CacheSettings,
    CountTable,
    Queries,
    context_keys,
    mix,
    score_document,
)
from codecomp.text.digest import digest

_DEFAULT_OPTIONS = CompletionOptions()


@dataclasses.dataclass(frozen=True)
class _Document:
    """A session's document as the cache counts it: its digest, its texts and their counts."""

    key: bytes
    texts: tuple[bytes, ...]
    table: CountTable


class NGramCompleter:
    """Line completion with a byte n-gram per language and a cache of the text at hand.

    Args:
        models: the global model of each language (all of one order).
        cache: mix in the cache (False: the global model alone, as `complete_line` computes it).
        min_order, concentration: the cache's mixing (`CacheSettings`).
        max_context: bytes before the current line that the cache counts.
        max_suffix: bytes after the cursor that the cache counts.
        sessions: sessions whose document counts are kept (least recently used dropped first).
        recent_files: other sessions of the same user and language whose texts the cache counts too.
    """

    family: ClassVar[str] = "ngram"
    task: ClassVar[str] = "line"

    def __init__(
        self,
        models: Mapping[str, CharNGram],
        cache: bool = True,
        min_order: int = 3,
        concentration: float = 4.0,
        max_context: int = 16384,
        max_suffix: int = 4096,
        sessions: int = 1024,
        recent_files: int = 4,
    ) -> None:
        orders = {model.order for model in models.values()}
        if len(orders) != 1:
            raise ValueError(f"the models must share one order, got {sorted(orders)}")
        if sessions < 1 or recent_files < 0 or max_context < 0 or max_suffix < 0:
            raise ValueError("sessions must be positive; recent_files, max_context and max_suffix not negative")
        self.models = dict(models)
        self.order = orders.pop()
        self.cache = CacheSettings(min_order, concentration) if cache else None
        self._cache_order = min(self.order, MAX_ORDER)
        if self.cache is not None and min_order > self._cache_order:
            raise ValueError(f"the cache's min_order {min_order} is above its order {self._cache_order}")
        self.max_context, self.max_suffix = max_context, max_suffix
        self.sessions, self.recent_files = sessions, recent_files
        self._documents: collections.OrderedDict[str, _Document] = collections.OrderedDict()  # LRU, newest last
        self._recent: dict[str, tuple[tuple[bytes, ...], CountTable]] = {}  # session -> its neighbours' counts

    @classmethod
    def from_checkpoint(
        cls, checkpoint: LoadedCheckpoint | str | Path, device: str | torch.device = "cpu", **settings: Any
    ) -> NGramCompleter:
        """The completer of an n-gram checkpoint (already loaded, or a path); `settings`: the constructor's
        keyword arguments. The model runs on the CPU whatever `device` says."""
        loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load(checkpoint)
        loaded.expect_family(cls.family)
        return cls(models_from_checkpoint(loaded), **settings)

    # -- completing lines --------------------------------------------------------------------------

    def complete(
        self,
        requests: Sequence[CompletionRequest],
        options: CompletionOptions = _DEFAULT_OPTIONS,
        deadlines: Sequence[float] | None = None,
    ) -> list[list[Candidate]]:
        """Top-k completions of the rest of the line at each request's cursor, best first, by beam search over
        bytes for all requests at once (every request joins one `decoding`); a request in a language without a
        model gets none.

        Args:
            deadlines: per request, a `time.monotonic()` instant; when it passes, the request's best hypotheses
                so far are its answer, the unfinished ones marked `complete=False`.
        """
        return complete_stepwise(self, requests, options, deadlines)

    def decoding(self, options: CompletionOptions = _DEFAULT_OPTIONS) -> NGramDecoding:
        """Rows decoding together, one batched lookup of every hypothesis per byte, joining and leaving between
        steps (`codecomp.inference.decoding`: what a serving container's continuous batching drives)."""
        return NGramDecoding(self, options)

    def line_scorer(self, requests: Sequence[CompletionRequest]) -> Callable[[Sequence[tuple[int, bytes]]], np.ndarray]:
        """What a beam search over these requests asks at each step: the (H, 257) next-symbol probabilities of
        hypotheses (request index, text typed after its prefix), each request's rows together. The cache's counts
        are gathered here, once (requests in a language without a model get none and must not be asked)."""
        cohort = self.cohort(requests)
        return lambda rows: self.distributions([(cohort, request, text) for request, text in rows])

    def cohort(self, requests: Sequence[CompletionRequest]) -> Cohort:
        """Requests that join a search together, with what their rows read: the prefix's last bytes and the
        cache's counts, gathered once here (a language without a model gets none)."""
        pad = self.order - 1
        tails = [r.prefix[max(len(r.prefix) - pad, 0) :] for r in requests]  # all the global model reads
        tables = [self._tables(r) if r.language in self.models and self.cache else [] for r in requests]
        return Cohort(list(requests), tails, _BatchCache.of(tables) if any(tables) else None)

    def distributions(self, rows: Sequence[tuple[Cohort, int, bytes]]) -> np.ndarray:
        """(H, 257) next-symbol probabilities of hypotheses (cohort, request index in it, text after its prefix):
        the global model's lookups for all rows at once, the cache's counts cohort by cohort."""
        probs = np.empty((len(rows), N_SYMBOLS))
        contexts = np.empty((len(rows), self.order - 1), dtype=np.int64)
        for language, model in self.models.items():
            mine = [i for i, (cohort, request, _) in enumerate(rows) if cohort.requests[request].language == language]
            if mine:
                contexts[mine] = model.contexts([rows[i][0].tails[rows[i][1]] + rows[i][2] for i in mine])
                probs[mine] = model.distributions(contexts[mine])
        if self.cache is None or all(cohort.cache is None for cohort, _, _ in rows):
            return probs
        first, last = self.cache.min_order, self._cache_order
        counts = np.zeros((last - first + 1, *probs.shape))  # (L, H, 257)
        queries = context_keys(contexts, first, last)  # all rows at once, in row order
        owner = np.fromiter((request for _, request, _ in rows), dtype=np.int64, count=len(rows))
        start = 0
        while start < len(rows):  # each run of rows of one cohort (a cohort's rows come together) against its tables
            cohort, stop = rows[start][0], start + 1
            while stop < len(rows) and rows[stop][0] is cohort:
                stop += 1
            if cohort.cache is not None:
                lo, hi = np.searchsorted(queries.rows, [start, stop])
                run = Queries(queries.rows[lo:hi] - start, queries.levels[lo:hi], queries.keys[lo:hi])
                for slots in cohort.cache.slots:  # each table of a request in turn: no (row, symbol) twice in a call
                    cohort.cache.table.add_counts(counts[:, start:stop], run.in_slots(slots[owner[start:stop]]))
            start = stop
        return mix(probs, counts, self.cache)

    # -- the cache's counts --------------------------------------------------------------------------

    def _tables(self, request: CompletionRequest) -> list[CountTable]:
        """The count tables the cache reads for a request: its document, and its session's recent files."""
        line_start = request.prefix.rfind(b"\n") + 1
        before = request.prefix[max(line_start - self.max_context, 0) : line_start]
        texts = (before, request.suffix[: self.max_suffix])
        key = digest(texts)
        if not request.session:
            return [self._count(texts)]
        document = self._documents.pop(request.session, None)
        if document is None or document.key != key:
            document = _Document(key, texts, self._count(texts))
        self._documents[request.session] = document  # the newest
        while len(self._documents) > self.sessions:
            dropped, _ = self._documents.popitem(last=False)
            self._recent.pop(dropped, None)
        recent = self._recent_table(request.session)
        return [document.table] if recent is None else [document.table, recent]

    def _recent_table(self, session: str) -> CountTable | None:
        """The counts of the texts of the user's other recent sessions in the same language, or None."""
        if self.recent_files == 0 or "\0" not in session:
            return None
        group = _group(session)
        neighbours: list[_Document] = []
        for other in reversed(self._documents):  # newest first
            if len(neighbours) == self.recent_files:
                break
            if other != session and _group(other) == group:
                neighbours.append(self._documents[other])
        if not neighbours:
            self._recent.pop(session, None)
            return None
        keys = tuple(document.key for document in neighbours)
        kept = self._recent.get(session)
        if kept is None or kept[0] != keys:
            texts = [text for document in neighbours for text in document.texts]
            kept = (keys, self._count(texts))
            self._recent[session] = kept
        return kept[1]

    def _count(self, texts: Sequence[bytes]) -> CountTable:
        assert self.cache is not None
        return CountTable.count(texts, self.cache.min_order, self._cache_order)

    # -- scoring documents (evaluation) ------------------------------------------------------------

    def score(
        self, documents: Sequence[bytes], language: str, progress: Callable[[int], object] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each document, per byte: bits to encode it given the bytes before it in the file (the cache
        counting those bytes), and whether it was the most likely symbol.

        Args:
            progress: called with the number of bytes scored after each document (a progress bar's `update`).

        Returns:
            per document: bits (len,) float64 and correct (len,) bool.
        """
        results = []
        for document in documents:
            bits, correct, _ = self.score_document(document, language)
            results.append((bits, correct))
            if progress is not None:
                progress(len(document))
        return results

    def score_document(
        self, document: bytes, language: str, keep: np.ndarray | None = None, cache: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`score` of one document, and the whole distributions (len(keep), 257) at the sorted positions `keep`;
        `cache=False`: the global model alone."""
        return score_document(self._model(language), document, self.cache if cache else None, keep)

    def _model(self, language: str) -> CharNGram:
        try:
            return self.models[language]
        except KeyError:
            raise ValueError(f"no n-gram model for {language!r}; this one has {sorted(self.models)}") from None


@dataclasses.dataclass(frozen=True)
class Cohort:
    """Requests that joined a line search together: the prefix tails the global model reads, and the count tables
    of their caches stacked into one (None: no cache)."""

    requests: list[CompletionRequest]
    tails: list[bytes]
    cache: _BatchCache | None


@dataclasses.dataclass(frozen=True)
class _BatchCache:
    """The count tables of a batch's requests stacked into one (`CountTable.stack`): `slots[j][r]` is the slot
    of request r's j-th table, -1 where it has fewer."""

    table: CountTable
    slots: list[np.ndarray]  # per table position, (R,) int64

    @classmethod
    def of(cls, tables: Sequence[Sequence[CountTable]]) -> _BatchCache:
        distinct: dict[int, int] = {}  # id(table) -> slot: a session's tables are shared by its requests
        unique: list[CountTable] = []
        slots = [np.full(len(tables), -1, dtype=np.int64) for _ in range(max(map(len, tables)))]
        for request, mine in enumerate(tables):
            for j, table in enumerate(mine):
                if id(table) not in distinct:
                    distinct[id(table)] = len(unique)
                    unique.append(table)
                slots[j][request] = distinct[id(table)]
        return cls(CountTable.stack(unique), slots)


def _group(session: str) -> str:
    """The sessions that share recent files: the same user (before the first NUL) and language (after the last)."""
    return f"{session.split(chr(0), 1)[0]}\0{session.rsplit(chr(0), 1)[-1]}"


# -- the checkpoint's contents ------------------------------------------------------------------------


def checkpoint_state(models: Mapping[str, CharNGram]) -> dict[str, torch.Tensor]:
    """The models' tables as a checkpoint's tensors, "<language>.<order>.<table>" (see `CharNGram.to_arrays`)."""
    return {f"{language}.{name}": torch.from_numpy(np.ascontiguousarray(array))
            for language, model in models.items() for name, array in model.to_arrays().items()}  # fmt: skip


def models_from_checkpoint(loaded: LoadedCheckpoint) -> dict[str, CharNGram]:
    """The model of each language of an n-gram checkpoint (`checkpoint_state`'s tensors)."""
    config = loaded.description.model_config
    models = {}
    for language in loaded.description.languages:
        prefix = f"{language}."
        arrays = {name[len(prefix) :]: t.numpy() for name, t in loaded.state.items() if name.startswith(prefix)}
        models[language] = CharNGram.from_arrays(int(config["order"]), config.get("discount"), arrays)
    return models
