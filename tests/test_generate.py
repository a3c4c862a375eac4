"""Answer generation: the bundled test sets, the CLI's output rows, resume, prompts shared with training, and
the OpenAI-compatible backend against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from alpagasus import testsets
from alpagasus.alpaca import STOP_STRINGS, alpaca_prompt, tokenize_example
from alpagasus.cli import app
from alpagasus.data import DataError
from alpagasus.generate.answer import generate, read_answer_file
from alpagasus.generate.backends import encode_prompts
from alpagasus.generate.config import GenerateConfig

ROW_FIELDS = {"testset", "question_id", "question", "answer", "model", "settings"}


def test_bundled_testsets():
    sizes = {name: len(testsets.load(name)) for name in testsets.NAMES}
    assert sizes == {"vicuna": 80, "koala": 180, "sinstruct": 252, "wizardlm": 218}
    for name in testsets.NAMES:
        ids = [q.question_id for q in testsets.load(name)]
        assert len(set(ids)) == len(ids)
    vicuna = testsets.load("vicuna", limit=3)
    assert len(vicuna) == 3 and vicuna[0].extra["category"] == "generic" and vicuna[0].question_id == "1"
    wizard = testsets.load("wizardlm")[0]
    assert wizard.extra == {"skill": "Math", "difficulty": 1}
    sinstruct = testsets.load("sinstruct")
    with_input = next(q for q in sinstruct if q.input.strip())
    assert with_input.question == f"{with_input.instruction} Input: {with_input.input}"
    without = next(q for q in sinstruct if not q.input.strip())
    assert without.question == without.instruction
    assert testsets.expand("all") == list(testsets.NAMES)
    assert testsets.expand(["vicuna,koala", "vicuna"]) == ["vicuna", "koala"]


def test_user_question_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        json.dumps({"id": 7, "prompt": "Say hi.", "category": "fun"})
        + "\n"
        + json.dumps({"question_id": "b", "instruction": "Sum it.", "input": "1 2"})
        + "\n"
    )
    a, b = testsets.load(str(path))
    assert (a.testset, a.question_id, a.question, a.extra) == ("mine", "7", "Say hi.", {"category": "fun"})
    assert b.question == "Sum it. Input: 1 2" and (b.instruction, b.input) == ("Sum it.", "1 2")
    path.write_text(json.dumps({"id": 1, "text": "ok"}) + "\n" + json.dumps({"id": 2, "answer": "x"}) + "\n")
    with pytest.raises(DataError, match=r"mine\.jsonl, row 2, field 'question'"):
        testsets.load(str(path))
    with pytest.raises(DataError, match="not a bundled test set"):
        testsets.load("nosuchset")


def test_prompt_tokens_match_training(tiny_model):
    """Generation sees exactly the prompt ids the model was trained on (transformers and vLLM share this)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    questions = testsets.load("sinstruct", limit=6)
    for q, ids in zip(questions, encode_prompts(questions, "alpaca", tok)):
        trained = tokenize_example(tok, q.instruction, q.input, "An answer.", max_length=None)
        assert trained["input_ids"][: len(ids)] == ids
        assert all(x == -100 for x in trained["labels"][: len(ids)])
    chat = encode_prompts(questions[:1], "chat", tok)[0]
    assert tok.decode(chat).endswith("<|im_start|>assistant\n") and questions[0].question in tok.decode(chat)


def run_cli(*args: str):
    result = CliRunner().invoke(app, ["generate", *args])
    return result


def keys(rows):
    return {(r["testset"], r["question_id"]) for r in rows}


def test_cli_all_testsets_output_and_resume(tiny_model, tmp_path):
    out = tmp_path / "answers.jsonl"
    args = [
        str(tiny_model),
        "--testset",
        "all",
        "--limit",
        "2",
        "--max-new-tokens",
        "6",
        "-o",
        str(out),
        "--name",
        "tiny",
    ]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    rows = read_answer_file(out)
    assert len(rows) == 8 and {r["testset"] for r in rows} == set(testsets.NAMES)
    for r in rows:
        assert ROW_FIELDS <= r.keys() and r["model"] == "tiny" and isinstance(r["answer"], str)
        assert r["settings"]["prompt_format"] == "alpaca" and r["settings"]["max_new_tokens"] == 6
        assert r["settings"]["do_sample"] is False and r["settings"]["stop"] == list(STOP_STRINGS)
        assert not any(s in r["answer"] for s in STOP_STRINGS)
    assert {r["question_id"] for r in rows if r["testset"] == "vicuna"} == {"1", "2"}
    assert all(r["skill"] == "Math" and "difficulty" in r for r in rows if r["testset"] == "wizardlm")
    assert all(r["category"] == "generic" for r in rows if r["testset"] == "vicuna")
    first = {(r["testset"], r["question_id"]): r["answer"] for r in rows}

    again = run_cli(*args)
    assert again.exit_code == 0 and "0 new answers, 8 already" in again.output
    assert len(read_answer_file(out)) == 8

    kept = [r for r in rows if r["testset"] not in ("koala",)][:5]
    out.write_text("".join(json.dumps(r) + "\n" for r in kept) + '{"testset": "vicuna", "questi')  # torn line
    result = generate(str(tiny_model), "all", out, GenerateConfig(limit=2, max_new_tokens=6, name="tiny"))
    assert result.generated == 3 and result.reused == 5 and len(result.answers) == 8
    rows = read_answer_file(out)
    assert len(rows) == 8 and keys(rows) == set(first)
    assert keys(rows[5:]) == set(first) - keys(kept), "only the missing answers come back"
    assert all(first[(r["testset"], r["question_id"])] == r["answer"] for r in rows), "greedy is deterministic"


def test_other_model_and_chat_template_and_sampling(tiny_model, tmp_path):
    out = tmp_path / "answers.jsonl"
    common = [str(tiny_model), "-t", "vicuna", "--limit", "2", "--max-new-tokens", "5", "-o", str(out)]
    assert run_cli(*common, "--name", "a").exit_code == 0
    result = run_cli(*common, "--name", "b", "--chat-template", "--temperature", "0.9", "--seed", "3")
    assert result.exit_code == 0, result.output
    rows = read_answer_file(out)
    assert [r["model"] for r in rows].count("b") == 2, "another model's answers are not reused"
    chat = [r for r in rows if r["model"] == "b"]
    assert all(r["settings"]["prompt_format"] == "chat" and r["settings"]["do_sample"] for r in chat)
    other = tmp_path / "again.jsonl"
    assert (
        run_cli(
            *common[:-1], str(other), "--name", "b", "--chat-template", "--temperature", "0.9", "--seed", "3"
        ).exit_code
        == 0
    )
    assert {r["answer"] for r in read_answer_file(other)} == {r["answer"] for r in chat}, "a seed reproduces samples"


class FakeOpenAI(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible server: a fixed answer (followed by a stop string to cut), a 400 error for
    any prompt that contains FAIL, and every request body recorded."""

    requests: list[tuple[str, dict]] = []
    answer = "Paris is the capital of France.\n\n### Instruction:\nmore text"

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.path, body))
        text = json.dumps(body)
        if "FAIL" in text:
            return self._send(400, {"error": {"message": "bad prompt", "type": "invalid_request_error"}})
        if self.path.endswith("/chat/completions"):
            choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Chat says hi."}}
            return self._send(
                200,
                {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice]},
            )
        if self.path.endswith("/completions"):
            choice = {"index": 0, "text": self.answer, "finish_reason": "stop", "logprobs": None}
            return self._send(
                200,
                {"id": "c2", "object": "text_completion", "created": 0, "model": body["model"], "choices": [choice]},
            )
        self._send(404, {"error": {"message": "no such route"}})

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server():
    FakeOpenAI.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_openai_backend_alpaca_and_chat(server, tmp_path):
    out = tmp_path / "answers.jsonl"
    result = run_cli(
        "served-model",
        "--backend",
        "openai",
        "--base-url",
        server,
        "-t",
        "vicuna,sinstruct",
        "--limit",
        "3",
        "--max-new-tokens",
        "64",
        "--concurrency",
        "2",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    rows = read_answer_file(out)
    assert len(rows) == 6 and all(r["answer"] == "Paris is the capital of France." for r in rows)
    assert all(r["model"] == "served-model" and r["settings"]["backend"] == "openai" for r in rows)
    paths = {p for p, _ in FakeOpenAI.requests}
    assert paths == {"/v1/completions"}
    bodies = [b for _, b in FakeOpenAI.requests]
    q = testsets.load("sinstruct", limit=1)[0]
    assert any(b["prompt"] == alpaca_prompt(q.instruction, q.input) for b in bodies)
    assert all(b["model"] == "served-model" and b["max_tokens"] == 64 and b["temperature"] == 0 for b in bodies)
    assert all(b["stop"] == list(STOP_STRINGS) for b in bodies)

    FakeOpenAI.requests = []
    chat_out = tmp_path / "chat.jsonl"
    result = run_cli(
        "served-model",
        "--backend",
        "openai",
        "--base-url",
        server,
        "-t",
        "koala",
        "--limit",
        "2",
        "--chat-template",
        "-o",
        str(chat_out),
    )
    assert result.exit_code == 0, result.output
    assert [r["answer"] for r in read_answer_file(chat_out)] == ["Chat says hi.", "Chat says hi."]
    assert {p for p, _ in FakeOpenAI.requests} == {"/v1/chat/completions"}
    question = testsets.load("koala", limit=1)[0].question
    assert any(b["messages"] == [{"role": "user", "content": question}] for _, b in FakeOpenAI.requests)


def test_openai_failures_are_reported_and_retried_on_the_next_run(server, tmp_path):
    questions = tmp_path / "qs.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"id": i, "question": q}) + "\n"
            for i, q in enumerate(["Fine one.", "Please FAIL here.", "Fine two."])
        )
    )
    out = tmp_path / "answers.jsonl"
    args = ["m", "--backend", "openai", "--base-url", server, "-t", str(questions), "-o", str(out)]
    result = run_cli(*args)
    assert result.exit_code == 1 and "1 questions have no answer" in result.output
    assert "qs/1" in result.output and "bad prompt" in result.output
    assert sorted(r["question_id"] for r in read_answer_file(out)) == ["0", "2"]
    questions.write_text(questions.read_text().replace("Please FAIL here.", "Now fine."))
    FakeOpenAI.requests = []
    assert run_cli(*args).exit_code == 0
    assert len(FakeOpenAI.requests) == 1 and len(read_answer_file(out)) == 3


def test_openai_backend_needs_an_endpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    result = run_cli("m", "--backend", "openai", "-t", "vicuna", "-o", str(tmp_path / "a.jsonl"))
    assert result.exit_code == 2 and "--base-url" in result.output


def test_openai_backend_against_alpagasus_serve_matches_local(tiny_model, tmp_path):
    """The project's own server over the same model gives the answers the local backend gives (greedy, chat)."""
    from alpagasus.serve import ModelRunner, make_handler

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(ModelRunner(str(tiny_model), name="tiny")))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        served, local = tmp_path / "served.jsonl", tmp_path / "local.jsonl"
        common = ["-t", "vicuna,wizardlm", "--limit", "2", "--max-new-tokens", "8", "--chat-template"]
        result = run_cli(
            "tiny",
            "--backend",
            "openai",
            "--base-url",
            f"http://127.0.0.1:{httpd.server_address[1]}/v1",
            "-o",
            str(served),
            *common,
        )
        assert result.exit_code == 0, result.output
        assert run_cli(str(tiny_model), "--name", "tiny", "--batch-size", "1", "-o", str(local), *common).exit_code == 0
    finally:
        httpd.shutdown()
        httpd.server_close()
    answers = {(r["testset"], r["question_id"]): r["answer"] for r in read_answer_file(local)}
    assert len(answers) == 4  # (the random model's greedy chat answers are mostly whitespace, stripped)
    assert {(r["testset"], r["question_id"]): r["answer"] for r in read_answer_file(served)} == answers


def test_a_fraction_of_each_test_set_is_a_seeded_stratified_subset():
    full = {n: testsets.load(n) for n in ("vicuna", "koala", "sinstruct", "wizardlm")}
    picked = {n: testsets.load(n, fraction=0.1) for n in full}
    assert {n: len(q) for n, q in picked.items()} == {"vicuna": 8, "koala": 18, "sinstruct": 25, "wizardlm": 22}
    for n, qs in picked.items():
        ids = [q.question_id for q in full[n]]
        positions = [ids.index(q.question_id) for q in qs]
        assert positions == sorted(positions) and positions != list(range(len(qs)))  # file order, not the first N
        assert [q.question_id for q in testsets.load(n, fraction=0.1)] == [q.question_id for q in qs]  # repeatable
    assert [q.question_id for q in testsets.load("koala", fraction=0.1, seed=1)] != [
        q.question_id for q in picked["koala"]
    ]
    assert len(testsets.load("vicuna", limit=10, fraction=0.05)) == 1  # at least one question
    with pytest.raises(ValueError, match="fraction"):
        GenerateConfig(fraction=0).validate()
