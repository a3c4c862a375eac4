"""What reading through formats/ costs: read_examples and `select --top-k` on the 9,229 real Alpaca rows, and on
the same rows as OpenAI `messages` conversations (one user turn, one assistant turn). Prints seconds (best of 3).

    python bench/formats.py [SHARED_DATA_DIR]
    PYTHONPATH=/tmp/old/src python bench/formats.py    # the code before formats, Alpaca only (the baseline)
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

from alpagasus.data import read_examples
from alpagasus.select import select_file

SHARED = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data")


def best(fn, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def ratings(rows: list[dict], path: Path) -> Path:
    """A ratings file without a judge: each row plus a score drawn from its position (select reads no more)."""
    with open(path, "w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({**r, "id": f"{i:016x}", "score": 3 + (i * 7919 % 5) / 2, "status": "ok"}) + "\n")
    return path


def main() -> None:
    alpaca = json.loads((SHARED / "alpaca" / "alpaca_random_9k.json").read_text())
    alpaca = [r for r in alpaca if r["instruction"].strip() and r["output"].strip()]
    chat = [
        {
            "messages": [
                {"role": "user", "content": r["instruction"] + ("\n\n" + r["input"] if r["input"].strip() else "")},
                {"role": "assistant", "content": r["output"]},
            ]
        }
        for r in alpaca
    ]
    new = importlib.util.find_spec("alpagasus.formats") is not None  # the code before formats reads Alpaca only
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name, rows in (("alpaca", alpaca), ("messages", chat)) if new else (("alpaca", alpaca),):
            src = d / f"{name}.jsonl"
            src.write_text("".join(json.dumps(r) + "\n" for r in rows))
            rated = ratings(rows, d / f"{name}_ratings.jsonl")
            t_read = best(lambda src=src: read_examples(src))
            t_sel = best(lambda rated=rated: select_file(rated, d / "out.jsonl", "top_k", 1000))
            print(f"{name:9s} rows {len(rows)}: read_examples {t_read:.2f} s, select --top-k 1000 {t_sel:.2f} s")


if __name__ == "__main__":
    main()
