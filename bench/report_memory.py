"""Report memory: peak RSS and wall time of `alpagasus report` on a large ratings file.

    python bench/report_memory.py                  # 200,000 rows (about 270 MB of JSONL)
    python bench/report_memory.py --quick          # 20,000 rows
    python bench/report_memory.py --rows 50000 --old-ref e04ebbd   # also the report package as of a commit

The ratings file looks like `alpagasus rate` output (the field order of rate/view.py): instruction, input and
output from the real Alpaca sample (bench/harness.py's rows, cycled; the instruction gets the row number so
every row is distinct), id (content id), row, score (a logprob judge's expected score: continuous, mostly 4s
and 5s), status (about 2% unparsed, 0.5% error, and invalid_input rows at the end), judge, prompt_version,
model, explanation, raw, probs, flags (1% flagged); 1% of the rows repeat an earlier example, as duplicates in
the input do. A second file rates the same rows with another judge (scores moved a little), for `--compare`.

Each report runs the real CLI (`python -m alpagasus.cli report FILE -o DIR`, and the same with `--compare`) in
its own process; peak RSS is that process's (wait4: an upper bound, since Linux starts an exec'd child's peak
at its parent's size; this script stays near 40 MB). `--old-ref REF` runs the same commands against the
report package as it was at commit REF (read with `git show`, nothing in the checkout changes).
Last line: {"rows", "report_peak_rss_mb", "report_s", "compare_peak_rss_mb", "compare_s", ...}.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, WEIGHTS, alpaca_rows, load_avg, run_measured  # noqa: E402

from alpagasus.records import content_id  # noqa: E402

EXPLANATION = ("The response follows the instruction and is mostly accurate and clearly written, though it could "
               "give more detail and justify its claims a little better.")


def _score(rng: random.Random) -> tuple[float, dict[str, float]]:
    """A logprob judge's reply: probabilities over "0".."5" peaked on a digit drawn with the instant judge's
    weights, and the expected score under them."""
    digit = rng.choices(range(6), WEIGHTS)[0]
    peak = 0.5 + 0.45 * rng.random()
    probs = dict.fromkeys("012345", 1e-4)
    probs[str(digit)] = peak
    near = [str(n) for n in (digit - 1, digit + 1) if 0 <= n <= 5]
    for n in near:
        probs[n] += (1 - peak) / len(near)
    total = sum(probs.values())
    return sum(int(k) * p for k, p in probs.items()) / total, probs


def make_ratings(path: Path, other: Path, n: int, seed: int = 0) -> int:
    """n rows as `alpagasus rate` writes them, and the same rows rated by a second judge; returns the size of
    the first file in bytes."""
    base = alpaca_rows()
    rng, rng_b = random.Random(seed), random.Random(seed + 1)
    n_invalid = max(1, n // 1000)
    with path.open("w", encoding="utf-8") as f, other.open("w", encoding="utf-8") as g:
        for i in range(n - n_invalid):
            j = rng.randrange(i) if i and rng.random() < 0.01 else i  # a duplicate of an earlier example
            src = base[j % len(base)]
            ex = {"instruction": f"{src['instruction']} (#{j})", "input": src["input"], "output": src["output"]}
            ident = content_id(ex["instruction"], ex["input"], ex["output"])
            u = rng.random()
            status = "unparsed" if u < 0.02 else "error" if u < 0.025 else "ok"
            score, probs = _score(rng)
            row = {**ex, "id": ident, "row": i + 1, "score": round(score, 6) if status == "ok" else None,
                   "status": status, "judge": "openai:gpt-4o", "prompt_version": "accuracy-v1",
                   "model": "gpt-4o-2024-08-06", "explanation": None if status == "ok" else EXPLANATION,
                   "raw": "4" if status == "ok" else "I would rate it highly.", "probs": probs if status == "ok"
                   else None, "flags": ["injection"] if rng.random() < 0.01 else []}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            moved = min(5.0, max(0.0, score + rng_b.gauss(0, 0.4)))
            rb = {**row, "score": round(moved, 6) if status == "ok" else None, "judge": "openai:gpt-4o-mini",
                  "prompt_version": "helpfulness-v1"}
            g.write(json.dumps(rb, ensure_ascii=False) + "\n")
        for k in range(n_invalid):
            bad = {"id": None, "row": n + k, "field": "output", "score": None, "status": "invalid_input",
                   "judge": "openai:gpt-4o", "prompt_version": "accuracy-v1", "explanation": "is empty", "raw": None,
                   "flags": []}
            f.write(json.dumps(bad) + "\n")
    return path.stat().st_size


def old_tree(ref: str, into: Path) -> Path:
    """A copy of src/ with the report package as it was at `ref` (git show: read-only for the checkout)."""
    shutil.copytree(REPO / "src", into, ignore=shutil.ignore_patterns("__pycache__"))
    pkg = into / "alpagasus" / "report"
    listing = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", ref, "src/alpagasus/report/"],
                             capture_output=True, text=True, check=True).stdout.split()
    shutil.rmtree(pkg)
    pkg.mkdir()
    for name in listing:
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:{name}"], capture_output=True,
                              check=True).stdout
        (pkg / Path(name).name).write_bytes(text)
    return into


def report(name: str, args: list[str], rows: int, src: Path | None = None) -> dict:
    env = {"PYTHONPATH": str(src)} if src else None
    r = run_measured([sys.executable, "-m", "alpagasus.cli", "report", *args], env=env)
    if r["rc"] != 0:
        raise SystemExit(f"{name} failed (rc {r['rc']}):\n{r['stderr'][-3000:]}")
    print(f"{name:16s} {rows:>9,d} rows  {r['wall_s']:7.1f} s  peak RSS {r['peak_rss_mb']:7.1f} MB   "
          f"({load_avg()})", flush=True)
    return r


def differing(new: Path, old: Path) -> list[str]:
    """The files of two report directories whose bytes differ (index.html, the PNGs, summary.json)."""
    names = sorted({p.name for p in new.iterdir()} | {p.name for p in old.iterdir()})
    return [x for x in names if not ((new / x).is_file() and (old / x).is_file()
                                     and (new / x).read_bytes() == (old / x).read_bytes())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 rows")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--old-ref", help="also run the report package as of this commit (e.g. e04ebbd)")
    ap.add_argument("--dir", help="working directory (default: a temporary one, removed at the end)")
    a = ap.parse_args()
    n = a.rows or (20_000 if a.quick else 200_000)
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        d = Path(d)
        ratings, other = d / "ratings.jsonl", d / "other.jsonl"
        size = make_ratings(ratings, other, n)
        print(f"{n:,d} rows, {size / 1e6:.0f} MB of JSONL", flush=True)
        new = report("report", [str(ratings), "-o", str(d / "rep")], n)
        new_ab = report("report --compare", [str(ratings), "-o", str(d / "rep_ab"), "--compare", str(other)], n)
        s = json.loads((d / "rep" / "summary.json").read_text())
        agr = json.loads((d / "rep_ab" / "summary.json").read_text())["agreement"]
        print(f"rated {s['rated']:,d}, kept at 4.5: {s['kept_at']['4.5']:,d}; compare: {agr['common']:,d} common ids, "
              f"Spearman {agr['spearman']:.3f}, kappa {agr['kappa']:.3f}")
        out = {"rows": n, "input_mb": round(size / 1e6, 1), "report_peak_rss_mb": round(new["peak_rss_mb"], 1),
               "report_s": round(new["wall_s"], 2), "compare_peak_rss_mb": round(new_ab["peak_rss_mb"], 1),
               "compare_s": round(new_ab["wall_s"], 2)}
        if a.old_ref:
            src = old_tree(a.old_ref, d / "old_src")
            old = report(f"old {a.old_ref}", [str(ratings), "-o", str(d / "old")], n, src)
            old_ab = report("old --compare", [str(ratings), "-o", str(d / "old_ab"), "--compare", str(other)], n, src)
            diff = differing(d / "rep", d / "old") + differing(d / "rep_ab", d / "old_ab")
            print(f"files that differ from the old report's: {diff or 'none'}")
            out.update(old_peak_rss_mb=round(old["peak_rss_mb"], 1), old_s=round(old["wall_s"], 2),
                       old_compare_peak_rss_mb=round(old_ab["peak_rss_mb"], 1),
                       old_compare_s=round(old_ab["wall_s"], 2), differing_from_old=diff)
        out["load"] = load_avg()
        print(json.dumps(out))


if __name__ == "__main__":
    main()
