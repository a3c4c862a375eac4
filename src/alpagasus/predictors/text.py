"""Features a predictor computes from the text itself, beside the frozen embeddings: hand-made format and
overlap features (`hand_features`) and a TF-IDF bag of words and word pairs (`Tfidf`).

Both are plain Python + numpy, so scoring needs no scikit-learn. `Tfidf` reproduces scikit-learn's
TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True) transform exactly (the tests check it), so
`distill` can fit the vocabulary with scikit-learn and ship it as arrays.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

from alpagasus.records import Example

WORD = re.compile(r"\w+")
TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern
LIST_ITEM = re.compile(r"\s*(\d+[.)]|[-*\u2022])\s")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
CODE = re.compile(r"```|def |\{|\};|</|import |print\(|=>|==")
# Phrases with which an answer declines or says the task cannot be done (Alpaca has many of these).
REFUSAL = (
    "i'm sorry",
    "i am sorry",
    "as an ai",
    "i cannot",
    "i can't",
    "not possible",
    "unable to",
    "i don't have",
    "i do not have",
    "no input",
    "<noinput>",
    "n/a",
    "cannot be",
    "not able to",
)
# Task kinds, read from the instruction: the strong judges' keep rates differ a lot between them.
TASKS = {
    "asks_code": re.compile(r"code|program|function|python|sql|java|html|script"),
    "asks_rewrite": re.compile(r"\b(rewrite|edit|correct|rephrase|paraphrase|translate)\b"),
    "asks_math": re.compile(r"\b(calculate|compute|solve|how many|what is the (sum|product|value))\b"),
    "asks_creative": re.compile(r"\b(write|compose|create|generate|story|poem|essay)\b"),
    "asks_choice": re.compile(r"\b(classify|identify|categori[sz]e|which|select|choose)\b"),
}
HAND_FEATURES = (
    "log_words_instruction",
    "log_words_input",
    "log_words_output",
    "log_lines_output",
    "log_list_items",
    "has_list",
    "looks_like_code",
    "asks_code",
    "log_numbers_output",
    "log_numbers_prompt",
    "prompt_has_number",
    "digit_share_output",
    "refusal_phrase",
    "output_words_in_prompt",
    "input_words_in_output",
    "instruction_words_in_output",
    "type_token_ratio",
    "mean_word_length",
    "log_sentences",
    "ends_with_punctuation",
    "instruction_is_question",
    "uppercase_share",
    "output_repeats_input",
    "log_length_ratio",
    "starts_yes_no",
    "at_most_3_words",
    "asks_rewrite",
    "asks_math",
    "asks_creative",
    "asks_choice",
)


def _words(s: str) -> list[str]:
    return WORD.findall(s.lower())


def rubric_parts(ex: Example) -> tuple[str, str, str]:
    """(instruction, input, response) as the rubric template sees them (`Example.prompt_fields()`): Alpaca's
    own three fields, so the shipped predictors' features of Alpaca rows are what they were trained on; for a
    conversation, its rendered context (system prompt, earlier turns, last user turn), "" and its last answer."""
    return _in_order(**ex.prompt_fields())


def _in_order(instruction: str, input: str, output: str) -> tuple[str, str, str]:
    """The rubric's fields bound by name (a field the template lacks, or a new one, is a TypeError here)."""
    return instruction, input, output


def _hand_row(ex: Example) -> list[float]:
    ins, inp, out = rubric_parts(ex)
    wo, wi, wp = _words(out), _words(ins), _words(inp)
    so, si, sp = set(wo), set(wi), set(wp)
    lines = [line for line in out.split("\n") if line.strip()]
    items = sum(1 for line in lines if LIST_ITEM.match(line))
    n_out, n_prompt = len(NUMBER.findall(out)), len(NUMBER.findall(ins + " " + inp))
    low, task = out.lower(), (ins + " " + inp).lower()
    return [
        math.log1p(len(wi)),
        math.log1p(len(wp)),
        math.log1p(len(wo)),
        math.log1p(len(lines)),
        math.log1p(items),
        float(items > 0),
        float(bool(CODE.search(out))),
        float(bool(TASKS["asks_code"].search(task))),
        math.log1p(n_out),
        math.log1p(n_prompt),
        float(n_prompt > 0),
        sum(c.isdigit() for c in out) / max(1, len(out)),
        float(any(r in low for r in REFUSAL)),
        len(so & (si | sp)) / max(1, len(so)),
        len(so & sp) / len(sp) if sp else 0.0,
        len(so & si) / max(1, len(si)),
        len(so) / max(1, len(wo)),
        sum(len(w) for w in wo) / max(1, len(wo)),
        math.log1p(out.count(". ") + out.count("! ") + out.count("? ")),
        float(out.rstrip()[-1:] in ".!?"),
        float("?" in ins),
        sum(c.isupper() for c in out) / max(1, len(out)),
        float(out.strip().lower() == inp.strip().lower()) if inp.strip() else 0.0,
        math.log1p(len(out)) - math.log1p(len(inp) + len(ins)),
        float(bool(re.match(r"^(yes|no)\b", low))),
        float(len(wo) <= 3),
        *(
            float(bool(TASKS[k].search(ins.lower())))
            for k in ("asks_rewrite", "asks_math", "asks_creative", "asks_choice")
        ),
    ]


def hand_features(examples: Sequence[Example]) -> Any:
    """(rows, len(HAND_FEATURES)) float32: lists, code, numbers, refusals, overlap with the prompt, task kind."""
    import numpy as np

    return np.asarray([_hand_row(e) for e in examples], dtype=np.float32).reshape(len(examples), len(HAND_FEATURES))


def ngrams(text: str) -> list[str]:
    """Lower-cased words of 2+ characters and adjacent word pairs, as TfidfVectorizer(ngram_range=(1, 2))."""
    toks = TOKEN.findall(text.lower())
    return toks + [f"{a} {b}" for a, b in zip(toks, toks[1:])]


class Tfidf:
    """A fitted TF-IDF vocabulary with one linear weight per term: contribution(texts) = tfidf(text) . w,
    with sublinear tf (1 + log count), the fitted idf and L2 normalisation of each text's vector."""

    def __init__(self, vocab: Sequence[str], idf: Any, weight: Any) -> None:
        self.vocab = list(vocab)
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.idf, self.weight = idf, weight

    def contribution(self, texts: Sequence[str]) -> Any:
        import numpy as np

        out = np.zeros(len(texts))
        for r, text in enumerate(texts):
            counts: dict[int, int] = {}
            for g in ngrams(text):
                j = self.index.get(g)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            if not counts:
                continue
            idx = np.fromiter(counts, dtype=np.int64, count=len(counts))
            val = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * self.idf[idx]
            out[r] = float(val @ self.weight[idx]) / float(np.sqrt(val @ val))
        return out

    # Stored in head.npz as plain arrays: the vocabulary as one UTF-8 byte string joined by newlines
    # (no term contains one: the tokens are \w runs), so no pickle is needed to read it back.
    def arrays(self, prefix: str) -> dict[str, Any]:
        import numpy as np

        return {
            f"{prefix}_vocab": np.frombuffer("\n".join(self.vocab).encode("utf-8"), dtype=np.uint8),
            f"{prefix}_idf": np.asarray(self.idf, dtype=np.float64),
            f"{prefix}_w": np.asarray(self.weight, dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], prefix: str) -> Tfidf:
        vocab = bytes(arrays[f"{prefix}_vocab"]).decode("utf-8").split("\n")
        return cls(vocab, arrays[f"{prefix}_idf"], arrays[f"{prefix}_w"])
