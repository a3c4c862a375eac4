"""Chat datasets end to end (issue 25): a 200-row OpenAI `messages` JSONL (system prompts, two-exchange rows)
and a ShareGPT file, both made of real Alpaca rows, through `alpagasus rate` (the offline default judge),
`report` and `select` (--top-k, --diverse, --dedup, --random, --match-length): every selected row is an input
row exactly as read, in the input's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alpagasus.cli import app
from alpagasus.prompts import builtin_text
from alpagasus.ratings_file import RATING_FIELDS, RATING_PREFIX, rating_field, user_fields

pytestmark = pytest.mark.slow  # 200 conversations rated, reported and selected through the CLI (MiniLM for --diverse)

# A real system prompt: the preamble of the Alpaca prompt (prompts/alpaca_no_input.txt)
SYSTEM = builtin_text("alpaca_no_input").split("\n\n")[0]


def _user(r: dict) -> str:
    return r["instruction"] + ("\n\n" + r["input"] if r["input"].strip() else "")


def messages_rows(alpaca: list[dict], n: int = 200) -> list[dict]:
    """n conversations from 2n real Alpaca rows: a third single-turn with the system prompt, a third two
    exchanges (two rows joined) with it, a third two exchanges without."""
    good = [r for r in alpaca if r["output"].strip()]
    out = []
    for i in range(n):
        a, b = good[2 * i], good[2 * i + 1]
        turns = [{"role": "user", "content": _user(a)}, {"role": "assistant", "content": a["output"]}]
        if i % 3:
            turns += [{"role": "user", "content": _user(b)}, {"role": "assistant", "content": b["output"]}]
        if i % 3 < 2:
            turns.insert(0, {"role": "system", "content": SYSTEM})
        out.append({"messages": turns, "source": f"alpaca-{2 * i}"})
    return out


def sharegpt_rows(chat: list[dict]) -> list[dict]:
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return [
        {"id": r["source"], "conversations": [{"from": names[t["role"]], "value": t["content"]} for t in r["messages"]]}
        for r in chat
    ]


def cli(*args: str) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


def read_rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def rated(tmp_path_factory, alpaca_rows):
    """Both files rated once into one store; two broken conversations in the messages file."""
    d = tmp_path_factory.mktemp("chat")
    chat = messages_rows(alpaca_rows)
    broken = [
        {"messages": chat[1]["messages"][:4], "source": "ends-in-user"},
        {"messages": [chat[0]["messages"][1], {"role": "bot", "content": "x"}], "source": "bad-role"},
    ]
    src = d / "chat.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chat[:100] + broken + chat[100:]))
    share = d / "sharegpt.json"
    share.write_text(json.dumps(sharegpt_rows(chat[:60]), ensure_ascii=False))
    store = d / "store.sqlite"
    out = {"chat": chat, "share": sharegpt_rows(chat[:60]), "dir": d, "store": store, "src": src, "share_src": share}
    out["log"] = cli("rate", src, "-o", d / "ratings.jsonl", "--store", store, "--skip-invalid")
    cli("rate", share, "-o", d / "share_ratings.jsonl", "--store", store)
    return out


def test_rate_reads_conversations_and_lists_the_broken_rows(rated):
    got = read_rows(rated["dir"] / "ratings.jsonl")
    assert len(got) == 202
    ok = [g for g in got if rating_field(g, "status") == "ok"]
    assert len(ok) == 200 and all(0 <= rating_field(g, "score") <= 5 for g in ok)
    assert [user_fields(g) for g in ok] == rated["chat"]  # each row as read, under its own names, in order
    bad = {rating_field(g, "row"): (rating_field(g, "field"), rating_field(g, "explanation")) for g in got[200:]}
    assert bad[101][0] == "messages" and "ends in a user turn" in bad[101][1]
    assert bad[102] == ("messages[1].role", "'bot' is not system/user/assistant")
    assert "row 102, field 'messages[1].role'" in rated["log"]
    share = read_rows(rated["dir"] / "share_ratings.jsonl")
    assert [user_fields(g) for g in share] == rated["share"]
    # the same conversation in either format is the same content: one rating, shared
    assert [rating_field(g, "id") for g in share] == [rating_field(g, "id") for g in ok[:60]]


def test_report_reads_a_chat_ratings_file(rated):
    cli("report", rated["dir"] / "ratings.jsonl", "-o", rated["dir"] / "report")
    assert (rated["dir"] / "report" / "index.html").is_file()


@pytest.mark.parametrize(
    "name,args",
    [
        ("top.jsonl", ["--top-k", "50"]),
        ("diverse.jsonl", ["--top-k", "30", "--diverse"]),
        ("dedup.json", ["--top-k", "120", "--dedup"]),
        ("random.jsonl", ["--random", "40"]),
    ],
)
def test_select_writes_the_input_rows_exactly(rated, name, args):
    out = rated["dir"] / name
    cli("select", rated["dir"] / "ratings.jsonl", "-o", out, "--store", rated["store"], *args)
    picked = read_rows(out)
    k = int(args[1])
    assert len(picked) == k if "--dedup" not in args else 0 < len(picked) <= k
    order = {json.dumps(r, sort_keys=True): i for i, r in enumerate(rated["chat"])}
    where = [order[json.dumps(r, sort_keys=True)] for r in picked]  # KeyError: not an input row as read
    assert where == sorted(where)  # input order
    assert all(set(r) == {"messages", "source"} for r in picked)  # the input's format, no rating column
    assert not any(k in r or RATING_PREFIX + k in r for r in picked for k in RATING_FIELDS)


def test_select_the_length_matched_baseline_and_sharegpt(rated):
    d = rated["dir"]
    cli("select", d / "ratings.jsonl", "-o", d / "ref.jsonl", "--top-k", "30")
    log = cli(
        "select", d / "ratings.jsonl", "-o", d / "matched.jsonl", "--random", "30", "--match-length", d / "ref.jsonl"
    )
    assert "length-matched to" in log and len(read_rows(d / "matched.jsonl")) == 30
    cli("select", d / "share_ratings.jsonl", "-o", d / "share_top.json", "--top-k", "20", "--format", "sharegpt")
    picked = read_rows(d / "share_top.json")
    assert len(picked) == 20 and all(r in rated["share"] for r in picked)
    assert all(list(r) == ["id", "conversations"] for r in picked)  # keys in the order read


def test_a_named_format_the_rows_do_not_fit_names_file_row_and_field(rated, tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "rate",
            str(rated["src"]),
            "-o",
            str(tmp_path / "r.jsonl"),
            "--store",
            str(tmp_path / "s.sqlite"),
            "--format",
            "sharegpt",
        ],
    )
    assert res.exit_code == 2 and "chat.jsonl, row 1, field 'conversations': missing" in res.output
    res = CliRunner().invoke(
        app,
        [
            "select",
            str(rated["dir"] / "ratings.jsonl"),
            "-o",
            str(tmp_path / "x.jsonl"),
            "--top-k",
            "5",
            "--format",
            "sharegpt",
        ],
    )
    assert res.exit_code == 2 and "ratings.jsonl, row 1, field 'conversations': missing" in res.output


def test_the_judge_sees_the_conversation_in_the_instructions_place(rated):
    from alpagasus.data import read_examples
    from alpagasus.prompts.template import load_template
    from alpagasus.rate.loop import build_request

    two = read_examples(rated["src"], skip_invalid=True).examples[1]  # system + two exchanges
    req = build_request(two, load_template("accuracy"), "generate")
    turns = two.fields()["messages"]
    context = "\n\n".join(f"{t['role'].title()}: {t['content']}" for t in turns[:-1])
    assert f"###Instruction:\n{context}\n\n### Input:\n\n\n### Response:\n{turns[-1]['content']}\n" in req.user


@pytest.mark.slow
def test_the_selection_of_the_200_row_file_trains(rated, tiny_model, tmp_path):
    """The whole chain on the 200-row file: rated, selected in its own format, then `train --max-steps 2` on the
    selection (a tiny model given a marked ChatML template, so the loss falls on the assistant turns only)."""
    from test_train_chat import MARKED_CHATML, variant

    picked = rated["dir"] / "train_sel.jsonl"
    cli("select", rated["dir"] / "ratings.jsonl", "-o", picked, "--store", rated["store"], "--top-k", "24")
    base = variant(tiny_model, tmp_path / "marked", MARKED_CHATML)
    run = tmp_path / "run"
    cli(
        "train",
        picked,
        "-o",
        run,
        "--base",
        base,
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--per-device-batch-size",
        "4",
        "--max-length",
        "128",
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["examples"] == 24 and metrics["chat_template"] == "model"
    assert 0 < metrics["dataset_response_tokens"] < metrics["dataset_tokens"]  # the loss is not on the prompts
