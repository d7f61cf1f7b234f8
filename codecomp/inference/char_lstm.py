"""Char-LSTM completer: batched line completion by beam search, incremental state, deadlines."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from codecomp.checkpoint import LoadedCheckpoint, load
from codecomp.data.char_vocab import EOF_ID, PAD_ID, encode_document
from codecomp.inference.completer import Candidate, CompletionOptions, CompletionRequest
from codecomp.inference.prefix_states import PrefixStateCache
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig

_NEWLINE = ord("\n")
_DEFAULT_OPTIONS = CompletionOptions()


@dataclasses.dataclass(frozen=True)
class CharState:
    """The model after reading some text: LSTM state and the log-probabilities of the next symbol.

    Attributes:
        h, c: (layers, hidden) each.
        log_probs: (V,) natural-log probabilities of the next symbol.
        length: bytes read so far (the file-start symbol not counted).
    """

    h: torch.Tensor
    c: torch.Tensor
    log_probs: torch.Tensor
    length: int


class CharLSTMCompleter:
    """Line completion with a Char-LSTM.

    Args:
        model: the trained network (put in eval mode here).
        max_context: bytes of prefix read afresh; a longer prefix keeps its tail (read without the
            file start). A session's cached state further behind than this is read afresh too.
        device: where the model runs.
        sessions, per_session: the prefix-state cache: sessions kept, and states kept per session.
    """

    family: ClassVar[str] = "char_lstm"
    task: ClassVar[str] = "line"

    def __init__(
        self,
        model: CharLSTM,
        max_context: int = 4096,
        device: str | torch.device = "cpu",
        sessions: int = 1024,
        per_session: int = 8,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.max_context = max_context
        self.prefix_states: PrefixStateCache[CharState] = PrefixStateCache(sessions, per_session)

    @classmethod
    def from_checkpoint(
        cls, checkpoint: LoadedCheckpoint | str | Path, device: str | torch.device = "cpu", **settings: Any
    ) -> CharLSTMCompleter:
        """The completer of a Char-LSTM checkpoint (already loaded, or a path); `settings`: `max_context`,
        `sessions`, `per_session`."""
        loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load(checkpoint)
        loaded.expect_family(cls.family)
        model = CharLSTM(CharLSTMConfig(**loaded.description.model_config))
        model.load_state_dict(loaded.state)
        return cls(model, device=device, **settings)

    # -- reading text ------------------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, prefixes: Sequence[bytes], languages: Sequence[str]) -> list[CharState]:
        """Read many prefixes in one batched pass. A prefix within `max_context` is read from the
        file start; a longer one from its last `max_context` bytes."""
        if not prefixes:
            return []
        sequences = []
        for prefix, language in zip(prefixes, languages, strict=True):
            if len(prefix) <= self.max_context:
                sequences.append(torch.from_numpy(encode_document(prefix, language)[:-1]))  # no end of file
            else:
                sequences.append(torch.frombuffer(bytearray(prefix[-self.max_context :]), dtype=torch.uint8).long())
        tokens = pad_sequence(sequences, batch_first=True, padding_value=PAD_ID).to(self.device)  # (B, T)
        log_probs, (h, c) = self.model.encode(tokens, torch.tensor([len(s) for s in sequences]))
        return [CharState(h[:, i], c[:, i], log_probs[i], len(p)) for i, p in enumerate(prefixes)]

    @torch.inference_mode()
    def advance(self, state: CharState, text: bytes) -> CharState:
        """The state after also reading `text`: costs len(text) steps, not the whole prefix."""
        return self.advance_many([state], [text])[0]

    @torch.inference_mode()
    def advance_many(self, states: Sequence[CharState], texts: Sequence[bytes]) -> list[CharState]:
        """`advance` for many states at once, in one batched pass over the longest text."""
        rows = [i for i, text in enumerate(texts) if text]
        advanced = list(states)
        if not rows:
            return advanced
        sequences = [torch.frombuffer(bytearray(texts[i]), dtype=torch.uint8).long() for i in rows]
        tokens = pad_sequence(sequences, batch_first=True, padding_value=PAD_ID).to(self.device)  # (B, T)
        start = (torch.stack([states[i].h for i in rows], 1), torch.stack([states[i].c for i in rows], 1))
        log_probs, (h, c) = self.model.encode(tokens, torch.tensor([len(s) for s in sequences]), start)
        for j, i in enumerate(rows):  # (layers, B, H) each, in the order of `rows`
            advanced[i] = CharState(h[:, j], c[:, j], log_probs[j], states[i].length + len(texts[i]))
        return advanced

    @torch.inference_mode()
    def read(self, requests: Sequence[CompletionRequest]) -> list[CharState]:
        """Each request's prefix read. A request with a session resumes from the state of the longest
        prefix its session read lately (one more keystroke: one more byte), and that session keeps
        the new state; the others are read afresh, all in batched passes."""
        resumed = [
            self.prefix_states.lookup(r.session, r.prefix, self.max_context) if r.session else None for r in requests
        ]
        fresh = [i for i, hit in enumerate(resumed) if hit is None]
        warm = [(i, hit) for i, hit in enumerate(resumed) if hit is not None]
        states: list[CharState | None] = [None] * len(requests)
        encoded = self.encode([requests[i].prefix for i in fresh], [requests[i].language for i in fresh])
        for i, state in zip(fresh, encoded, strict=True):
            states[i] = state
        advanced = self.advance_many([hit[0] for _, hit in warm], [hit[1] for _, hit in warm])
        for (i, _), state in zip(warm, advanced, strict=True):
            states[i] = state
        done = [state for state in states if state is not None]  # every one, now
        for request, state in zip(requests, done, strict=True):
            if request.session:
                self.prefix_states.store(request.session, request.prefix, state)
        return done

    # -- completing lines --------------------------------------------------------------------------

    def complete(
        self,
        requests: Sequence[CompletionRequest],
        options: CompletionOptions = _DEFAULT_OPTIONS,
        deadlines: Sequence[float] | None = None,
    ) -> list[list[Candidate]]:
        """Top-k completions of the rest of the line at each request's cursor, best first (the
        suffix is not read). See `decode`; `read` says how prefixes are read."""
        if not requests:
            return []
        return self.decode(self.read(requests), options, deadlines)

    @torch.inference_mode()
    def decode(
        self,
        states: Sequence[CharState],
        options: CompletionOptions = _DEFAULT_OPTIONS,
        deadlines: Sequence[float] | None = None,
    ) -> list[list[Candidate]]:
        """Beam search from prefixes already read (`encode`, `advance`, `read`), best first.

        All requests' beams advance together, one batched forward pass per byte. A completion ends
        at a newline or the end of file (neither is part of its text) or after `options.max_chars`.

        Args:
            deadlines: per request, a `time.monotonic()` instant; when a request's passes, its best
                hypotheses so far are its answer, unfinished ones marked `complete=False` (anytime
                decoding), and the others decode on without it.
        """
        if not states:
            return []
        if deadlines is not None and len(deadlines) != len(states):
            raise ValueError(f"{len(deadlines)} deadlines for {len(states)} requests")
        beams = _Beams(states, options.beam, options.k)
        until = None if deadlines is None else torch.tensor(list(deadlines), dtype=torch.float64)
        for _ in range(options.max_chars):
            if until is not None:
                beams.retire(until[beams.request] <= time.monotonic())
            if not beams.active:
                break
            tokens = beams.step()
            beams.log_probs, beams.state = self.model.step(tokens, beams.state)
        return beams.results()

    # -- scoring documents (evaluation) ------------------------------------------------------------

    @torch.inference_mode()
    def score(
        self,
        documents: Sequence[bytes],
        language: str,
        batch_size: int = 16,
        chunk: int = 1024,
        piece_bytes: int = 32768,
        progress: Callable[[int], object] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each document, per byte: bits to encode it given the bytes before it in the file, and whether it
        was the most likely symbol.

        Documents are cut into pieces of at most `piece_bytes`, sorted by length and read in batches of
        `batch_size`, `chunk` steps at a time; so a batch holds pieces of about one length and a long file
        does not pad a batch to its own length: time grows with the total bytes. A piece after a file's first
        reads the `max_context` bytes before it first (unscored), as a served prefix longer than `max_context`
        is read; a file's first piece (all of a file up to `piece_bytes`) is scored from the file start.

        Args:
            documents: whole files; `language` their language.
            progress: called with the number of bytes scored after each batch (a progress bar's `update`).

        Returns:
            per document: bits (len,) float32 and correct (len,) bool.
        """
        results = [(np.zeros(len(d), dtype=np.float32), np.zeros(len(d), dtype=bool)) for d in documents]
        pieces = sorted(_pieces(documents, language, piece_bytes, self.max_context), key=lambda p: len(p.tokens))
        for start in range(0, len(pieces), batch_size):
            batch = pieces[start : start + batch_size]
            tokens = pad_sequence([p.tokens for p in batch], batch_first=True, padding_value=PAD_ID)  # (B, L+1)
            tokens = tokens.to(self.device)
            bits, correct = [], []
            state = None
            for offset in range(0, tokens.shape[1] - 1, chunk):
                inputs = tokens[:, offset : offset + chunk]
                targets = tokens[:, offset + 1 : offset + chunk + 1]
                logits, state = self.model(inputs[:, : targets.shape[1]], state)
                log_probs = torch.log_softmax(logits.float(), dim=-1)  # (B, chunk, V)
                bits.append(-log_probs.gather(-1, targets[..., None])[..., 0] / math.log(2))
                correct.append(log_probs.argmax(-1) == targets)
            all_bits, all_correct = torch.cat(bits, 1).cpu().numpy(), torch.cat(correct, 1).cpu().numpy()
            for row, piece in enumerate(batch):
                scored = slice(piece.skip, len(piece.tokens) - 1)  # the targets of the piece's own bytes
                end = piece.start + scored.stop - scored.start
                results[piece.document][0][piece.start : end] = all_bits[row, scored]
                results[piece.document][1][piece.start : end] = all_correct[row, scored]
            if progress is not None:
                progress(sum(len(p.tokens) - 1 - p.skip for p in batch))
        return results


@dataclasses.dataclass(frozen=True)
class _Piece:
    """Bytes [start, start + scored) of a document to score: `tokens` are read, each predicting the next; the
    first `skip` predictions are context only."""

    document: int
    start: int
    tokens: torch.Tensor  # (L + 1,) int64
    skip: int


def _pieces(documents: Sequence[bytes], language: str, piece_bytes: int, context: int) -> list[_Piece]:
    """Every document cut into pieces of at most `piece_bytes`; a piece whose `context` bytes before it reach back
    to the file start reads from the file start symbol, the others read those `context` bytes first."""
    pieces, context = [], max(1, context)  # a piece not at the file start reads one byte at least
    for index, document in enumerate(documents):
        for start in range(0, len(document), max(1, piece_bytes)):
            end = min(start + piece_bytes, len(document))
            if start <= context:  # from the file start: predicts byte j from symbol j (file start, bytes)
                tokens = torch.from_numpy(encode_document(document[:end], language)[:-1])
                pieces.append(_Piece(index, start, tokens, start))
            else:  # from `context` bytes back: predicts byte j from byte j - 1
                tokens = torch.frombuffer(bytearray(document[start - context : end]), dtype=torch.uint8).long()
                pieces.append(_Piece(index, start, tokens, context - 1))
    return pieces


class _Beams:
    """Beam search for many requests at once, in tensors: each live request owns `beam_size` rows of
    the LSTM state, and a request leaves the batch as soon as its top k can no longer change."""

    def __init__(self, states: Sequence[CharState], beam_size: int, k: int) -> None:
        self.width, self.k = beam_size, k
        n, device = len(states), states[0].log_probs.device
        self.request = torch.arange(n)  # (A,) the live requests
        # Row 0 of each request holds its state; the others start at -inf, so step one expands row 0 only.
        self.scores = torch.full((n, beam_size), -math.inf)
        self.scores[:, 0] = 0.0
        repeat = lambda t: t.repeat_interleave(beam_size, dim=-2)  # noqa: E731
        self.state = (repeat(torch.stack([s.h for s in states], 1)), repeat(torch.stack([s.c for s in states], 1)))
        self.log_probs = repeat(torch.stack([s.log_probs for s in states]))  # (A * W, V)
        self.history = torch.zeros(n, beam_size, 0, dtype=torch.uint8)  # (A, W, T) bytes chosen so far
        self.finished: list[list[Candidate]] = [[] for _ in states]
        self.kth_best = torch.full((n,), -math.inf)  # per request: the k-th best finished score
        self.device = device

    @property
    def active(self) -> bool:
        return len(self.request) > 0

    def step(self) -> torch.Tensor:
        """Extend every live request's hypotheses by one byte; returns the bytes to feed, (A' * W,)."""
        n_live, width, symbols = len(self.request), self.width, EOF_ID + 1
        log_probs = self.log_probs[:, :symbols].float().cpu().view(n_live, width, symbols)
        total = (self.scores[:, :, None] + log_probs).view(n_live, width * symbols)  # (A, W * 257)
        values, index = total.topk(min(2 * width, width * symbols), dim=1)  # enough to keep W that go on
        parent, symbol = index // symbols, index % symbols
        ends = ((symbol == _NEWLINE) | (symbol == EOF_ID)) & (values > -math.inf)
        for row, column in ends.nonzero().tolist():
            request = int(self.request[row])
            text = bytes(self.history[row, parent[row, column]].tolist())
            self.finished[request].append(Candidate(text, float(values[row, column]), True))
            scores = sorted((c.log_prob for c in self.finished[request]), reverse=True)
            if len(scores) >= self.k:
                self.kth_best[request] = scores[self.k - 1]
        kept_values, kept = values.masked_fill(ends, -math.inf).topk(width, dim=1)  # (A, W)
        kept_parent, kept_symbol = parent.gather(1, kept), symbol.gather(1, kept)
        # Scores only fall as text grows: once k finished lines beat every live one, the request is done.
        live = kept_values.max(dim=1).values > self.kth_best[self.request]
        rows = (torch.arange(n_live)[:, None] * width + kept_parent)[live].flatten()  # parents' rows, (A' * W,)
        length = self.history.shape[2]
        parents_history = self.history.reshape(n_live * width, length)[rows].view(len(rows) // width, width, length)
        self.history = torch.cat([parents_history, kept_symbol[live].to(torch.uint8)[:, :, None]], dim=2)
        self.request, self.scores = self.request[live], kept_values[live]
        rows = rows.to(self.device)
        self.state = (self.state[0][:, rows], self.state[1][:, rows])
        return kept_symbol[live].flatten().to(self.device)

    def retire(self, done: torch.Tensor) -> None:
        """Stop the live requests marked in `done` (A,): their unfinished hypotheses join their answers."""
        if not bool(done.any()):
            return
        self._keep_unfinished(done.nonzero()[:, 0].tolist())
        keep = ~done
        rows = (torch.arange(len(done))[:, None] * self.width + torch.arange(self.width))[keep].flatten()
        self.request, self.scores, self.history = self.request[keep], self.scores[keep], self.history[keep]
        rows = rows.to(self.device)
        self.state = (self.state[0][:, rows], self.state[1][:, rows])
        self.log_probs = self.log_probs[rows]

    def _keep_unfinished(self, live_rows: list[int]) -> None:
        for row in live_rows:
            request = int(self.request[row])
            for column in range(self.width):
                if self.scores[row, column] > -math.inf:
                    text = bytes(self.history[row, column].tolist())
                    self.finished[request].append(Candidate(text, float(self.scores[row, column]), False))

    def results(self) -> list[list[Candidate]]:
        self._keep_unfinished(list(range(len(self.request))))  # cut short by max_chars
        ranked = []
        for candidates in self.finished:
            seen: set[bytes] = set()
            best = []
            for candidate in sorted(candidates, key=lambda c: -c.log_prob):
                if candidate.text not in seen:
                    seen.add(candidate.text)
                    best.append(candidate)
            ranked.append(best[: self.k])
        return ranked
