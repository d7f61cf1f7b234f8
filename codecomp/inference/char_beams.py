"""The Char-LSTM's beam search over bytes for many rows at once, in tensors, rows joining and leaving between steps.

Each row (one request) owns `beam` rows of the LSTM state; a step extends every live hypothesis of every row with
one byte in one batched `CharLSTM.step`. Rows join between steps with the state after their prefix (continuous
batching) and leave as soon as their top k can no longer change, at their deadline, or after `max_chars` bytes.
A row whose session read all but the last few bytes of its prefix lately (one more keystroke) reads them in the
first steps, in the batch with the others' decoding, instead of in a call of its own when it joins (Orca's
selective batching of a prompt with others' decoding): a call of its own costs about what 4 steps of one row do.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from codecomp.data.char_vocab import EOF_ID
from codecomp.inference.completer import Candidate, CompletionOptions, CompletionRequest
from codecomp.inference.decoding import top_k

if TYPE_CHECKING:
    from codecomp.inference.char_lstm import CharLSTMCompleter

_NEWLINE = ord("\n")
_SYMBOLS = EOF_ID + 1  # bytes and the end of file: what a line may be extended or ended with
_FOLD_BYTES = 4  # bytes a joining row may have left to read: it reads them in the decoding's steps


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


class CharDecoding:
    """Rows decoding together under one set of options (`codecomp.inference.decoding.LineDecoding`).

    Per live row, aligned on the first dimension: `ids` (A,), `until` (A,) deadlines, `scores` (A, W) of its
    hypotheses (-inf: none), `history` (A, W, max_chars) their bytes, `steps` (A,) bytes decoded, `kth_best` (A,)
    the k-th best finished score, `unread` (A, 4) bytes of its prefix still to read, `unread_len` (A,) how many,
    `read_at` (A,) how many it has read; the LSTM `state` (layers, A * W, H) each and next-symbol `log_probs`
    (A * W, V). A row reading its prefix's last bytes keeps all its W state rows alike and decodes nothing yet.
    """

    def __init__(self, completer: CharLSTMCompleter, options: CompletionOptions) -> None:
        self.completer = completer
        self.width, self.k, self.max_chars = options.beam, options.k, options.max_chars
        model, self.device = completer.model, completer.device
        with torch.inference_mode():
            self.ids = torch.zeros(0, dtype=torch.long)
            self.until = torch.zeros(0, dtype=torch.float64)
            self.scores = torch.zeros(0, self.width)
            self.history = torch.zeros(0, self.width, self.max_chars, dtype=torch.uint8)
            self.steps = torch.zeros(0, dtype=torch.long)
            self.kth_best = torch.zeros(0)
            self.unread = torch.zeros(0, _FOLD_BYTES, dtype=torch.long)
            self.unread_len = torch.zeros(0, dtype=torch.long)
            self.read_at = torch.zeros(0, dtype=torch.long)
            self.state = model.zero_state(0, self.device)
            self.log_probs = torch.zeros(0, model.config.vocab_size, device=self.device)
        self._next_id = itertools.count()
        self._candidates: dict[int, list[Candidate]] = {}  # per row: its finished (and cut) lines so far
        self._done: list[tuple[int, list[Candidate]]] = []
        self._readers: dict[int, tuple[str, bytes, int]] = {}  # row reading its last bytes: session, prefix, length
        # Kept in Python so that a step spends no tensor operation on what rarely happens.
        self._soonest = math.inf  # the earliest deadline of a live row
        self._reading = 0  # live rows still reading their prefix's last bytes

    @property
    def live(self) -> int:
        return len(self.ids)

    def add(self, requests: Sequence[CompletionRequest], deadlines: Sequence[float]) -> list[int]:
        """Read the requests' prefixes (`CharLSTMCompleter.resume`: but for up to 4 last bytes of a session's, read
        in the first steps) and let them join at the next step."""
        if not requests:
            return []
        started = self.completer.resume(requests, unread=_FOLD_BYTES)
        ids = self.add_states([state for state, _ in started], deadlines, [rest for _, rest in started])
        for row, request, (state, rest) in zip(ids, requests, started, strict=True):
            if rest and request.session:  # its session keeps the state once the rest is read
                self._readers[row] = (request.session, request.prefix, state.length + len(rest))
        return ids

    @torch.inference_mode()
    def add_states(
        self, states: Sequence[CharState], deadlines: Sequence[float], unread: Sequence[bytes] | None = None
    ) -> list[int]:
        """Let rows join from prefixes read but for `unread` (up to 4 bytes each, none by default); returns their
        ids."""
        if len(states) != len(deadlines) or (unread is not None and len(unread) != len(states)):
            raise ValueError(f"{len(deadlines)} deadlines for {len(states)} requests")
        if not states:
            return []
        n, width = len(states), self.width
        ids = [next(self._next_id) for _ in states]
        for i in ids:
            self._candidates[i] = []
        scores = torch.full((n, width), -math.inf)
        scores[:, 0] = 0.0  # row 0 holds the prefix's state; the others are empty, so step one expands row 0 only
        self.ids = torch.cat([self.ids, torch.tensor(ids)])
        self.until = torch.cat([self.until, torch.tensor(list(deadlines), dtype=torch.float64)])
        self.scores = torch.cat([self.scores, scores])
        self.history = torch.cat([self.history, torch.zeros(n, width, self.max_chars, dtype=torch.uint8)])
        self.steps = torch.cat([self.steps, torch.zeros(n, dtype=torch.long)])
        self.kth_best = torch.cat([self.kth_best, torch.full((n,), -math.inf)])
        rests = [b""] * n if unread is None else unread
        if max(map(len, rests)) > _FOLD_BYTES:
            raise ValueError(f"at most {_FOLD_BYTES} bytes left to read, got {max(map(len, rests))}")
        self.unread = torch.cat([self.unread, torch.tensor([list(rest.ljust(_FOLD_BYTES, b"\0")) for rest in rests])])
        self.unread_len = torch.cat([self.unread_len, torch.tensor([len(rest) for rest in rests], dtype=torch.long)])
        self.read_at = torch.cat([self.read_at, torch.zeros(n, dtype=torch.long)])
        self._soonest, self._reading = min(self._soonest, *deadlines), self._reading + sum(map(bool, rests))
        h = torch.stack([s.h for s in states], 1).repeat_interleave(width, dim=1)  # (layers, n * W, H)
        c = torch.stack([s.c for s in states], 1).repeat_interleave(width, dim=1)
        self.state = (torch.cat([self.state[0], h], 1), torch.cat([self.state[1], c], 1))
        log_probs = torch.stack([s.log_probs for s in states]).repeat_interleave(width, dim=0)  # (n * W, V)
        self.log_probs = torch.cat([self.log_probs, log_probs])
        return ids

    @torch.inference_mode()
    def step(self) -> None:
        if self._soonest <= time.monotonic():
            kept_hypotheses = self._leave(self.until <= time.monotonic(), cut=True)
            if kept_hypotheses is not None:
                self.log_probs = self.log_probs[kept_hypotheses]
        n_live, width = len(self.ids), self.width
        if n_live == 0:
            return
        log_probs = self.log_probs[:, :_SYMBOLS].float().cpu().view(n_live, width, _SYMBOLS)
        total = (self.scores[:, :, None] + log_probs).view(n_live, width * _SYMBOLS)  # (A, W * 257)
        values, index = total.topk(min(2 * width, width * _SYMBOLS), dim=1)  # enough to keep W that go on
        parent, symbol = index // _SYMBOLS, index % _SYMBOLS
        ends = ((symbol == _NEWLINE) | (symbol == EOF_ID)) & (values > -math.inf)
        reading = (self.read_at < self.unread_len) if self._reading else None  # (A,) rows still reading their prefix
        if reading is not None:
            ends &= ~reading[:, None]  # no line ends before its prefix is read
        for row, column in ends.nonzero().tolist():
            self._finish(row, self.history[row, parent[row, column], : self.steps[row]], float(values[row, column]))
        kept_values, kept = values.masked_fill(ends, -math.inf).topk(width, dim=1)  # (A, W)
        kept_parent, kept_symbol = parent.gather(1, kept), symbol.gather(1, kept)
        if reading is not None:  # those rows feed their next unread byte to each of their (alike) state rows
            hold = reading[:, None]
            byte = self.unread.gather(1, self.read_at.clamp(max=_FOLD_BYTES - 1)[:, None])  # (A, 1)
            kept_parent = torch.where(hold, torch.arange(width), kept_parent)
            kept_symbol = torch.where(hold, byte, kept_symbol)
            kept_values = torch.where(hold, self.scores, kept_values)
        rows = torch.arange(n_live)[:, None]
        self.history = self.history[rows, kept_parent]  # (A, W, max_chars): each hypothesis's parent's bytes
        self.history[rows, torch.arange(width)[None, :], self.steps[:, None]] = kept_symbol.to(torch.uint8)
        # A reading row's byte lands in `history` where its first decoded byte will be written over it.
        self.scores = kept_values
        self.steps = self.steps + 1 if reading is None else self.steps + ~reading
        if reading is not None:
            self.read_at = self.read_at + reading
        parents = (rows * width + kept_parent).flatten().to(self.device)
        self.state = (self.state[0][:, parents], self.state[1][:, parents])
        tokens = kept_symbol.flatten().to(self.device)  # (A * W,) the bytes to feed
        # Scores only fall as text grows: once k finished lines beat every live one, the row's answer is known.
        known = kept_values.max(dim=1).values <= self.kth_best
        kept_hypotheses = self._leave(known | (self.steps >= self.max_chars), cut=~known)
        if kept_hypotheses is not None:
            tokens = tokens[kept_hypotheses]
        if len(self.ids):
            self.log_probs, self.state = self.completer.model.step(tokens, self.state)
            if self._reading:
                self._keep_read()
        else:
            self.log_probs, self._reading = self.log_probs[:0], 0

    def _keep_read(self) -> None:
        """Rows that have just read their prefix's last bytes: their sessions keep the state (its row 0)."""
        read = (self.unread_len > 0) & (self.read_at == self.unread_len)
        if not bool(read.any()):
            return
        for row in read.nonzero()[:, 0].tolist():
            reader = self._readers.pop(int(self.ids[row]), None)
            if reader is not None:
                session, prefix, length = reader
                at = row * self.width  # a copy: a view would keep the whole batch's state alive in the cache
                state = CharState(self.state[0][:, at].clone(), self.state[1][:, at].clone(),
                                  self.log_probs[at].clone(), length)  # fmt: skip
                self.completer.prefix_states.store(session, prefix, state)
        self.unread_len, self.read_at = self.unread_len.masked_fill(read, 0), self.read_at.masked_fill(read, 0)
        self._reading -= int(read.sum())

    def pop_finished(self) -> list[tuple[int, list[Candidate]]]:
        done, self._done = self._done, []
        return done

    def _finish(self, row: int, text: torch.Tensor, score: float) -> None:
        candidates = self._candidates[int(self.ids[row])]
        candidates.append(Candidate(bytes(text.tolist()), score, True))
        if len(candidates) >= self.k:
            self.kth_best[row] = sorted((c.log_prob for c in candidates), reverse=True)[self.k - 1]

    def _leave(self, leaving: torch.Tensor, cut: torch.Tensor | bool) -> torch.Tensor | None:
        """Rows marked in `leaving` (A,) leave with their answers; those also marked in `cut` add their live
        hypotheses, unfinished (a deadline, the byte bound). The row-aligned tensors and the state keep the others;
        returns the hypotheses kept (A' * W,), for the caller's per-hypothesis tensors, or None: all stay."""
        if not bool(leaving.any()):
            return None
        cut_rows = leaving & cut if isinstance(cut, torch.Tensor) else leaving if cut else torch.zeros_like(leaving)
        if self._reading:
            self._reading -= int((leaving & (self.read_at < self.unread_len)).sum())
        for row in leaving.nonzero()[:, 0].tolist():
            row_id = int(self.ids[row])
            self._readers.pop(row_id, None)
            candidates = self._candidates.pop(row_id)
            if cut_rows[row]:
                for column in range(self.width):
                    if self.scores[row, column] > -math.inf:
                        text = bytes(self.history[row, column, : self.steps[row]].tolist())
                        candidates.append(Candidate(text, float(self.scores[row, column]), False))
            self._done.append((row_id, top_k(candidates, self.k)))
        keep = ~leaving
        hypotheses = (torch.arange(len(keep))[:, None] * self.width + torch.arange(self.width))[keep].flatten()
        self.ids, self.until, self.scores = self.ids[keep], self.until[keep], self.scores[keep]
        self.history, self.steps, self.kth_best = self.history[keep], self.steps[keep], self.kth_best[keep]
        self.unread, self.unread_len, self.read_at = self.unread[keep], self.unread_len[keep], self.read_at[keep]
        self._soonest = float(self.until.min()) if len(self.until) else math.inf
        hypotheses = hypotheses.to(self.device)
        self.state = (self.state[0][:, hypotheses], self.state[1][:, hypotheses])
        return hypotheses
