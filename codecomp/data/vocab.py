"""Vocabularies of node kinds and leaf values, built on the train split with `tokenizers`.

Each vocabulary is a word-level `tokenizers.Tokenizer` with no pre-tokenizer, so a whole leaf text
(an identifier, a string literal with spaces) is one entry. It is saved as tokenizer JSON, which
checkpoints embed so that a model is loaded with the vocabulary it was trained with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from tokenizers import Tokenizer, models

PAD, UNK, HOLE, EMPTY = "[PAD]", "[UNK]", "[HOLE]", "[EMPTY]"
VALUE_SPECIALS = (PAD, UNK, HOLE, EMPTY)  # EMPTY: the value input of an inner node
KIND_SPECIALS = (PAD, UNK)


class Vocabulary:
    """A string <-> id mapping with an unknown id; ids of `specials` come first."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._ids: dict[str, int] = tokenizer.get_vocab()
        self.unk_id = self._ids[UNK]

    @classmethod
    def from_counts(
        cls,
        counts: Mapping[str, int],
        max_size: int,
        min_frequency: int = 1,
        specials: tuple[str, ...] = VALUE_SPECIALS,
    ) -> Vocabulary:
        """The `max_size` most frequent words (specials included) seen at least `min_frequency` times.

        Ties are broken by the word itself, so the same counts always give the same ids.
        """
        if UNK not in specials:
            raise ValueError(f"specials must include {UNK}")
        ranked = sorted(
            (word for word, count in counts.items() if count >= min_frequency), key=lambda w: (-counts[w], w)
        )
        words = list(specials) + [word for word in ranked if word not in specials]
        tokenizer = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words[:max_size])}, unk_token=UNK))
        return cls(tokenizer)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        return cls(Tokenizer.from_str(text))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls(Tokenizer.from_file(str(path)))

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    def save(self, path: Path) -> None:
        path.write_text(self.to_json() + "\n")

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, word: str) -> bool:
        return word in self._ids

    def id(self, word: str) -> int:
        return self._ids.get(word, self.unk_id)

    def ids(self, words: Iterable[str]) -> list[int]:
        get, unk = self._ids.get, self.unk_id
        return [get(word, unk) for word in words]
