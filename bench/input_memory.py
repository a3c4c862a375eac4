"""Bounded memory whatever the input (issue 22): peak RSS of `alpagasus rate --dry-run --skip-invalid` (reads and
validates every row, sends nothing) on files with one huge field and on a large JSON list against the same rows
as JSONL.

    python bench/input_memory.py            # a 50 MB and a 200 MB field, a ~95 MB list (232,000 rows) and JSONL
    python bench/input_memory.py --quick    # a 20 MB field, a ~20 MB list

Files are made from the real Alpaca sample under a temporary directory: 200 real rows with one row whose output
is N MB of text after the 100th; the list is the sample repeated (a row number in each instruction) and written
with `json.dumps(indent=1)`. Each run is the real CLI in its own process; peak RSS is that process's (wait4).
To measure another tree (before a change), run with PYTHONPATH=that/src.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import alpaca_rows, load_avg, run_measured  # noqa: E402


def field_file(path: Path, mb: int) -> Path:
    rows = alpaca_rows()
    with path.open("w") as f:
        for r in rows[:100]:
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps({"instruction": "Summarise this.", "input": "",
                            "output": "lorem ipsum " * (mb * 1024 * 1024 // 12)}) + "\n")
        for r in rows[100:200]:
            f.write(json.dumps(r) + "\n")
    return path


def list_files(d: Path, n: int) -> tuple[Path, Path]:
    base = alpaca_rows()
    rows = [dict(base[i % len(base)], instruction=f"{i} {base[i % len(base)]['instruction']}") for i in range(n)]
    (d / "list.json").write_text(json.dumps(rows, indent=1))
    (d / "list.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "list.json", d / "list.jsonl"


def make(d: Path, quick: bool) -> list[Path]:
    files = [field_file(d / f"field{mb}.jsonl", mb) for mb in ((20,) if quick else (50, 200))]
    return files + list(list_files(d, 50_000 if quick else 232_000))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--make", help=argparse.SUPPRESS)  # the child that writes the files
    args = ap.parse_args()
    if args.make:
        make(Path(args.make), args.quick)
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        # the files are written by a child: a child's peak RSS starts at its parent's size (harness.run_measured)
        subprocess.run([sys.executable, __file__, "--make", tmp, *(["--quick"] if args.quick else [])], check=True)
        files = sorted(d.glob("field*.jsonl"), key=lambda p: p.stat().st_size) + [d / "list.json", d / "list.jsonl"]
        print(load_avg())
        out = {}
        for f in files:
            r = run_measured([sys.executable, "-m", "alpagasus.cli", "rate", str(f), "-o", str(d / "out.jsonl"),
                              "--store", str(d / "s.sqlite"), "--dry-run", "--skip-invalid"],
                             env={"XDG_CACHE_HOME": str(d / "cache")})
            got = json.loads(r["stdout"][r["stdout"].index("{"):]) if r["rc"] == 0 else {}
            out[f.name] = {"mb": round(f.stat().st_size / 1e6, 1), "rc": r["rc"],
                           "peak_rss_mb": round(r["peak_rss_mb"]), "wall_s": round(r["wall_s"], 1),
                           "invalid_rows": got.get("invalid_rows")}
            print(f.name, out[f.name], flush=True)
        print(json.dumps(out))


if __name__ == "__main__":
    main()
