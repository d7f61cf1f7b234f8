"""Char-LSTM completer: batched line completion by beam search (stepwise, for continuous batching), incremental
state, deadlines."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from codecomp.checkpoint import LoadedCheckpoint, load
from codecomp.data.char_vocab import PAD_ID, encode_document
from codecomp.inference.char_beams import CharDecoding, CharState
from codecomp.inference.completer import Candidate, CompletionOptions, CompletionRequest
from codecomp.inference.decoding import complete_stepwise, run_to_end
from codecomp.inference.prefix_states import PrefixStateCache
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig

_DEFAULT_OPTIONS = CompletionOptions()
_STEPWISE_BYTES = 4  # texts up to this long are read by fused steps (1 byte: 0.5 ms, not 2; 3 bytes: 1.4 ms, not 2)


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
        if max(len(texts[i]) for i in rows) <= _STEPWISE_BYTES:
            return self._advance_stepwise(states, texts, rows)
        sequences = [torch.frombuffer(bytearray(texts[i]), dtype=torch.uint8).long() for i in rows]
        tokens = pad_sequence(sequences, batch_first=True, padding_value=PAD_ID).to(self.device)  # (B, T)
        start = (torch.stack([states[i].h for i in rows], 1), torch.stack([states[i].c for i in rows], 1))
        log_probs, (h, c) = self.model.encode(tokens, torch.tensor([len(s) for s in sequences]), start)
        for j, i in enumerate(rows):  # (layers, B, H) each, in the order of `rows`
            advanced[i] = CharState(h[:, j], c[:, j], log_probs[j], states[i].length + len(texts[i]))
        return advanced

    def _advance_stepwise(
        self, states: Sequence[CharState], texts: Sequence[bytes], rows: list[int]
    ) -> list[CharState]:
        """`advance_many` of short texts (the bytes typed since a session's last request), one fused
        `CharLSTM.step` per byte for all rows: `nn.LSTM`'s call costs more than a few steps of its arithmetic.
        A row whose text has ended keeps its state (it is stepped on a pad, and the result dropped)."""
        lengths = torch.tensor([len(texts[i]) for i in rows], device=self.device)  # (R,)
        tokens = pad_sequence([torch.frombuffer(bytearray(texts[i]), dtype=torch.uint8).long() for i in rows],
                              padding_value=PAD_ID).to(self.device)  # (T, R)  # fmt: skip
        h = torch.stack([states[i].h for i in rows], 1)  # (layers, R, H)
        c = torch.stack([states[i].c for i in rows], 1)
        log_probs = torch.stack([states[i].log_probs for i in rows])  # (R, V)
        for t in range(tokens.shape[0]):
            stepped, (new_h, new_c) = self.model.step(tokens[t], (h, c))
            going = lengths > t  # (R,)
            log_probs = torch.where(going[:, None], stepped, log_probs)
            h, c = torch.where(going[:, None], new_h, h), torch.where(going[:, None], new_c, c)
        advanced = list(states)
        for j, i in enumerate(rows):
            advanced[i] = CharState(h[:, j], c[:, j], log_probs[j], states[i].length + len(texts[i]))
        return advanced

    @torch.inference_mode()
    def read(self, requests: Sequence[CompletionRequest]) -> list[CharState]:
        """Each request's prefix read. A request with a session resumes from the state of the longest
        prefix its session read lately (one more keystroke: one more byte), and that session keeps
        the new state; the others are read afresh, all in batched passes."""
        return [state for state, _ in self.resume(requests)]

    @torch.inference_mode()
    def resume(self, requests: Sequence[CompletionRequest], unread: int = 0) -> list[tuple[CharState, bytes]]:
        """`read`, except that a request whose session resumes within `unread` bytes of its prefix comes back
        with those bytes still to read from the state returned: a decoding reads them in its own batched steps
        (`CharDecoding`, as Orca batches a prompt's tokens with others' decoding) and stores the state it
        reaches for the session. The others are read here, and their sessions keep their states."""
        resumed = [
            self.prefix_states.lookup(r.session, r.prefix, self.max_context) if r.session else None for r in requests
        ]
        left = [hit[1] if hit is not None and len(hit[1]) <= unread else b"" for hit in resumed]
        fresh = [i for i, hit in enumerate(resumed) if hit is None]
        warm = [(i, hit) for i, hit in enumerate(resumed) if hit is not None and not left[i]]
        states: list[CharState | None] = [hit[0] if left[i] and hit else None for i, hit in enumerate(resumed)]
        encoded = self.encode([requests[i].prefix for i in fresh], [requests[i].language for i in fresh])
        for i, state in zip(fresh, encoded, strict=True):
            states[i] = state
        advanced = self.advance_many([hit[0] for _, hit in warm], [hit[1] for _, hit in warm])
        for (i, _), state in zip(warm, advanced, strict=True):
            states[i] = state
        done = [state for state in states if state is not None]  # every one, now
        for request, state, rest in zip(requests, done, left, strict=True):
            if request.session and not rest:
                self.prefix_states.store(request.session, request.prefix, state)
        return list(zip(done, left, strict=True))

    # -- completing lines --------------------------------------------------------------------------

    def complete(
        self,
        requests: Sequence[CompletionRequest],
        options: CompletionOptions = _DEFAULT_OPTIONS,
        deadlines: Sequence[float] | None = None,
    ) -> list[list[Candidate]]:
        """Top-k completions of the rest of the line at each request's cursor, best first (the suffix is not
        read): every request joins one `decoding` at once. `read` says how prefixes are read.

        A completion ends at a newline or the end of file (neither is part of its text) or after
        `options.max_chars`. With `deadlines` (per request, a `time.monotonic()` instant), a request whose
        deadline passes gets its best hypotheses so far, unfinished ones marked `complete=False` (anytime
        decoding), and the others decode on without it.
        """
        return complete_stepwise(self, requests, options, deadlines)

    def decoding(self, options: CompletionOptions = _DEFAULT_OPTIONS) -> CharDecoding:
        """Rows decoding together, one batched forward pass per byte, joining and leaving between steps
        (`codecomp.inference.decoding`: what a serving container's continuous batching drives)."""
        return CharDecoding(self, options)

    def decode(
        self,
        states: Sequence[CharState],
        options: CompletionOptions = _DEFAULT_OPTIONS,
        deadlines: Sequence[float] | None = None,
    ) -> list[list[Candidate]]:
        """`complete` from prefixes already read (`encode`, `advance`, `read`)."""
        decoding = self.decoding(options)
        return run_to_end(
            decoding, decoding.add_states(states, [math.inf] * len(states) if deadlines is None else deadlines)
        )

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
