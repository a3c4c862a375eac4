"""Every user mistake is a message, not a traceback: bad paths, bad names, bad values and bad recipes, each run
as a real `alpagasus` subprocess, end with exit status 2 and `error: ...` (or click's usage error) naming what
is wrong, and never with "Traceback".

The table holds (argv, exit status, a fragment of the message); paths in it are relative to a directory of
fixtures built once (a dataset, a ratings file, answer files, recipes, a directory, garbage). An API judge
points at a closed port: every case fails before a request would be sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import plain

REFUSED = "http://127.0.0.1:9/v1"  # nothing listens there
OJ = ["--judge", "openai:m", "--base-url", REFUSED, "--store", "o/s.sqlite"]
ROWS = [{"instruction": f"Say {i}", "input": "", "output": f"Answer number {i} is here."} for i in range(4)]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli_errors")
    (d / "o").mkdir()
    (d / "adir").mkdir()
    _jsonl(d / "data.jsonl", ROWS)
    _jsonl(d / "data_q.jsonl", [{"question": r["instruction"], "input": "", "output": r["output"]} for r in ROWS])
    _jsonl(
        d / "ratings.jsonl",
        [
            dict(r, id=f"{i:016x}", row=i + 1, score=float(i + 2), status="ok", judge="x", prompt_version="v", flags=[])
            for i, r in enumerate(ROWS)
        ],
    )
    _jsonl(
        d / "big.jsonl",
        [
            dict(
                instruction=f"Task {i}",
                input="",
                output=f"Answer {i} " * (1 + i % 5),
                id=f"{i:016x}",
                score=5.0 if i % 2 else 2.0,
                status="ok",
            )
            for i in range(40)
        ],
    )
    for name, model in (("a.jsonl", "ma"), ("b.jsonl", "mb")):
        _jsonl(
            d / name,
            [
                {"testset": "vicuna", "question_id": i, "question": f"Q{i}", "answer": f"A {model} {i}", "model": model}
                for i in (1, 2)
            ],
        )
    _jsonl(d / "questions_bad.jsonl", [{"nope": 1}])
    (d / "garbage.jsonl").write_bytes(b"\x00\xff\xfe garbage \x89PNG\n\x01\x02")
    (d / "garbage.json").write_bytes(b"\x00\xff\xfe garbage")
    (d / "prompt_bad.txt").write_text("no placeholders here\n")
    rate = f"rate: {{judge: 'openai:m', base_url: '{REFUSED}', store: o/s.sqlite}}\n"
    recipes = {
        "malformed.yaml": "name: x\ndata: [unclosed\n  path: : :\n",
        "unknown_key.yaml": "name: x\ndata: {path: data.jsonl}\nrate: {judgee: 'openai:m'}\n",
        "unknown_section.yaml": "name: x\ndata: {path: data.jsonl}\nrat: {}\n",
        "list.yaml": "- a\n- b\n",
        "nopath.yaml": "name: x\n",
        "missing_data.yaml": "name: x\ndata: {path: nope.jsonl}\n" + rate,
        "bad_judge.yaml": "name: x\ndata: {path: data.jsonl}\nrate: {judge: 'nosuch:m'}\n",
        "bad_limit.yaml": "name: x\ndata: {path: data.jsonl, limit: -3}\n" + rate,
        "bad_number.yaml": "name: x\ndata: {path: data.jsonl}\nrate: {max_tokens: abc}\n",
        "bad_train.yaml": "name: x\ndata: {path: data.jsonl}\ntrain: {nosuch: 1}\n",
        "bad_select.yaml": "name: x\ndata: {path: data.jsonl}\nselect: {keep_fraction: 2}\n",
        "bad_baselines.yaml": "name: x\ndata: {path: data.jsonl}\nselect: {baselines: [random, best]}\n",
        "train_bad.yaml": "nosuch_field: 3\n",
    }
    for name, text in recipes.items():
        (d / name).write_text(text)
    return d


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


GEN = ["generate", "m", "--backend", "openai", "--base-url", REFUSED, "-o", "o/g.jsonl"]
CASES = [
    # rate: paths
    (["rate", "nope.jsonl", "-o", "o/r.jsonl", *OJ], 2, "nope.jsonl: no such file"),
    (["rate", "adir", "-o", "o/r.jsonl", *OJ], 2, "adir"),
    (["rate", "garbage.json", "-o", "o/r.jsonl", *OJ], 2, "malformed JSON"),
    (["rate", "prompt_bad.txt", "-o", "o/r.jsonl", *OJ], 2, "unknown format"),
    (["rate", "tatsu-lab/alpaca", "-o", "o/r.jsonl", *OJ], 2, "tatsu-lab/alpaca"),
    (["rate", "sample:nosuch", "-o", "o/r.jsonl", *OJ], 2, "no such bundled sample"),
    (
        ["rate", "data.jsonl", "-o", "o/r.jsonl", *OJ[:4], "--store", "garbage.json"],
        2,
        "is damaged (file is not a database)",
    ),
    # rate: names
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--judge", "nosuch:m"], 2, "unknown judge backend 'nosuch'"),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--judge", "openai"], 2, "needs a model name"),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--judge", "openai:m"], 2, "set OPENAI_API_KEY"),
    (
        ["rate", "data.jsonl", "-o", "o/r.jsonl", "--judge", "hf:/no/such/model", "--store", "o/s.sqlite"],
        2,
        "/no/such/model: no such model directory",
    ),
    (
        ["rate", "data.jsonl", "-o", "o/r.jsonl", "--judge", "hf:nosuchorg/nosuchmodel", "--store", "o/s.sqlite"],
        2,
        "nosuchorg/nosuchmodel: cannot load the model",
    ),
    (
        ["rate", "data.jsonl", "-o", "o/r.jsonl", "--judge", "embedded:nosuch", "--store", "o/s.sqlite"],
        2,
        "unknown embedded model 'nosuch'",
    ),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--judge", "predictor:nosuch"], 2, "no predictor 'nosuch'"),
    (
        ["rate", "data.jsonl", "-o", "o/r.jsonl", "--judge", "predictor:alpaca-claude-accuracy", "--device", "cpu"],
        2,
        "does not take device",
    ),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--dimension", "beauty", *OJ], 2, "no template 'beauty'"),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--prompt", "nope.txt", *OJ], 2, "no template 'nope.txt'"),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--prompt", "prompt_bad.txt", *OJ], 2, "no <<<user>>> section"),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--mode", "nosuch", *OJ], 2, "mode must be generate or logprob"),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--scale", "abc", *OJ], 2, "bad scale 'abc'"),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--scale", "5-1", *OJ], 2, "bad scale '5-1'"),
    # rate: values
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--limit", "-1", *OJ], 2, "'--limit'"),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--limit", "abc", *OJ], 2, "'--limit'"),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--sample", "-1", *OJ], 2, "'--sample'"),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--concurrency", "0", *OJ], 2, "'--concurrency'"),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--timeout", "0", *OJ], 2, "'--timeout'"),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--max-attempts", "0", *OJ], 2, "'--max-attempts'"),
    (["rate", "data.jsonl", "-o", "o/r.jsonl", "--field", "bogus", *OJ], 2, "--field 'bogus'"),
    (["rate", "data_q.jsonl", "-o", "o/r.jsonl", "--field", "instruction=missingcol", *OJ], 2, "field 'missingcol'"),
    # select, show, report
    (["select", "nope.jsonl", "-o", "o/s.json", "--top-k", "2"], 2, "nope.jsonl"),
    (["select", "adir", "-o", "o/s.json", "--top-k", "2"], 2, "adir"),
    (["select", "garbage.jsonl", "-o", "o/s.json", "--top-k", "2"], 2, "malformed JSON"),
    (["select", "ratings.jsonl", "-o", "o/s.json", "--top-k", "-1"], 2, "K >= 0"),
    (["select", "ratings.jsonl", "-o", "o/s.json", "--keep-fraction", "2"], 2, "(0, 1]"),
    (["select", "ratings.jsonl", "-o", "o/s.json", "--threshold", "abc"], 2, "'--threshold'"),
    (["select", "ratings.jsonl", "-o", "o/s.json", "--threshold", "nan"], 2, "--threshold must be a number"),
    (["select", "ratings.jsonl", "-o", "o/s.json"], 2, "choose exactly one"),
    (["select", "ratings.jsonl", "-o", "o/s.xyz", "--top-k", "2"], 2, "unknown output format"),
    (["select", "ratings.jsonl", "-o", "data.jsonl/s.json", "--top-k", "2"], 2, "data.jsonl"),
    (["show", "nope.jsonl"], 2, "nope.jsonl: No such file"),
    (["show", "adir"], 2, "adir: Is a directory"),
    (["show", "garbage.jsonl"], 2, "malformed JSON"),
    (["show", "ratings.jsonl", "--status", "nosuch"], 2, "--status must be one of"),
    (["report", "nope.jsonl", "-o", "o/rep"], 2, "no such ratings file"),
    (["report", "garbage.jsonl", "-o", "o/rep"], 2, "malformed JSON"),
    (["report", "data.jsonl", "-o", "o/rep"], 2, "alpagasus rate"),
    (["report", "ratings.jsonl", "-o", "data.jsonl"], 2, "data.jsonl"),
    (["report", "ratings.jsonl", "-o", "o/rep", "--threshold", "nan"], 2, "--threshold must be a number"),
    # compare
    (["compare", "nope.jsonl", "b.jsonl", "-o", "o/c", *OJ], 2, "nope.jsonl: no such file"),
    (["compare", "adir", "b.jsonl", "-o", "o/c", *OJ], 2, "adir"),
    (["compare", "garbage.jsonl", "b.jsonl", "-o", "o/c", *OJ], 2, "malformed JSON"),
    (["compare", "a.jsonl", "-o", "o/c", *OJ], 2, "give two answer files"),
    (["compare", "a.jsonl", "b.jsonl", "-o", "o/c", "--judge", "nosuch:m"], 2, "unknown judge backend"),
    (
        ["compare", "a.jsonl", "b.jsonl", "-o", "o/c", "--judge", "hf:/no/such", "--store", "o/s.sqlite"],
        2,
        "/no/such: no such model directory",
    ),
    (["compare", "a.jsonl", "b.jsonl", "-o", "o/c", "--judge", "predictor:alpaca-claude-accuracy"], 2, "only predicts"),
    (["compare", "a.jsonl", "b.jsonl", "-o", "o/c", "--limit", "-1", *OJ], 2, "'--limit'"),
    (["compare", "a.jsonl", "b.jsonl", "-o", "data.jsonl", *OJ], 2, "a file, not a directory"),
    (["compare", "a.jsonl", "b.jsonl", "-o", "o/c", "--capacity", *OJ], 2, "--capacity needs --reference"),
    (
        [
            "compare",
            "-o",
            "o/c",
            "--reviews-ab",
            "nope.jsonl",
            "--reviews-ba",
            "nope.jsonl",
            "--model-a",
            "x",
            "--model-b",
            "y",
        ],
        2,
        "nope.jsonl: no such file",
    ),
    (
        ["compare", "a.jsonl", "b.jsonl", "-o", "o/c", *OJ[:4], "--store", "garbage.json"],
        2,
        "is damaged (file is not a database)",
    ),
    # train
    (["train", "nope.json", "-o", "o/t"], 2, "nope.json: no such file"),
    (["train", "adir", "-o", "o/t"], 2, "adir"),
    (["train", "garbage.json", "-o", "o/t"], 2, "malformed JSON"),
    (["train", "data.jsonl", "-o", "o/t", "--recipe", "nope.yaml"], 2, "cannot read recipe"),
    (["train", "data.jsonl", "-o", "o/t", "--recipe", "malformed.yaml"], 2, "cannot read recipe"),
    (["train", "data.jsonl", "-o", "o/t", "--recipe", "train_bad.yaml"], 2, "unknown training setting"),
    (["train", "data.jsonl", "-o", "o/t", "--recipe", "list.yaml"], 2, "a recipe is a mapping"),
    (["train", "data.jsonl", "-o", "o/t", "--epochs", "-1"], 2, "epochs must be > 0"),
    (["train", "data.jsonl", "-o", "o/t", "--max-steps", "-5"], 2, "max_steps must be at least 1"),
    (["train", "data.jsonl", "-o", "o/t", "--batch-size", "0"], 2, "batch_size must be at least 1"),
    (["train", "data.jsonl", "-o", "o/t", "--precision", "fp7"], 2, "precision must be"),
    (["train", "data.jsonl", "-o", "o/t", "--lr", "abc"], 2, "'--lr'"),
    (["train", "data.jsonl", "-o", "data.jsonl"], 2, "a file, not a run directory"),
    (
        ["train", "data.jsonl", "-o", "o/t", "--base", "embedded:nosuch", "--max-steps", "1"],
        2,
        "unknown embedded model",
    ),
    # generate
    (
        ["generate", "/no/such/model", "-t", "vicuna", "-o", "o/g.jsonl", "--limit", "1"],
        2,
        "/no/such/model: no such model directory",
    ),
    (["generate", "embedded:nosuch", "-t", "vicuna", "-o", "o/g.jsonl", "--limit", "1"], 2, "unknown embedded model"),
    ([*GEN, "-t", "nosuch"], 2, "not a bundled test set"),
    ([*GEN, "-t", "adir"], 2, "a directory, not a JSONL file"),
    ([*GEN, "-t", "questions_bad.jsonl"], 2, "field 'question_id'"),
    ([*GEN, "-t", "garbage.jsonl"], 2, "malformed JSON"),
    ([*GEN, "-t", "vicuna", "--limit", "-1"], 2, "limit must be >= 0"),
    ([*GEN, "-t", "vicuna", "--concurrency", "0"], 2, "concurrency must be at least 1"),
    ([*GEN, "-t", "vicuna", "--max-new-tokens", "0"], 2, "must be at least 1"),
    ([*GEN, "-t", "vicuna", "--temperature", "-1"], 2, "temperature must be >= 0"),
    (["generate", "m", "--backend", "nosuch", "-t", "vicuna", "-o", "o/g.jsonl"], 2, "backend must be one of"),
    (["generate", "m", "--backend", "openai", "-t", "vicuna", "-o", "o/g.jsonl"], 2, "--base-url"),
    (
        ["generate", "m", "--backend", "openai", "--base-url", REFUSED, "-t", "vicuna", "-o", "adir"],
        2,
        "adir: not a file",
    ),
    # distill
    (["distill", "nope.jsonl", "-o", "o/d"], 2, "nope.jsonl: no such file"),
    (["distill", "adir", "-o", "o/d"], 2, "adir"),
    (["distill", "garbage.jsonl", "-o", "o/d"], 2, "garbage.jsonl"),
    (["distill", "ratings.jsonl", "-o", "o/d", "--label", "nosuch"], 2, "no label column 'nosuch'"),
    (["distill", "ratings.jsonl", "-o", "o/d", "--field", "bogus"], 2, "--field 'bogus'"),
    (["distill", "big.jsonl", "-o", "o/d", "--head", "nosuch"], 2, "unknown head 'nosuch'"),
    (["distill", "big.jsonl", "-o", "o/d", "--holdout", "2"], 2, "--holdout must be in"),
    (["distill", "big.jsonl", "-o", "o/d", "--cache", "garbage.json"], 2, "garbage.json: not a feature cache"),
    # run
    (["run", "nope.yaml", "--run-dir", "o/r"], 2, "cannot read the recipe"),
    (["run", "adir", "--run-dir", "o/r"], 2, "cannot read the recipe"),
    (["run", "malformed.yaml", "--run-dir", "o/r"], 2, "[unclosed"),
    (["run", "unknown_key.yaml", "--run-dir", "o/r"], 2, "unknown key(s) judgee in 'rate'"),
    (["run", "unknown_section.yaml", "--run-dir", "o/r"], 2, "unknown section 'rat'"),
    (["run", "list.yaml", "--run-dir", "o/r"], 2, "a recipe is a mapping"),
    (["run", "nopath.yaml", "--run-dir", "o/r"], 2, "data.path is required"),
    (["run", "missing_data.yaml", "--run-dir", "o/r", "--until", "rate"], 2, "nope.jsonl: no such file"),
    (["run", "bad_judge.yaml", "--run-dir", "o/r", "--until", "rate"], 2, "unknown judge backend"),
    (["run", "bad_limit.yaml", "--run-dir", "o/r"], 2, "data.limit must be at least 0"),
    (["run", "bad_number.yaml", "--run-dir", "o/r"], 2, "rate.max_tokens must be an integer"),
    (["run", "bad_train.yaml", "--run-dir", "o/r"], 2, "unknown training setting 'nosuch'"),
    (["run", "bad_select.yaml", "--run-dir", "o/r"], 2, "select.keep_fraction must be in (0, 1]"),
    (["run", "bad_baselines.yaml", "--run-dir", "o/r"], 2, "select.baselines"),
    (["run", "unknown_key.yaml", "--run-dir", "o/r", "--until", "nosuch"], 2, "unknown stage 'nosuch'"),
    (["run", "missing_data.yaml", "--run-dir", "data.jsonl"], 2, "a file, not a run directory"),
    (["run", "missing_data.yaml", "--run-dir", "o/r2", "--only", "report"], 2, "no such ratings file"),
    (["run", "missing_data.yaml", "--run-dir", "o/r3", "--only", "generate"], 2, "no such model directory"),
    # serve
    (["serve", "--model", "/no/such/model", "--port", "0"], 2, "/no/such/model: no such model directory"),
    (["serve", "--model", "embedded:nosuch", "--port", "0"], 2, "unknown embedded model"),
    (["serve", "--port", "-1"], 2, "'--port'"),
]


def _loads_torch(argv: list[str]) -> bool:
    """The mistake is found after torch, transformers or scikit-learn are imported (3-6 CPU s each, against
    0.4 s for the others): these cases are marked slow, left out of the inner loop (`-m "not slow"`)."""
    said = " ".join(argv)
    return any(k in said for k in ("hf:", "embedded:", "/no/such", "--head", "--holdout", "--only generate"))


@pytest.mark.parametrize(
    "argv,code,fragment",
    [pytest.param(*c, marks=pytest.mark.slow) if _loads_torch(c[0]) else c for c in CASES],
    ids=[" ".join(c[0][:2]) + f" #{i}" for i, c in enumerate(CASES)],
)
def test_a_user_mistake_is_a_message(fixtures, argv, code, fragment):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ALPAGASUS_DEBUG")}
    p = subprocess.run(
        [sys.executable, "-m", "alpagasus.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=fixtures,
        timeout=300,
    )
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    said = plain(p.stderr)  # click draws its usage errors in a box
    assert p.returncode == code, said[-2000:]
    assert fragment in said, said[-2000:]
    if not said.startswith("Usage:"):  # ours, not click's: one `error:` line
        assert "error:" in said, said[-2000:]
