"""Simulated editors: users retyping held-out files, who ask for a completion whenever they pause.

Each editor retypes a file from some line start, one character at a time, with human-like inter-key gaps.
When the user pauses for longer than the editor's debounce, the editor asks for a completion, exactly as an
IDE plugin would. `build_trace` turns that into a schedule of requests, which `serve/loadgen.py` replays.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from codecomp.data.shards import TextShard

logger = logging.getLogger(__name__)

# Relative mean gap after each kind of character, before normalising to the configured typing speed: people
# type within a word quickly and stop to think between words, more after punctuation, most at the end of a line.
_GAP_WEIGHT_LETTER = 1.0
_GAP_WEIGHT_SPACE = 1.6
_GAP_WEIGHT_PUNCT = 2.0
_GAP_WEIGHT_NEWLINE = 4.0
_PUNCTUATION = frozenset("(){}[];,.:=<>+-*/&|!?\"'`")


@dataclasses.dataclass
class TraceConfig:
    """How the simulated editors type.

    Attributes:
        editors: Concurrent simulated users.
        chars_per_second: Mean typing speed of each editor.
        debounce_s: A request is sent when the gap before the next keystroke exceeds this (a pause), this long
            after the last keystroke.
        duration_s: Length of the trace; requests scheduled later are dropped.
        seed: Seed of the trace; the same seed and documents give the same trace.
        max_document_bytes: Longer documents are cut at the last line end within this many bytes, which bounds
            request payloads. None keeps documents whole.
        gap_sigma: Shape (log-space standard deviation) of the lognormal inter-key gap.
        start_within_s: Editors start typing at uniform times in [0, start_within_s); None: within one mean
            gap. A benchmark that leaves out a warm-up spreads the starts over it.
    """

    editors: int = 32
    chars_per_second: float = 6.0
    debounce_s: float = 0.15
    duration_s: float = 20.0
    seed: int = 0
    max_document_bytes: int | None = None
    gap_sigma: float = 0.8
    start_within_s: float | None = None


@dataclasses.dataclass(frozen=True)
class Request:
    """One completion request of a trace.

    The document text is shared by all requests on it and the prefix and suffix are cut on demand, so a long
    trace costs one copy of each document rather than one per request.

    Attributes:
        t: Send time, seconds from the start of the trace.
        user: The editor that sends it (`editor-<i>`).
        language: `javascript` or `cpp`.
        document: Index of the document in the list given to `build_trace`.
        position: Cursor position (characters) in the document.
        text: The whole document.
    """

    t: float
    user: str
    language: str
    document: int
    position: int
    text: str = dataclasses.field(repr=False)

    @property
    def prefix(self) -> str:
        """The document up to the cursor."""
        return self.text[: self.position]

    @property
    def suffix(self) -> str:
        """The document from the end of the cursor's line: the lines below, which already exist."""
        line_end = self.text.find("\n", self.position)
        return self.text[line_end:] if line_end >= 0 else ""

    def payload(self) -> dict[str, Any]:
        """The JSON body of the request."""
        return {
            "language": self.language,
            "segments": {"prefix": self.prefix, "suffix": self.suffix},
            "user": self.user,
        }


def documents_from_corpus(
    corpus: Path, split: str = "test", languages: Sequence[str] = ("javascript", "cpp"), min_bytes: int = 200
) -> list[tuple[str, bytes]]:
    """Read the files of a corpus split as `(language, bytes)` documents.

    Args:
        corpus: The corpus folder (`data/<recipe>`).
        split: Which split; the held-out `test` split by default, so no model has trained on the replayed text.
        languages: Languages to read; a language without a shard is skipped with a warning.
        min_bytes: Shorter files are skipped (too little to type).

    Returns:
        The documents, in shard order, language by language. Files that are not valid UTF-8 are skipped.
    """
    documents = []
    for language in languages:
        folder = Path(corpus) / split / language
        if not (folder / "files.json").exists():
            logger.warning("no %s shard at %s", language, folder)
            continue
        skipped = 0
        for text in TextShard(folder):
            if len(text) < min_bytes:
                continue
            try:
                text.decode("utf-8")
            except UnicodeDecodeError:
                skipped += 1
                continue
            documents.append((language, text))
        if skipped:
            logger.info("%s: skipped %d files that are not UTF-8", folder, skipped)
    return documents


def build_trace(documents: Sequence[tuple[str, bytes]], config: TraceConfig | None = None) -> list[Request]:
    """Simulate `config.editors` users typing the documents and collect their completion requests.

    Each editor picks a document and a line start, then types the following characters one at a time with
    lognormal inter-key gaps whose mean over the document is `1 / chars_per_second`; gaps are longer after
    whitespace, punctuation and line ends. A gap longer than the debounce sends a request `debounce_s` after
    the last keystroke. At the end of a document the editor picks another one.

    Args:
        documents: `(language, utf-8 bytes)` pairs; undecodable or empty documents are skipped.
        config: The simulation; defaults to `TraceConfig()`.

    Returns:
        The requests of all editors, sorted by send time. Deterministic for given documents and seed.
    """
    config = config or TraceConfig()
    if config.chars_per_second <= 0 or config.debounce_s < 0:
        raise ValueError("chars_per_second must be positive and debounce_s non-negative")
    texts = [(i, language, _decode(raw, config.max_document_bytes)) for i, (language, raw) in enumerate(documents)]
    texts = [entry for entry in texts if entry[2]]
    if not texts:
        raise ValueError("build_trace needs at least one non-empty UTF-8 document")
    prepared: dict[int, _Document] = {}  # shared by editors, built the first time one picks a document
    requests: list[Request] = []
    for editor in range(config.editors):
        # One generator per editor (string seeds hash deterministically), so adding editors leaves the
        # others' sessions unchanged and the request rate grows in proportion.
        rng = random.Random(f"{config.seed}/{editor}")
        requests.extend(_editor_session(editor, rng, texts, prepared, config))
    requests.sort(key=lambda r: (r.t, r.user))
    return requests


def scale_trace(trace: Sequence[Request], factor: float) -> list[Request]:
    """Compress the trace's send times by `factor` (2 sends the same requests at twice the rate)."""
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    return [dataclasses.replace(request, t=request.t / factor) for request in trace]


def _decode(raw: bytes, max_bytes: int | None) -> str:
    if max_bytes is not None and len(raw) > max_bytes:
        cut = raw.rfind(b"\n", 0, max_bytes)
        raw = raw[: cut + 1] if cut >= 0 else raw[:max_bytes]
        # A hard cut may split a multi-byte character; dropping the partial tail keeps the text valid.
        return raw.decode("utf-8", errors="ignore")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return ""


@dataclasses.dataclass(frozen=True)
class _Document:
    """A document ready to type: where lines start and the mean gap after each character."""

    line_starts: list[int]
    gaps: list[float]

    @classmethod
    def prepare(cls, text: str, chars_per_second: float) -> _Document:
        line_starts = [0, *(i + 1 for i, c in enumerate(text) if c == "\n" and i + 1 < len(text))]
        weights = [_gap_weight(c) for c in text]
        # Normalise so the mean gap over the document is 1 / chars_per_second whatever its mix of characters.
        scale = len(weights) / (sum(weights) * chars_per_second)
        return cls(line_starts, [w * scale for w in weights])


def _gap_weight(char: str) -> float:
    if char == "\n":
        return _GAP_WEIGHT_NEWLINE
    if char.isspace():
        return _GAP_WEIGHT_SPACE
    if char in _PUNCTUATION:
        return _GAP_WEIGHT_PUNCT
    return _GAP_WEIGHT_LETTER


def _editor_session(
    editor: int,
    rng: random.Random,
    texts: list[tuple[int, str, str]],
    prepared: dict[int, _Document],
    config: TraceConfig,
) -> Iterator[Request]:
    user = f"editor-{editor}"
    # A lognormal with log-sd sigma has mean exp(mu + sigma^2 / 2): this mu makes the multiplier's mean 1.
    mu = -(config.gap_sigma**2) / 2
    # Editors do not all start typing at the same instant.
    t = rng.uniform(0.0, config.start_within_s or 1.0 / config.chars_per_second)
    while t < config.duration_s:
        index, language, text = texts[rng.randrange(len(texts))]
        if index not in prepared:
            prepared[index] = _Document.prepare(text, config.chars_per_second)
        document = prepared[index]
        pos = rng.choice(document.line_starts)
        while pos < len(text) and t < config.duration_s:
            # The keystroke at time t types text[pos]; the gap after it depends on what was typed.
            gap = document.gaps[pos] * rng.lognormvariate(mu, config.gap_sigma)
            pos += 1
            if gap > config.debounce_s and t + config.debounce_s < config.duration_s:
                yield Request(t + config.debounce_s, user, language, index, pos, text)
            t += gap
