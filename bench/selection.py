"""Selection benchmarks (issue 14): diversity and near-duplicate removal, quality and cost.

  python bench/selection.py quality --ratings R.jsonl [--planted R_PLANTED.jsonl --picks PICKS.json]
      top-k / diverse (DEITA walk) / facility / random / longest at the same size on a rated file: mean score,
      redundancy in MiniLM space and, measured independently, TF-IDF cosine to the nearest other kept row
      (scikit-learn); with --planted, `--all --dedup` on the file with planted near-duplicates.
  python bench/selection.py plant --data alpaca_random_9k.json --rows 1000 --out DIR
      the first ROWS rows plus 20 planted near-duplicates (a word dropped, case and spacing changed) and the
      positions of their originals; rate DIR/planted.json with `alpagasus rate` for the quality run.
  python bench/selection.py timing --rows 9229|52000 [--stored]
      time and peak memory of `select --diverse` and `select --dedup` on a ratings file of ROWS real Alpaca
      texts (beyond the 9k file: its rows again with their words shuffled, so they are new texts) with
      synthetic scores (timing only). Cold: a fresh store, embeddings computed; --stored: every row's vector
      already in the store (for 52k rows: synthetic vectors, real ones cost an hour of encoding here).
Each figure is printed, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

DATA = Path("/work/shared/data/alpaca/alpaca_random_9k.json")
# the CLI in a child that reports its own peak RSS (RUSAGE_CHILDREN would keep the largest child's so far)
CHILD = ("import resource, sys\nfrom alpagasus.cli import main\nsys.argv = ['alpagasus', *sys.argv[1:]]\ntry:\n"
         "    main()\nfinally:\n"
         "    print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")


def plant(rows: list[dict], n: int = 20, seed: int = 0) -> tuple[list[int], list[dict]]:
    """n near copies of random rows: a word of the response dropped, spacing doubled, instruction lower-cased."""
    rng = random.Random(seed)
    picks = rng.sample(range(len(rows)), n)
    out = []
    for i in picks:
        r = dict(rows[i])
        field = "output" if len(r["output"].split()) > 1 else "instruction"
        words = r[field].split(" ")
        del words[rng.randrange(len(words))]
        r[field] = "  ".join(words)
        r["instruction"] = r["instruction"].lower() + "  "
        out.append(r)
    return picks, out


def cmd_plant(a: argparse.Namespace) -> None:
    rows = json.loads(Path(a.data).read_text())[:a.rows]
    picks, copies = plant(rows)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "planted.json").write_text(json.dumps(rows + copies))
    (out / "picks.json").write_text(json.dumps(picks))
    print(json.dumps({"rows": len(rows), "planted": len(copies), "out": str(out)}))


def _tfidf_redundancy(vec, texts: list[str]) -> float:
    import numpy as np

    x = vec.transform(texts)
    s = (x @ x.T).toarray()
    np.fill_diagonal(s, -1)
    return float(s.max(axis=1).mean())


def cmd_quality(a: argparse.Namespace) -> None:
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer

    from alpagasus.data import read_jsonl
    from alpagasus.select import select_file
    from alpagasus.select.diverse import redundancy
    from alpagasus.select.embed import Embedder, embedding_text
    from alpagasus.store import Store

    rows = list(read_jsonl(a.ratings))
    score = {r["id"]: r["score"] for r in rows if r.get("status") == "ok"}
    vec = TfidfVectorizer().fit([embedding_text(r) for r in rows])
    out, tmp = {}, Path(a.work)
    tmp.mkdir(parents=True, exist_ok=True)
    arms = [("top_k", {"rule": "top_k"}), ("diverse", {"rule": "top_k", "diverse": "deita"}),
            ("diverse_0.9", {"rule": "top_k", "diverse": "deita", "similarity": 0.9}),
            ("facility", {"rule": "top_k", "diverse": "facility"}), ("random", {"rule": "random"}),
            ("longest", {"rule": "longest"})]
    for name, kw in arms:
        t0 = time.time()
        res = select_file(a.ratings, tmp / f"{name}.jsonl", value=a.k, store=a.store, **kw)
        kept = json.loads((tmp / f"{name}.selection.json").read_text())["kept_ids"]
        text = {r["id"]: embedding_text(r) for r in rows}
        with Store(a.store) as st:
            emb = Embedder(st)
            emb.ensure((i, text[i]) for i in kept)
            mini = redundancy(emb.matrix(kept))
        out[name] = {"size": res["kept"], "mean_score": float(np.mean([score[i] for i in kept])),
                     "tfidf_redundancy": _tfidf_redundancy(vec, [text[i] for i in kept]), "minilm_redundancy": mini,
                     "seconds": round(time.time() - t0, 2)}
    top, rnd = out["top_k"], out["random"]
    for name, x in out.items():
        x["redundancy_vs_top_k"] = x["tfidf_redundancy"] / top["tfidf_redundancy"]
        x["gain_kept"] = (x["mean_score"] - rnd["mean_score"]) / (top["mean_score"] - rnd["mean_score"])
        print(f"{name:12s} {x['size']:5d} rows  mean score {x['mean_score']:.3f}  TF-IDF redundancy "
              f"{x['tfidf_redundancy']:.3f} ({x['redundancy_vs_top_k']:.0%} of top-k)  MiniLM redundancy "
              f"{x['minilm_redundancy']:.3f}  gain over random kept {x['gain_kept']:.0%}")
    if a.planted:
        out["dedup"] = _dedup_check(a, tmp)
    print(json.dumps(out))


def _dedup_check(a: argparse.Namespace, tmp: Path) -> dict:
    from alpagasus.select import select_file

    picks = json.loads(Path(a.picks).read_text())
    n_real = sum(1 for _ in open(a.planted)) - len(picks)
    t0 = time.time()
    select_file(a.planted, tmp / "dedup.jsonl", "all", dedup=True)
    dups = json.loads((tmp / "dedup.selection.json").read_text())["duplicates"]
    pairs = {frozenset((n_real + j + 1, p + 1)) for j, p in enumerate(picks)}
    found = sum(1 for d in dups if frozenset((d["row"], d["twin_row"])) in pairs)
    others = len(dups) - found
    r = {"planted": len(picks), "found": found, "other_removed": others, "other_rows": n_real,
         "seconds": round(time.time() - t0, 2)}
    print(f"dedup: {found} of {len(picks)} planted copies removed, {others} of {n_real} other rows removed "
          f"({others / n_real:.2%}), {r['seconds']} s")
    return r


def synthetic_ratings(n: int, path: Path) -> list[str]:
    """n rows of real Alpaca text (shuffled-word variants past the 9k), scores from a seeded RNG; their ids."""
    from alpagasus.records import content_id

    base = json.loads(DATA.read_text())
    rng = random.Random(0)
    ids = []
    with open(path, "w") as f:
        for i in range(n):
            r = dict(base[i % len(base)])
            if i >= len(base):
                words = r["output"].split()
                rng.shuffle(words)
                r["output"], r["instruction"] = " ".join(words), f"{r['instruction']} ({i // len(base)})"
            rid = content_id(r["instruction"], r["input"], r["output"])
            ids.append(rid)
            f.write(json.dumps({**r, "id": rid, "row": i + 1, "score": round(rng.uniform(2, 5), 2),
                                "status": "ok", "judge": "synthetic"}) + "\n")
    return ids


def cmd_timing(a: argparse.Namespace) -> None:
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    ratings = work / f"ratings_{a.rows}.jsonl"
    ids = synthetic_ratings(a.rows, ratings)
    store = work / f"store_{a.rows}_{'stored' if a.stored else 'cold'}.sqlite"
    store.unlink(missing_ok=True)
    if a.stored:
        _synthetic_vectors(store, ids, a.vectors)
    budget = max(1, round(a.rows * a.fraction))
    res = {}
    for name, args in (("diverse", ["--top-k", str(budget), "--diverse"]),
                       ("facility", ["--top-k", str(budget), "--facility"]),
                       ("dedup", ["--all", "--dedup"])):
        if a.only and name not in a.only.split(","):
            continue
        res[name] = _timed([str(ratings), "-o", str(work / f"{name}.jsonl"), "--store", str(store), *args])
        print(f"{name:9s} {a.rows} rows {'stored' if a.stored else 'cold'}: {res[name]['seconds']:.1f} s, "
              f"peak RSS {res[name]['peak_rss_mb']:.0f} MB")
    print(json.dumps({"rows": a.rows, "stored": a.stored, "budget": budget, **res}))


def _synthetic_vectors(store: Path, ids: list[str], real: str | None) -> None:
    """Every id gets a vector: the sum of two real MiniLM vectors (from --vectors, .npy) drawn at random, plus
    noise, made unit length (so the 52k rows are not 52 copies of each of 1,000 vectors)."""
    import numpy as np

    from alpagasus.select.embed import save_vectors
    from alpagasus.store import Store

    rng = np.random.default_rng(0)
    base = np.load(real) if real else rng.standard_normal((1000, 384)).astype(np.float32)
    with Store(store) as st:
        for s in range(0, len(ids), 5000):
            chunk = ids[s:s + 5000]
            pair = rng.integers(0, len(base), size=(len(chunk), 2))
            v = base[pair[:, 0]] + base[pair[:, 1]] + 0.5 * rng.standard_normal((len(chunk), 384)) / np.sqrt(384)
            save_vectors(st, chunk, v / np.linalg.norm(v, axis=1, keepdims=True))


def _timed(args: list[str]) -> dict:
    """`alpagasus select ARGS` in a child process: wall time and the child's peak RSS."""
    t0 = time.time()
    p = subprocess.run([sys.executable, "-c", CHILD, "select", *args], capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode:
        raise SystemExit(p.stderr[-2000:])
    rss = int(p.stderr.rsplit("PEAK_RSS_KB ", 1)[1].split()[0]) / 1024
    tail = [line for line in p.stderr.splitlines() if line.startswith(("kept", "diverse", "near-dup", "warning"))]
    return {"seconds": round(wall, 1), "peak_rss_mb": round(rss), "said": tail}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plant")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--out", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--ratings", required=True)
    q.add_argument("--k", type=int, default=150)
    q.add_argument("--store", required=True)
    q.add_argument("--planted")
    q.add_argument("--picks")
    q.add_argument("--work", default="/tmp/bench_selection")
    t = sub.add_parser("timing")
    t.add_argument("--rows", type=int, default=9229)
    t.add_argument("--fraction", type=float, default=0.02, help="budget as a fraction of the rows")
    t.add_argument("--stored", action="store_true")
    t.add_argument("--vectors", help=".npy of real MiniLM vectors to build the synthetic ones from")
    t.add_argument("--only", help="comma-separated: diverse,facility,dedup")
    t.add_argument("--work", default="/tmp/bench_selection")
    a = ap.parse_args()
    {"plant": cmd_plant, "quality": cmd_quality, "timing": cmd_timing}[a.cmd](a)


if __name__ == "__main__":
    main()
