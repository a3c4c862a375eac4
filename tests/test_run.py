"""`alpagasus run` on the tiny offline recipe: end to end, interrupted once and resumed, with the final report.

This is the slowest test (embedded judge + Gemma 3 270M, a few training steps per set): a few minutes on 2 cores.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alpagasus.run.recipe import RecipeError, load_recipe

REPO = Path(__file__).resolve().parents[1]


def test_recipe_validation(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("name: x\ndata: {path: sample:alpaca}\nselect: {treshold: 4}\n")
    with pytest.raises(RecipeError, match="unknown key.*treshold"):
        load_recipe(bad)
    bad.write_text("name: x\n")
    with pytest.raises(RecipeError, match="data.path is required"):
        load_recipe(bad)
    r = load_recipe(REPO / "recipes" / "paper.yaml")
    assert r["select"]["threshold"] == 4.5 and r["train"]["learning_rate"] == 2e-5
    bad.write_text("name: x\ndata: {path: sample:alpaca}\ngenerate: {fraction: 1.5}\n")
    with pytest.raises(RecipeError, match=r"generate.fraction must be in \(0, 1\]"):
        load_recipe(bad)


def test_the_small_recipe_scales_to_the_gpu_one_by_numbers_only():
    """small_gpu.yaml is small.yaml with bigger numbers: same judge, arms, LoRA settings, seeds and test sets."""
    small, gpu = load_recipe(REPO / "recipes" / "small.yaml"), load_recipe(REPO / "recipes" / "small_gpu.yaml")
    changed = []
    for section, values in small.items():
        if section == "name":
            continue
        for key in set(values) | set(gpu[section]):
            a, b = values.get(key), gpu[section].get(key)
            if a != b:
                assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)), (section, key)
                changed.append(f"{section}.{key}")
    assert {"select.top_k", "train.epochs", "generate.fraction"} <= set(changed)
    assert small["select"]["top_k"] >= 200 and small["train"]["lora"] is True
    assert (
        small["select"]["baselines"] == ["matched", "random", "longest", "diverse"]
        and gpu["generate"]["fraction"] == 1.0
    )


def _ratings(run_dir: Path) -> list[dict]:
    rows = [
        {
            "instruction": f"i{i}",
            "input": "",
            "output": "x" * (i + 1),
            "id": f"id{i}",
            "score": s,
            "status": "ok",
            "judge": "j",
            "flags": ["injection"] if i in (0, 5) else [],
        }
        for i, s in enumerate([5, 4.5, 2.0, 4.8, 3.0, 1.0, 4.6, 3.5])
    ]
    run_dir.mkdir(parents=True)
    (run_dir / "ratings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.mark.parametrize("exclude", [False, True])
def test_select_stage_is_the_cli_selection(tmp_path, exclude):
    """The recipe selects through `select_file`, with its options: the sets are what `alpagasus select` writes."""
    from alpagasus.run.recipe import run_recipe
    from alpagasus.select.files import select_file

    run_dir = tmp_path / "run"
    _ratings(run_dir)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: x\ndata: {path: sample:alpaca}\n"
        f"select: {{threshold: 4.5, seed: 3, exclude_flagged: {str(exclude).lower()}}}\n"
    )
    res = run_recipe(recipe, run_dir, only="select", log=lambda m: None)
    n = 3 if exclude else 4
    assert res["select"]["sizes"] == {"filtered": n, "random": n, "longest": n, "all": 6 if exclude else 8}
    for name, rule, value in (
        ("filtered", "threshold", 4.5),
        ("random", "random", n),
        ("longest", "longest", n),
        ("all", "all", None),
    ):
        got = json.loads((run_dir / "sets" / f"{name}.json").read_text())
        select_file(run_dir / "ratings.jsonl", tmp_path / "want.json", rule, value, seed=3, exclude_flagged=exclude)
        assert got == json.loads((tmp_path / "want.json").read_text())
        assert all("score" not in r for r in got)
        assert exclude is False or not {"i0", "i5"} & {r["instruction"] for r in got}


def test_select_stage_keeping_nothing_fails_and_writes_nothing(tmp_path):
    from alpagasus.run.recipe import run_recipe

    run_dir = tmp_path / "run"
    _ratings(run_dir)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\ndata: {path: sample:alpaca}\nselect: {threshold: 5.5}\n")
    with pytest.raises(RecipeError, match="kept no example"):
        run_recipe(recipe, run_dir, only="select", log=lambda m: None)
    assert not (run_dir / "sets" / "filtered.json").exists() and not (run_dir / ".done" / "select.json").exists()


@pytest.mark.slow
def test_tiny_recipe_interrupted_and_resumed(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "alpagasus.cli",
        "run",
        str(REPO / "recipes" / "tiny_offline.yaml"),
        "--run-dir",
        str(run_dir),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    # interrupt once training has begun (the rate and select stages are then done)
    deadline = time.time() + 1200
    while time.time() < deadline and not (run_dir / ".done" / "select.json").exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(1)
    time.sleep(5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    rate_marker = json.loads((run_dir / ".done" / "rate.json").read_text())
    assert not (run_dir / ".done" / "report.json").exists()

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    err = " ".join(done.stderr.split())
    assert "[rate] done already, skipped" in err and "[select] done already, skipped" in err
    assert json.loads((run_dir / ".done" / "rate.json").read_text()) == rate_marker  # not redone

    final = json.loads((run_dir / "final.json").read_text())
    sizes = final["selection_sizes"]
    assert sizes["filtered"] == sizes["random"] == sizes["longest"] == 24 and sizes["all"] == 120
    assert set(final["comparisons"]) == {"filtered vs random", "filtered vs longest", "filtered vs all"}
    for c in final["comparisons"].values():
        res = c["results"]
        assert set(res) >= {"vicuna", "koala", "sinstruct", "wizardlm", "all"}
        # every question was judged in both orders: it has an outcome or is counted unparsed, never a silent tie
        a = res["all"]
        assert a["questions"] == 4 and a["win"] + a["tie"] + a["lose"] + a["unparsed"] + a.get("failed", 0) == 4
        # the offline pairwise judge (compare's default) gives real verdicts, with the interval and its sentence
        assert a["judged"] == 4 and len(a["winning_score_ci"]) == 2 and "too few" in a["noise"]
        assert c["judge"].startswith("pointwise:") and "not measurable" in c["position_bias"]
    assert all(t and t > 0 for t in final["train_time_s"].values())
    assert final["train_time_reference"] == "all" and final["train_time_ratio"]["all"] == 1.0
    assert set(final["mean_output_chars"]) == set(sizes) and all(v > 0 for v in final["mean_output_chars"].values())
    for name in ("filtered", "random", "longest", "all"):
        metrics = json.loads((run_dir / "models" / name / "metrics.json").read_text())
        assert metrics["steps"] == 2
        answers = [json.loads(l) for l in (run_dir / "answers" / f"{name}.jsonl").read_text().splitlines()]
        assert len(answers) == 4 and {a["testset"] for a in answers} == {"vicuna", "koala", "sinstruct", "wizardlm"}
    page = (run_dir / "final.html").read_text()
    assert "filtered vs random" in page and "data:image/png;base64," in page
    assert (run_dir / "report" / "index.html").exists() and done.stdout.strip().endswith("final.html")


def test_the_final_report_gives_each_sets_length_and_loss_and_warns_when_a_model_did_not_learn(tmp_path):
    from alpagasus.run.final_report import (
        SET_NOTE,
        _html,
        _markdown,
        loss_change,
        mean_output_chars,
        set_rows,
        training_notes,
    )

    assert loss_change([{"step": 1, "loss": 2.0}]) is None
    assert loss_change([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]) == {
        "first": 2.0,
        "last": 1.5,
        "fell": True,
        "steps_averaged": 1,
    }
    # quarters, not single batches: one noisy last batch above the first does not hide a falling loss
    noisy = [{"step": i + 1, "loss": v} for i, v in enumerate([2.6, 2.4, 2.0, 1.8, 1.7, 1.6, 1.5, 2.7])]
    assert loss_change(noisy) == {"first": 2.5, "last": 2.1, "fell": True, "steps_averaged": 2}
    flat = [{"step": i + 1, "loss": v} for i, v in enumerate([2.0, 2.2, 2.1, 2.3, 2.2, 2.4, 2.3, 2.5])]
    assert loss_change(flat)["fell"] is False
    rows = [{"instruction": "i", "input": "", "output": "abcd"}, {"messages": [{"role": "user", "content": "i"}]}]
    rows[1]["messages"].append({"role": "assistant", "content": "ab"})  # any row format: the response's length
    (tmp_path / "s.json").write_text(json.dumps(rows))
    assert mean_output_chars(tmp_path / "s.json") == 3.0 and mean_output_chars(tmp_path / "missing.json") is None
    d = {
        "name": "x",
        "judge": "j",
        "selection_sizes": {"filtered": 2, "random": 2},
        "train_time_s": {"filtered": 10.0, "random": 12.0},
        "train_time_ratio": {"random": 1.2},
        "train_time_reference": "filtered",
        "mean_output_chars": {"filtered": 3.0, "random": 40.5},
        "train_loss": {
            "filtered": {"first": 2.0, "last": 1.5, "fell": True},
            "random": {"first": 2.0, "last": 2.1, "fell": False},
        },
        "comparisons": {},
    }
    assert set_rows(d)[0] == ["filtered", "2", "3.000", "10.000", "-", "2.000 -> 1.500"]
    assert set_rows(d)[1][4] == "1.200"
    for page in (_markdown(d), _html(d, tmp_path)):  # both say what the ratio is to and how the loss is read
        assert "time ratio to filtered" in page and SET_NOTE in page
    notes = training_notes(d)
    assert len(notes) == 1 and "'random' did not learn" in notes[0]
    assert notes[0] in _markdown(d)
