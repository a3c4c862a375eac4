"""The paper's prompt verbatim, template versions, and the reply parser on a table of real-looking replies."""

import pytest

from alpagasus.prompts import load_template, parse_template
from alpagasus.prompts.parse import parse_pair, parse_score

SYSTEM = (
    "We would like to request your feedback on the performance of AI assistant in response to the "
    "instruction and the given input displayed following."
)


def test_paper_prompt_exact():
    t = load_template("accuracy")
    assert t.system == SYSTEM
    user = t.render({"instruction": "I", "input": "X", "output": "O"})
    assert user == (
        "###Instruction:\nI\n\n### Input:\nX\n\n### Response:\nO\n\n"
        "Please rate according to the accuracy of the response to the instruction and the input. Each assistant "
        "receives a score on a scale of 0 to 5, where a higher score indicates higher level of the accuracy. Please "
        "first output a single line containing value indicating the scores. In the subsequent line, please provide a "
        "comprehensive explanation of your evaluation, avoiding any potential bias. \n\n"
    )
    h = load_template("helpfulness")
    assert h.render({"instruction": "I", "input": "X", "output": "O"}) == user.replace("accuracy", "helpfulness")
    assert t.scale == (0, 5) and t.labels == ("0", "1", "2", "3", "4", "5")
    assert t.version.startswith("rate_accuracy@") and t.version != h.version


def test_data_is_substituted_once():
    t = load_template("accuracy")
    user = t.render({"instruction": "say {output}", "input": "", "output": "{instruction}"})
    assert "say {output}" in user and "### Response:\n{instruction}\n" in user


def test_custom_template_and_scale(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("<<<system>>>\nBe strict.\n<<<user>>>\nRate {output} from 1 to 10.\n")
    t = load_template(str(f), scale="1-10")
    assert t.system == "Be strict." and t.scale == (1, 10) and t.user == "Rate {output} from 1 to 10.\n"
    v1 = t.version
    f.write_text("<<<system>>>\nBe kind.\n<<<user>>>\nRate {output} from 1 to 10.\n")
    assert load_template(str(f), scale="1-10").version != v1


def test_template_without_user_section_rejected():
    with pytest.raises(ValueError, match="no <<<user>>>"):
        parse_template("<<<system>>>\nx\n", "broken")


@pytest.mark.parametrize(
    "reply,score",
    [
        ("4.5", 4.5),
        ("4.5\nThe answer is correct and complete.", 4.5),
        ("Score: 4", 4.0),
        ("4.5/5", 4.5),
        ("**4**", 4.0),
        ("Rating: 4 out of 5", 4.0),
        ("four", 4.0),
        ("Five\nPerfect.", 5.0),
        ("5/5", 5.0),
        ("<think>maybe 3? no</think>4", 4.0),
        ("  \n\n3\nok", 3.0),
        ("I would give it a score of 3.5.", 3.5),
        ("The response has 2 typos.\nScore: 2", 2.0),
        ("0", 0.0),
        ("Score: **5**", 5.0),
        ("4 - mostly right", 4.0),
    ],
)
def test_parse_score_table(reply, score):
    assert parse_score(reply).score == score


@pytest.mark.parametrize(
    "reply,reason",
    [
        ("", "empty"),
        (None, "empty"),
        ("The response is accurate and helpful.", "no score"),
        ("6", "outside the scale"),
        ("-1", "outside the scale"),
        ("8/10", "another scale"),
        ("<think>4</think>", "no text outside"),
        ("Score: 7", "outside the scale"),
    ],
)
def test_parse_score_refuses(reply, reason):
    p = parse_score(reply)
    assert p.score is None and reason in p.reason


def test_parse_keeps_explanation():
    p = parse_score("4\nAccurate, but terse.\nCould add an example.")
    assert p.explanation == "Accurate, but terse.\nCould add an example."


@pytest.mark.parametrize(
    "reply,pair",
    [
        ("8 7\nAssistant 1 is more detailed.", (8, 7)),
        ("9, 6", (9, 6)),
        ("7.5 7.5", (7.5, 7.5)),
        ("Assistant 1: 6\nAssistant 2: 9", (6, 9)),
        ("", None),
        ("Both are good.", None),
        ("11 4", None),
    ],
)
def test_parse_pair(reply, pair):
    assert parse_pair(reply)[0] == pair
