"""The prefix-first prompt layout, and the hf judge's shared-prefix KV reuse in logprob mode."""

from __future__ import annotations

import pytest

from alpagasus.judges.hf_local import HFJudge
from alpagasus.prompts import PLACEHOLDER, load_template
from alpagasus.rate.loop import build_request
from alpagasus.records import Example, Request

DIMENSIONS = ("accuracy", "helpfulness")


@pytest.fixture(scope="module")
def examples(alpaca_rows):
    return [Example.alpaca(r["instruction"], r["input"], r["output"]) for r in alpaca_rows[:200]]


def fixed_part(template) -> str:
    """What every prompt of the template starts with: the system prompt and the user text before the first field."""
    return template.system + template.user[: PLACEHOLDER.search(template.user).start()]


@pytest.mark.parametrize("dim", DIMENSIONS)
def test_prefix_layout_is_the_papers_words_with_the_rubric_first(dim, examples):
    paper, pre = load_template(dim), load_template(f"{dim}-prefix")
    assert load_template(f"rate_{dim}_prefix").version == pre.version  # by file name too
    assert pre.version != paper.version and pre.version.startswith(f"rate_{dim}_prefix@")
    assert (pre.system, pre.scale, pre.labels, pre.logprob_prefix) == (
        paper.system,
        paper.scale,
        paper.labels,
        paper.logprob_prefix,
    )
    # the same words: the paper's rubric and its data block, reordered
    data_block, rubric = paper.user.split("\n\nPlease rate", 1)
    rubric = "Please rate" + rubric.rstrip()
    assert pre.user == rubric + "\n\n" + data_block + "\n"  # nothing added, nothing lost
    assert data_block.startswith("###Instruction:\n{instruction}") and f"to the {dim} of the response" in rubric
    fixed = fixed_part(pre)
    assert rubric in fixed and len(fixed) > len(fixed_part(paper)) + len(rubric)  # the rubric is in the prefix
    for e in examples:
        for mode in ("logprob", "generate"):
            req = build_request(e, pre, mode)
            text = req.system + req.user
            assert text.startswith(fixed), e.instruction
            assert text.endswith(e.output + "\n") and e.instruction in text[len(fixed) :]


def test_prefix_layout_is_a_shared_token_prefix_of_every_chat_prompt(tiny_model, examples):
    j = HFJudge(str(tiny_model))
    j.load()
    t = load_template("accuracy-prefix")

    def token_ids(template):
        return [
            j.tok(j.prompt_text(build_request(e, template, "logprob")), add_special_tokens=False)["input_ids"]
            for e in examples[:50]
        ]

    ids = token_ids(t)
    chat = j.prompt_text(build_request(examples[0], t, "logprob"))
    user_fixed = t.user[: PLACEHOLDER.search(t.user).start()]
    head = chat[: chat.index(user_fixed) + len(user_fixed)]  # chat markup + system + the rubric, up to the data
    n_fixed = len(j.tok(head, add_special_tokens=False)["input_ids"])
    first, shared = ids[0], min(map(len, ids))
    for x in ids[1:]:
        shared = next((k for k in range(shared) if x[k] != first[k]), shared)
    assert shared >= n_fixed - 1 > 60  # the whole rubric (the last token may merge with the data's first)
    paper = token_ids(load_template("accuracy"))
    assert abs(sum(map(len, paper)) - sum(map(len, ids))) <= 3 * len(ids)  # same words, same cost in tokens


@pytest.fixture(scope="module")
def judges_pair(tiny_model):
    """The same model behind the plain path and the prefix-reuse path (min_prefix 16, as by default), each batch
    in one pass (pass_cost=0: no split by length), so the token accounting below is exact."""
    plain = HFJudge(str(tiny_model), prefix_cache=False, pass_cost=0)
    plain.load()
    reuse = HFJudge(str(tiny_model), pass_cost=0)
    reuse.model, reuse.tok = plain.model, plain.tok
    return plain, reuse


def scores(judge: HFJudge, requests: list[Request]) -> list[float]:
    return [r.score for r in judge.score_sync(requests)]


@pytest.mark.parametrize("name", ["accuracy-prefix", "accuracy", "helpfulness-guarded"])
def test_prefix_reuse_gives_the_plain_scores(judges_pair, examples, name):
    plain, reuse = judges_pair
    reuse._prefix = None
    t = load_template(name)
    reqs = [build_request(e, t, "logprob") for e in examples[:12]]  # unsorted: suffix lengths differ a lot
    before = dict(reuse.stats)
    want, got = scores(plain, reqs), scores(reuse, reqs)
    assert reuse.stats["prefix_passes"] == before["prefix_passes"] + 1  # the prefix path was taken
    n = len(reuse._prefix[0])
    assert n >= (100 if name == "accuracy-prefix" else 20)
    assert reuse.stats["tokens_reused"] - before["tokens_reused"] == n * (len(reqs) - 1)
    # the bar is 1e-3; this random model scores in a narrow band (spread ~0.015), where a position off by the
    # padding shows as ~2e-4 and float reordering as ~1e-7: 1e-5 tells them apart
    assert max(abs(a - b) for a, b in zip(want, got)) < 1e-5
    assert max(want) - min(want) > 1e-3  # the rows do score differently: the comparison means something
    # and the label distributions agree too, not just their means
    for p, q in zip(plain.score_sync(reqs[:3]), reuse.score_sync(reqs[:3])):
        assert max(abs(p.probs[k] - q.probs[k]) for k in p.probs) < 1e-5
        assert p.tokens_in == q.tokens_in


def test_cached_prefix_is_reused_cut_and_extended_across_batches(judges_pair, examples):
    plain, reuse = judges_pair
    reuse._prefix = None
    pre, paper = load_template("accuracy-prefix"), load_template("accuracy")
    batches = [
        [build_request(e, t, "logprob") for e in examples[i : i + 5]]
        for i, t in ((20, pre), (25, pre), (30, paper), (35, pre), (40, pre))
    ]
    lengths = []
    for b in batches:
        before = reuse.stats["tokens_reused"]
        assert max(abs(a - c) for a, c in zip(scores(plain, b), scores(reuse, b))) < 1e-5
        lengths.append((len(reuse._prefix[0]), reuse.stats["tokens_reused"] - before))
    (n1, _), (n2, r2), (n3, _), (n4, _), (n5, r5) = lengths
    assert n2 <= n1 and r2 == n2 * 5  # second batch: the cached prefix served every row, nothing recomputed
    assert 16 <= n3 < 60 < n4  # the paper's layout shares only the system prompt: cut; then extended again
    assert r5 == n5 * 5
    # one row alone runs on the cached prefix as it is (no extension to its own length, no extra pass)
    one = [build_request(examples[45], pre, "logprob")]
    before = reuse.stats["tokens_reused"]
    assert abs(scores(plain, one)[0] - scores(reuse, one)[0]) < 1e-5
    assert len(reuse._prefix[0]) == n5 and reuse.stats["tokens_reused"] - before == n5


def test_short_shared_prefix_falls_back_to_the_plain_path(judges_pair, examples):
    plain, reuse = judges_pair
    reuse._prefix = None
    # different system prompts: the prompts share only the chat markup's first tokens
    reqs = [
        Request(key=str(i), system=f"{i}: {e.instruction}", user=e.output, assistant_prefix="Score: ")
        for i, e in enumerate(examples[50:58])
    ]
    before = reuse.stats["prefix_passes"]
    assert max(abs(a - b) for a, b in zip(scores(plain, reqs), scores(reuse, reqs))) < 1e-5
    assert reuse.stats["prefix_passes"] == before and reuse._prefix is None
    # one row alone shares everything with itself: the prefix path runs its last token only, same score
    one = [build_request(examples[60], load_template("accuracy"), "logprob")]
    assert abs(scores(plain, one)[0] - scores(reuse, one)[0]) < 1e-5
    assert reuse.stats["prefix_passes"] == before + 1


def test_rate_with_the_prefix_layout_end_to_end(tiny_model, examples, tmp_path):
    from alpagasus.data import read_jsonl, write_jsonl
    from alpagasus.rate.files import rate_file

    src = tmp_path / "in.jsonl"
    write_jsonl(src, [e.fields() for e in examples[:10]])
    s = rate_file(
        src,
        tmp_path / "out.jsonl",
        judge=f"hf:{tiny_model}",
        dimension="accuracy-prefix",
        store_path=tmp_path / "s.sqlite",
        judge_options={"batch_size": 4},
    )
    rows = list(read_jsonl(tmp_path / "out.jsonl"))
    assert s.run.ok == 10 and len(rows) == 10 and all(r["status"] == "ok" for r in rows)
    assert {r["prompt_version"] for r in rows} == {load_template("accuracy-prefix").version}


@pytest.mark.parametrize("window", [1024, 64])
def test_sliding_window_layers_reuse_below_the_window_and_fall_back_above(tiny_model, examples, tmp_path, window):
    """A model with a sliding-window layer (as Gemma 3, Mistral): the prefix is reused while every prompt fits the
    window; past it a sliding layer would drop prefix tokens, so the judge runs whole prompts."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_sliding_window=True,
        sliding_window=window,
        max_window_layers=1,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    assert cfg.layer_types == ["full_attention", "sliding_attention"]
    Qwen2ForCausalLM(cfg).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    plain = HFJudge(str(tmp_path / "m"), prefix_cache=False, pass_cost=0)
    plain.load()
    reuse = HFJudge(str(tmp_path / "m"), pass_cost=0)
    reuse.model, reuse.tok = plain.model, plain.tok
    reqs = [build_request(e, load_template("accuracy-prefix"), "logprob") for e in examples[70:76]]
    want, got = scores(plain, reqs), scores(reuse, reqs)
    assert max(abs(a - b) for a, b in zip(want, got)) < 1e-5 and max(want) - min(want) > 1e-4
    assert reuse._window == window
    assert reuse.stats["prefix_passes"] == (1 if window == 1024 else 0)


def test_length_groups_cut_where_padding_costs_more_than_a_pass():
    from alpagasus.judges.hf_local import _length_groups

    assert _length_groups([100, 10, 101, 12, 11], 32) == [[1, 4, 3], [0, 2]]
    assert _length_groups([100, 10, 101, 12, 11], 10_000) == [[1, 4, 3, 0, 2]]  # a pass costs more than padding
    assert _length_groups([50, 50, 50], 1) == [[0, 1, 2]]  # no padding: nothing to gain by cutting
    assert _length_groups([7], 32) == [[0]]
    lengths = [(i * 37) % 101 + 20 for i in range(40)]
    groups = _length_groups(lengths, 32)
    assert sorted(i for g in groups for i in g) == list(range(40)) and len(groups) > 1

    def cost(gs):
        return sum(32 + len(g) * max(lengths[i] for i in g) for g in gs)

    assert cost(groups) <= min(cost([list(range(40))]), cost([[i] for i in range(40)]))


def test_rows_of_different_lengths_go_in_separate_passes_with_the_same_scores(judges_pair, examples, tiny_model):
    plain, _ = judges_pair
    split = HFJudge(str(tiny_model))  # the default: batches cut by token length on CPU
    split.model, split.tok = plain.model, plain.tok
    for t in (load_template("accuracy-prefix"), load_template("accuracy")):
        # short and long rows mixed, as the engine's character sort leaves them
        reqs = [build_request(e, t, "logprob") for e in sorted(examples[80:96], key=lambda e: len(e.output))[::3]]
        reqs += [build_request(e, t, "logprob") for e in examples[100:104]]
        before = dict(split.stats)
        got = split.score_sync(reqs)
        assert max(abs(a - b.score) for a, b in zip(scores(plain, reqs), got)) < 1e-5
        assert [r.tokens_in for r in got] == [r.tokens_in for r in plain.score_sync(reqs)]  # same order
        passes = split.stats["passes"] - before["passes"]
        assert passes > 1 and split.stats["prefix_passes"] - before["prefix_passes"] == passes
