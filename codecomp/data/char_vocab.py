"""The Char-LSTM's symbols: the 256 byte values, end of file, padding, and a file start per language."""

from __future__ import annotations

import numpy as np

from codecomp.parsing import LANGUAGES

N_BYTES = 256
EOF_ID = 256  # predicted after a file's last byte
PAD_ID = 257  # never a target
_BOS_BASE = 258  # file start, one per language: the model knows which language it reads
VOCAB_SIZE = _BOS_BASE + len(LANGUAGES)


def bos_id(language: str) -> int:
    return _BOS_BASE + LANGUAGES.index(language)


def encode_document(document: bytes, language: str) -> np.ndarray:
    """(len + 2,) int64: file start, the bytes, end of file."""
    tokens = np.empty(len(document) + 2, dtype=np.int64)
    tokens[0] = bos_id(language)
    tokens[1:-1] = np.frombuffer(document, dtype=np.uint8)
    tokens[-1] = EOF_ID
    return tokens
