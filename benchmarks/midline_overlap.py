"""Completions in the middle of a line, against a running server: how often the answer repeats the rest of the line.

    .venv/bin/codecomp-serve port=8000 service.objective_ms=500 &
    python -m benchmarks.midline_overlap --url http://127.0.0.1:8000 [--positions 144] [--data data/small]

Positions are drawn inside lines of one held-out file per language (the test file with the most lines;
`codecomp.evaluation.line_completion.sample_line_tasks`), and each is asked twice, as a Tabby client asks
(`segments.prefix` the text before the cursor, `segments.suffix` the text after it):

- `rest kept`: the whole rest of the line is after the cursor (editing inside a line);
- `gap`: a random stretch after the cursor is removed and the rest of the line kept, so the right insertion
  is known: the stretch.

Reported per kind, over the server's first choices (what Tabby's clients show): the share that ends with the
rest of the line (so inserting it repeats that), the share that ends with its start (a repeated junction),
and for `gap` the share whose insertion makes the line right and the edit similarity of the line made.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx
import numpy as np
from rapidfuzz import fuzz

from codecomp.data.shards import TextShard
from codecomp.evaluation.line_completion import sample_line_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--data", type=Path, default=Path("data/small"))
    parser.add_argument("--positions", type=int, default=144, help="per language")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = {}
    with httpx.Client(base_url=args.url, timeout=30) as client:
        for language, extension in (("javascript", "js"), ("cpp", "cpp")):
            shard = TextShard(args.data / "test" / language)
            index = max(range(len(shard)), key=lambda i: shard.document(i).count(b"\n"))
            document, path = shard.document(index), shard.files[index]["path"]
            rng = np.random.default_rng(args.seed)
            rows = []
            for task in sample_line_tasks([document], args.positions, args.seed):
                after = document[len(task.prefix) + len(task.target) :]
                cut = int(rng.integers(1, len(task.target))) if len(task.target) > 1 else 0
                for kind, missing in (("rest kept", b""), ("gap", task.target[:cut])):
                    rest = task.target[len(missing) :]
                    if not rest.strip():
                        continue
                    segments = {"prefix": task.prefix.decode(errors="replace"),
                                "suffix": (rest + after).decode(errors="replace"), "filepath": path}  # fmt: skip
                    answer = client.post("/v1/completions", json={"language": language, "segments": segments,
                                                                  "user": f"midline-{extension}"})  # fmt: skip
                    answer.raise_for_status()
                    choices = answer.json()["choices"]
                    text = choices[0]["text"].encode() if choices else b""
                    rows.append(_score(kind, task.prefix, missing, rest, text))
            results[f"{language} ({path})"] = _summary(rows)
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _score(kind: str, prefix: bytes, missing: bytes, rest: bytes, text: bytes) -> dict[str, object]:
    line_start = prefix[prefix.rfind(b"\n") + 1 :]
    end, body = rest.rstrip(), text.rstrip()
    made, truth = (
        (line_start + text + rest).decode(errors="replace"),
        (line_start + missing + rest).decode(errors="replace"),
    )
    return {
        "kind": kind,
        "answered": bool(text.strip()),
        "repeats_rest": bool(body) and body.endswith(end),
        "repeats_start": bool(body) and any(body.endswith(end[:n]) for n in range(1, len(end) + 1)),
        "right": text == missing,
        "similarity": fuzz.ratio(made, truth),
    }


def _summary(rows: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    summary = {}
    for kind in ("rest kept", "gap"):
        of_kind = [r for r in rows if r["kind"] == kind]
        answered = [r for r in of_kind if r["answered"]]
        share = lambda key, among=answered: round(100 * sum(bool(r[key]) for r in among) / max(1, len(among)), 1)  # noqa: E731
        summary[kind] = {
            "positions": len(of_kind), "answered": len(answered),
            "repeats_rest_%": share("repeats_rest"), "repeats_start_%": share("repeats_start"),
        }  # fmt: skip
        if kind == "gap":
            summary[kind]["line_right_%"] = share("right", of_kind)
            summary[kind]["line_similarity"] = round(float(np.mean([r["similarity"] for r in of_kind] or [0])), 1)
    return summary


if __name__ == "__main__":
    main()
