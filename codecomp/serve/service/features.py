"""Features of each candidate for the per-user correction (`correction.py`): what the models and the file say.

Per choice of a ranking, by name (a feature absent is 0):
- `bias`, `policy` (the policy's score), `length` (log of its characters), `one_token` (a single token),
  `cached` (an answer found in a cache), `in_file` (the share of its names that occur around the cursor);
- per answering model m: `p:m` (its probability for the text, log-scaled to [0, 1]) and `by:m` (it
  proposed it);
- per model m that proposed it: `lp:m` (its own log-probability, scaled: a model with a single candidate
  says how sure it is only there), `lp_gap:m` (how far below m's best candidate), `top:m` (m's first),
  `one:m` (a single token), and `at:m:<where>`, where the cursor is (`word` inside a name, `dot` after ".",
  `member` after "->" or "::", `space`, `open` after an opening bracket or a comma, `line` at the start of
  a line's text, `punct` after other punctuation): models are good at different places, and a linear
  model learns which only from these crossings;
- the name it completes (the part of the name typed before the cursor and the candidate's first name
  characters), as a cache model would weigh it: `name_in_file:m` and `name_count:m` (whether and how often
  it occurs around the cursor), `name_recent` (how near before the cursor it last occurs) and `name_most`
  (the name used most often in the file among the choices' names);
- agreement: `agree` (other models' candidates that start with the same token), `prefix` (it is the start
  of another model's longer candidate), `extends` (another model's shorter candidate is its start).

Measured in the feedback replay (tuning part), the names' features are worth about 2 points of acceptance;
leaving out any other group moves it by less than its noise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.selection import Ranking, text_of
from codecomp.text.tokens import WORD

_FLOOR = -10.0  # normalised log-probabilities below this count as this (a feature in [0, 1])
_LP_FLOOR = -20.0  # a model's own log-probability below this counts as this (features in [-1, 0])
_WINDOW = 4096  # bytes of the file on each side of the cursor searched for a candidate's name
_PROBES = 8  # occurrences of a name looked at, at most (counts saturate there)
_NAME_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$" + bytes(range(0x80, 0x100)))
_FIRST_TOKEN = re.compile(r"\s*(?:[A-Za-z0-9_$\u0080-\U0010ffff]+|\S)")
_NAME_START = re.compile(rb"[A-Za-z0-9_$\x80-\xff]*")


def features(
    ranking: Ranking,
    cache: Mapping[str, str],
    prefix: bytes,
    suffix: bytes,
    answers: Mapping[str, Sequence[WireCandidate]] | None = None,
) -> list[dict[str, float]]:
    """Per choice of `ranking`, its features by name.

    Args:
        cache: per model, how its answer was found (hit, shared, typed, approx, miss).
        prefix, suffix: the document around the cursor.
        answers: the models' candidates the ranking was made from (their own log-probabilities); None: only
            the credited model's, from the choices.
    """
    partial = _NAME_START.match(prefix[-256:][::-1]).group(0)[::-1]  # type: ignore[union-attr]  # the name typed
    before = prefix[-_WINDOW : len(prefix) - len(partial)]
    window = before + b"\n" + suffix[:_WINDOW]
    where = _where(prefix)
    log_probs = _log_probs(answers) if answers is not None else {}
    best = {m: max(lps.values()) for m, lps in log_probs.items() if lps}
    offered = [(m, text, _first_token(text)) for m, offer in ranking.offers.items() for text in offer]
    counts, rows = [], []
    known: dict[bytes, int] = {}  # the choices share names: count each once

    def counted(name: bytes) -> int:
        if name not in known:
            known[name] = _count(name, window)
        return known[name]

    for choice, advice, score in zip(ranking.choices, ranking.advice, ranking.scores, strict=True):
        text = choice.text
        proposers = [m for m, p in advice.items() if p > 0] or [choice.model]
        one = 1.0 if len(_FIRST_TOKEN.findall(text)) == 1 else 0.0
        row = {"bias": 1.0, "policy": score, "length": math.log1p(len(text)) / 5, "one_token": one}
        row["cached"] = 1.0 if any(cache.get(m, "miss") != "miss" for m in proposers) else 0.0
        names = WORD.findall(text.encode())
        row["in_file"] = sum(min(1, counted(n)) for n in names) / len(names) if names else 0.0
        for model, p in advice.items():
            row[f"p:{model}"] = (max(math.log(p), _FLOOR) - _FLOOR) / -_FLOOR if p > 0 else 0.0
            row[f"by:{model}"] = 1.0 if p > 0 else 0.0
        first = _first_token(text)
        agree, longer, shorter = set(), set(), set()
        for model, other, other_first in offered:
            if model not in proposers and other != text:
                if other_first == first:
                    agree.add(model)
                if other.startswith(text):
                    longer.add(model)
                elif text.startswith(other):
                    shorter.add(model)
        row["agree"], row["prefix"], row["extends"] = len(agree), len(longer), len(shorter)
        name = partial + _NAME_START.match(text.encode()).group(0)  # type: ignore[union-attr]
        count = counted(name) if name and not name[:1].isdigit() else -1
        counts.append(count)
        if count > 0:
            row["name_recent"] = 1.0 / (1.0 + _distance(name, before) / 256)
        for model in proposers:
            lp = log_probs.get(model, {}).get(text, choice.log_prob if model == choice.model else _LP_FLOOR)
            row[f"lp:{model}"] = max(lp, _LP_FLOOR) / -_LP_FLOOR
            row[f"lp_gap:{model}"] = max(lp - best.get(model, lp), _LP_FLOOR) / -_LP_FLOOR
            row[f"top:{model}"] = 1.0 if next(iter(ranking.offers.get(model, {})), None) == text else 0.0
            row[f"one:{model}"] = one
            row[f"at:{model}:{where}"] = 1.0
            if count >= 0:
                row[f"name_in_file:{model}"] = 1.0 if count else 0.0
                row[f"name_count:{model}"] = math.log1p(count) / 3
        rows.append(row)
    most = max(counts, default=0)
    for row, count in zip(rows, counts, strict=True):
        if most > 0 and count == most:
            row["name_most"] = 1.0
    return rows


def _first_token(text: str) -> str:
    match = _FIRST_TOKEN.match(text)
    return match.group(0).lstrip() if match else ""


def _where(prefix: bytes) -> str:
    """Where the cursor is, as the models see it: inside a name, after ".", "->" or "::", and so on."""
    line = prefix[prefix.rfind(b"\n") + 1 :]
    if not line.strip():
        return "line"
    last = line[-1]
    if last in _NAME_BYTES:
        return "word"
    if last == ord("."):
        return "dot"
    if line.endswith((b"->", b"::")):
        return "member"
    if last in b" \t\r\f\v":
        return "space"
    if last in b"([{,":
        return "open"
    return "punct"


def _log_probs(answers: Mapping[str, Sequence[WireCandidate]]) -> dict[str, dict[str, float]]:
    """Per model, text -> its best log-probability for it."""
    out: dict[str, dict[str, float]] = {}
    for model, candidates in answers.items():
        mine = out[model] = {}
        for candidate in candidates:
            text = text_of(candidate.text)
            mine[text] = max(mine.get(text, -math.inf), candidate.log_prob)
    return out


def _whole(name: bytes, text: bytes, start: int) -> bool:
    """Whether the occurrence of `name` at `start` of `text` is a whole name (not inside a longer one)."""
    end = start + len(name)
    return (start == 0 or text[start - 1] not in _NAME_BYTES) and (end == len(text) or text[end] not in _NAME_BYTES)


def _count(name: bytes, window: bytes) -> int:
    """How often `name` occurs in `window` as a whole name, among the first `_PROBES` occurrences of its bytes (a
    C-level find each: a regex search over the window per name cost most of the ranking's time). Its bytes
    found inside other names `_PROBES` times count as one occurrence: a short name that common is all but
    certain to stand alone somewhere too."""
    found, start = 0, window.find(name)
    for _ in range(_PROBES):
        if start < 0:
            return found
        found += _whole(name, window, start)
        start = window.find(name, start + 1)
    return max(found, 1 if start >= 0 else 0)


def _distance(name: bytes, before: bytes) -> int:
    """Bytes from the end of `before` back to the last whole occurrence of `name` in it (len(before) if none)."""
    end = len(before)
    for _ in range(_PROBES):
        start = before.rfind(name, 0, end)
        if start < 0:
            break
        if _whole(name, before, start):
            return len(before) - start - len(name)
        end = start + len(name) - 1
    return len(before)
