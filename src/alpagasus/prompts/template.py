"""Prompt templates are files; every rating records the version (name + content hash) of the one it used.

A template file has sections introduced by lines `<<<meta>>>`, `<<<system>>>`, `<<<logprob_prefix>>>` and
`<<<user>>>`. The user section runs to the end of the file, byte for byte, because the paper's prompt ends in
" \\n\\n". Placeholders are `{instruction}`, `{input}`, `{output}` (and any other field of the record).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

SECTION = re.compile(r"^<<<(\w+)>>>\n", re.M)
PLACEHOLDER = re.compile(r"\{(\w+)\}")
BUILTIN_RATING = {
    "accuracy": "rate_accuracy",
    "helpfulness": "rate_helpfulness",
    "accuracy-guarded": "rate_accuracy_guarded",
    "helpfulness-guarded": "rate_helpfulness_guarded",
    # the paper's words with the fixed rubric first and the data last (prefix caching; opt-in)
    "accuracy-prefix": "rate_accuracy_prefix",
    "helpfulness-prefix": "rate_helpfulness_prefix",
}


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Template:
    name: str
    system: str
    user: str
    version: str
    scale: tuple[float, float] = (0.0, 5.0)
    logprob_prefix: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> tuple[str, ...]:
        """Single-token score labels read in logprob mode: the integers of the scale."""
        lo, hi = int(self.scale[0]), int(self.scale[1])
        return tuple(str(i) for i in range(lo, hi + 1))

    def render(self, values: Mapping[str, Any]) -> str:
        """Fill the user section in one pass, so text inside the data is never substituted again."""

        def sub(m: re.Match) -> str:
            key = m.group(1)
            return str(values[key]) if key in values else m.group(0)

        return PLACEHOLDER.sub(sub, self.user)


def parse_template(text: str, name: str) -> Template:
    parts = SECTION.split(text)
    sections: dict[str, str] = {}
    for i in range(1, len(parts) - 1, 2):
        key, body = parts[i], parts[i + 1]
        sections[key] = body if key == "user" else body.rstrip("\n")
    if "user" not in sections:
        raise TemplateError(f"template {name}: no <<<user>>> section")
    meta = {}
    for line in sections.get("meta", "").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            k, _, v = line.partition(":")
            meta[k.strip()] = v.strip()
    lo, _, hi = meta.get("scale", "0-5").partition("-")
    try:
        scale = (float(lo), float(hi))
        if not scale[0] < scale[1]:  # also NaN
            raise ValueError(scale)
    except ValueError:
        raise TemplateError(f"template {name}: bad scale {meta.get('scale')!r} (expected e.g. 0-5)") from None
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    return Template(
        name,
        sections.get("system", ""),
        sections["user"],
        f"{name}@{digest}",
        scale,
        sections.get("logprob_prefix", ""),
        meta,
    )


def builtin_text(name: str) -> str:
    return resources.files("alpagasus.prompts").joinpath(f"{name}.txt").read_text(encoding="utf-8")


def load_template(name_or_path: str, scale: str | None = None) -> Template:
    """A built-in template by name (`accuracy`, `helpfulness`, `rate_accuracy`, `pairwise`...) or a file path.
    `scale` ("LO-HI") overrides the template's own."""
    path = Path(name_or_path)
    if path.suffix == ".txt" and path.exists():
        text, name = path.read_text(encoding="utf-8"), path.stem
    else:
        name = BUILTIN_RATING.get(name_or_path, name_or_path)
        try:
            text = builtin_text(name)
        except FileNotFoundError:
            raise TemplateError(
                f"no template {name_or_path!r}: not a file, and not one of {', '.join(BUILTIN_RATING)}"
            ) from None
    if scale:
        text = (
            re.sub(r"(?m)^scale:.*$", f"scale: {scale}", text, count=1)
            if "scale:" in text
            else text.replace("<<<meta>>>\n", f"<<<meta>>>\nscale: {scale}\n", 1)
            if "<<<meta>>>" in text
            else f"<<<meta>>>\nscale: {scale}\n{text}"
        )
    return parse_template(text, name)
