"""Training wall time against dataset size: the saving AlpaGasus claims comes from training on fewer rows.

Trains the same small random Llama (built here, no download) for one epoch on N and 5N real Alpaca rows with
identical settings, so the optimizer steps are proportional to the rows, and prints the times and their ratio.
The last line is one JSON object.

    python bench/train_scaling.py            # 500 vs 2,500 rows, 4 layers x 256 wide, vocab 2,000
    python bench/train_scaling.py --quick    # 200 vs 1,000 rows, the 2-layer x 64 test model, vocab 800

Needs the shared data (ALPAGASUS_SHARED_DATA or ../shared/data).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import SHARED_DATA, build_tiny_model  # noqa: E402  (the test suite's model builder)

from alpagasus.train import TrainConfig, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and model (shared CPUs)")
    parser.add_argument("--sizes", type=int, nargs=2, help="the two dataset sizes (rows)")
    opts = parser.parse_args()
    sizes = opts.sizes or ([200, 1000] if opts.quick else [500, 2500])
    model_shape = dict(layers=2, hidden=64, vocab=800) if opts.quick else dict(layers=4, hidden=256, vocab=2000)

    rows = [r for r in json.loads((SHARED_DATA / "alpaca" / "alpaca_random_9k.json").read_text())
            if r["output"].strip()]
    import torch
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory(prefix="alpagasus-bench-") as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        texts = [f"{r['instruction']} {r['input']} {r['output']}" for r in rows[:2000]]
        t0 = time.perf_counter()
        base = build_tiny_model(Path(tmp) / "model", texts, **model_shape)
        build_s = time.perf_counter() - t0
        params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(base).parameters())
        print(f"model: random Llama {model_shape}, {params / 1e6:.2f}M parameters (built in {build_s:.1f} s); "
              f"torch threads {torch.get_num_threads()}")
        results = []
        for n in sizes:
            config = TrainConfig(base=str(base), epochs=1, batch_size=16, per_device_batch_size=8, max_length=256,
                                 learning_rate=2e-4, save_steps=10_000, logging_steps=10)
            m = train(rows[:n], Path(tmp) / f"run-{n}", config)
            results.append({"rows": n, "steps": m["steps"], "train_time_s": m["train_time_s"],
                            "wall_time_s": m["wall_time_s"], "tokens_seen": m["tokens_seen"],
                            "s_per_step": round(m["train_time_s"] / m["steps"], 4),
                            "tokens_per_s": round(m["tokens_seen"] / m["train_time_s"], 1),
                            "final_loss": round(m["final_loss"], 4)})
            r = results[-1]
            print(f"{n:>6} rows: {r['steps']:>4} steps, train {r['train_time_s']:.1f} s "
                  f"(wall {r['wall_time_s']:.1f} s incl. load/save), {r['s_per_step']:.3f} s/step, "
                  f"{r['tokens_per_s']:.0f} tokens/s, final loss {r['final_loss']}")
    small, large = results
    time_ratio = large["train_time_s"] / small["train_time_s"]
    rows_ratio = large["rows"] / small["rows"]
    print(f"time ratio {time_ratio:.2f} for a row ratio of {rows_ratio:.2f} "
          f"(steps ratio {large['steps'] / small['steps']:.2f})")
    print(json.dumps({"bench": "train_scaling", "quick": opts.quick, "model": model_shape,
                      "parameters": params, "runs": results, "time_ratio": round(time_ratio, 3),
                      "rows_ratio": rows_ratio}))


if __name__ == "__main__":
    main()
