"""The rating loop with a tiny random LM: both modes, batching, resume without paying twice, unparsed replies."""

import pytest

from alpagasus import judges
from alpagasus.engine import RunOptions
from alpagasus.judges.hf_local import HFJudge
from alpagasus.prompts import load_template
from alpagasus.rate import rate
from alpagasus.records import Example
from alpagasus.store import Store, StoreBusy
from fakes import FakeJudge


@pytest.fixture(scope="module")
def examples(alpaca_rows):
    rows = [r for r in alpaca_rows if r["output"].strip()][:24]
    return [Example.alpaca(r["instruction"], r["input"], r["output"]) for r in rows]


class CountingHF(HFJudge):
    """The real HF judge, counting what it is asked and able to die after some batches (an interrupt)."""

    def __init__(self, *a, die_after=None, **kw):
        super().__init__(*a, **kw)
        self.asked: list[str] = []
        self.die_after = die_after

    def score_sync(self, requests):
        if self.die_after is not None and len(self.asked) >= self.die_after:
            raise KeyboardInterrupt
        self.asked += [r.key for r in requests]
        return super().score_sync(requests)


def test_logprob_scores_are_expectations_and_batch_invariant(tiny_model, examples, tmp_path):
    t = load_template("accuracy")
    scores = {}
    for bs in (1, 7):
        j = HFJudge(str(tiny_model), batch_size=bs)
        with Store(tmp_path / f"s{bs}.sqlite") as st:
            s = rate(examples[:10], j, t, st)
            assert (s.run.ok, s.run.requests_sent) == (10, 10)
            got = st.get_many([e.id for e in examples[:10]], j.id, t.version)
        for e in examples[:10]:
            r = got[e.id]
            assert r.status == "ok" and set(r.probs) == set("012345")
            assert abs(sum(r.probs.values()) - 1) < 1e-6
            assert r.score == pytest.approx(sum(int(k) * p for k, p in r.probs.items()))
            assert 0 < r.extra["label_mass"] <= 1 and r.tokens_in > 50
        scores[bs] = [got[e.id].score for e in examples[:10]]
    assert scores[1] == pytest.approx(scores[7], abs=1e-4)  # padding does not change a row's score


def test_generate_mode_unparsable_replies_asked_again_then_stored_raw(tiny_model, examples, tmp_path):
    j = HFJudge(str(tiny_model), mode="generate", batch_size=4)
    t = load_template("accuracy")
    with Store(tmp_path / "g.sqlite") as st:
        s = rate(examples[:4], j, t, st, RunOptions(max_reasks=1, max_tokens=12))
        got = st.get_many([e.id for e in examples[:4]], j.id, t.version)
    # a random model writes no score: each example asked twice, then stored unparsed with its raw text
    assert s.run.unparsed + s.run.ok == 4 and s.run.requests_sent == 4 + s.run.unparsed
    for r in got.values():
        if r.status == "unparsed":
            assert r.score is None and r.raw and r.explanation and r.extra["asks"] == 2


def test_resume_after_interrupt_rates_each_example_once(tiny_model, examples, tmp_path):
    t = load_template("accuracy")
    path = tmp_path / "resume.sqlite"
    first = CountingHF(str(tiny_model), batch_size=4, die_after=8)
    with Store(path) as st, pytest.raises(KeyboardInterrupt):
        rate(examples, first, t, st)
    assert len(first.asked) == 8
    second = CountingHF(str(tiny_model), batch_size=4)
    with Store(path) as st:
        s = rate(examples, second, t, st)
        assert s.already_rated == 8 and s.run.ok == len(examples) - 8
        assert st.count(judge=second.id) == len(examples)
    assert not set(first.asked) & set(second.asked)  # no request sent twice
    assert sorted(first.asked + second.asked) == sorted(e.id for e in examples)
    third = CountingHF(str(tiny_model))
    with Store(path) as st:
        s = rate(examples, third, t, st)
    assert s.run.to_judge == 0 and third.asked == [] and third.model is None  # nothing left: no model loaded


def test_changed_prompt_or_mode_is_rated_again(tiny_model, examples, tmp_path):
    path = tmp_path / "v.sqlite"
    with Store(path) as st:
        rate(examples[:3], HFJudge(str(tiny_model)), load_template("accuracy"), st)
        s = rate(examples[:3], HFJudge(str(tiny_model)), load_template("helpfulness"), st)
        assert s.run.to_judge == 3
        s = rate(
            examples[:3],
            HFJudge(str(tiny_model), mode="generate"),
            load_template("accuracy"),
            st,
            RunOptions(max_reasks=0, max_tokens=4),
        )
        assert s.run.to_judge == 3 and st.count() == 9


def test_unparsed_never_zero_and_errors_retried(tmp_path):
    exs = [Example.alpaca(f"q{i}", "", f"a{i}") for i in range(4)]
    # replies per example output, in the order asked; a reply starting with "!" is a transport error
    judge = FakeJudge(
        id="scripted#generate",
        mode="generate",
        model="scripted-v1",
        batch_size=4,
        key=lambda r: r.example.output,
        reply={
            "a0": ["nonsense", "more nonsense", "4\nfine"],  # asked again twice, then parsed
            "a1": ["6", "6", "6"],  # out of scale three times: unparsed
            "a2": ["!boom", "Score: 5"],  # a transport error, retried
            "a3": ["!down", "!down", "!down"],  # attempts capped: stored as error
        },
    )
    t = load_template("accuracy")
    with Store(tmp_path / "u.sqlite") as st:
        s = rate(exs, judge, t, st, RunOptions(max_reasks=2, max_attempts=3, backoff_s=0.01))
        got = st.get_many([e.id for e in exs], judge.id, t.version)
        assert st.done_ids(judge.id, t.version) == {exs[0].id, exs[1].id, exs[2].id}  # errors are retried later
    assert got[exs[0].id].score == 4 and got[exs[0].id].attempts == 3 and got[exs[0].id].explanation == "fine"
    assert got[exs[1].id].status == "unparsed" and got[exs[1].id].score is None and got[exs[1].id].raw == "6"
    assert "outside the scale" in got[exs[1].id].explanation
    assert got[exs[2].id].score == 5 and got[exs[2].id].model == "scripted-v1"
    assert got[exs[3].id].status == "error" and got[exs[3].id].attempts == 3 and got[exs[3].id].raw == "down"
    assert (s.run.ok, s.run.unparsed, s.run.error) == (2, 1, 1) and len(judge.asked) == 11


def test_second_run_on_same_store_refuses(tmp_path):
    a, b = Store(tmp_path / "x.sqlite"), Store(tmp_path / "x.sqlite")
    with a.exclusive():
        with pytest.raises(StoreBusy, match="in use by pid"):
            with b.exclusive():
                pass
    with b.exclusive():  # free again once the first run ends
        pass


def test_registry_and_default():
    assert judges.DEFAULT_JUDGE.startswith("embedded:")
    with pytest.raises(judges.JudgeError, match="unknown judge backend"):
        judges.get("nope:x")
    j = judges.get("hf:/some/dir", mode="generate")
    assert j.id == "hf:/some/dir#generate" and j.model is None  # building a judge loads nothing


def test_the_dry_run_estimate_counts_output_tokens_only_for_judges_that_write():
    from alpagasus.rate.loop import estimate

    rows = [Example.alpaca(f"Question {i}?", "", "An answer.") for i in range(3)]
    tpl, opts = load_template("rate_accuracy"), RunOptions(price_in=1.0, price_out=10.0)
    outs = {
        m: estimate(rows, tpl, m, len, opts, out_tokens=100)["tokens_out_estimate"]
        for m in ("generate", "logprob", "predict", "ifd")
    }
    assert outs == {"generate": 300, "logprob": 3, "predict": 0, "ifd": 0}
