"""GGUF files: an HF folder or a PEFT LoRA adapter to GGUF with llama.cpp's own
converters, quantization and greedy runs through llama-cpp-python (the real consumer
of an exported GGUF). The Ollama Modelfile beside a GGUF is `ollama`'s.

The converter scripts are not in the llama-cpp-python wheel; its sdist carries
them (vendor/llama.cpp) with the gguf-py they need, which is newer than the
PyPI `gguf` of the same version number. Set-up extracts them once, offline
from the sdist kept in the wheelhouse or by fetching that sdist with pip:

    .venv/bin/python -m taskling.student.gguf --prepare

into ~/.cache/taskling/llama.cpp-<version>/. Nothing is fetched at run time.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..core.errors import TasklingError
from ..core.executor import cpu_threads
from ..core.packages import cache_root, publish_dir
from ..core.workspace import sha256_file

PREPARE_CMD = ".venv/bin/python -m taskling.student.gguf --prepare"
SCRIPTS = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py")
# What the two scripts need from vendor/llama.cpp: their shared `conversion`
# package, the vendored gguf-py, and the two built-in vocabularies some
# architectures without a tokenizer.json fall back to.
_KEEP = re.compile(r"(convert_hf_to_gguf\.py|convert_lora_to_gguf\.py|LICENSE|conversion/.*\.py"
                   r"|gguf-py/(gguf/.*|pyproject\.toml|LICENSE)|requirements/requirements-convert_.*\.txt"
                   r"|models/ggml-vocab-(gpt-neox|llama-spm)\.gguf)")
_MARKER = "taskling-prepared.json"
CONVERT_OUTTYPES = ("f32", "f16", "bf16", "q8_0", "auto")
QTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
          "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
          "f16": "LLAMA_FTYPE_MOSTLY_F16"}


# ---------------------------------------------------------------- converter scripts

def llama_cpp_version() -> str:
    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        raise TasklingError("GGUF export needs llama-cpp-python; run 'make setup'") from None


def scripts_dir() -> Path:
    """Where the extracted converter scripts of the installed llama-cpp-python live."""
    return cache_root() / f"llama.cpp-{llama_cpp_version()}"


def wheelhouse() -> Path:
    """The wheelhouse scripts/setup.sh builds llama-cpp-python into (kept outside clones)."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "taskling" / "wheelhouse"
    return Path(os.environ.get("WHEELHOUSE") or default)


def _sdist_names(ver: str) -> list[str]:
    return [f"llama_cpp_python-{ver}.tar.gz", f"llama-cpp-python-{ver}.tar.gz"]


def find_sdist(ver: str | None = None) -> Path | None:
    """A local llama-cpp-python sdist of `ver` (the installed one by default):
    in the wheelhouse or the taskling cache. pip's own cache is not searched:
    it stores downloads under hashed names."""
    ver = ver or llama_cpp_version()
    for folder in (wheelhouse(), cache_root()):
        for name in _sdist_names(ver):
            if (folder / name).is_file():
                return folder / name
    return None


def download_sdist(dest: Path | None = None, ver: str | None = None) -> Path:
    """Fetch the sdist with pip (set-up time only: it needs the package index)."""
    ver = ver or llama_cpp_version()
    dest = dest or wheelhouse()
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
           "-d", str(dest), f"llama-cpp-python=={ver}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = next((dest / n for n in _sdist_names(ver) if (dest / n).is_file()), None)
    if proc.returncode != 0 or found is None:
        raise TasklingError(f"could not download the llama-cpp-python {ver} sdist with pip "
                            f"(exit {proc.returncode}): {_tail(proc.stderr)}")
    return found


def prepare(sdist: Path | None = None, download: bool = True) -> Path:
    """Extract llama.cpp's converter scripts from the llama-cpp-python sdist
    into scripts_dir(), once. The sdist is `sdist`, else one found locally,
    else (download=True) fetched with pip into the wheelhouse."""
    ver = llama_cpp_version()
    final = scripts_dir()
    if (final / _MARKER).exists():
        return final
    sdist = sdist or find_sdist(ver)
    if sdist is None:
        if not download:
            raise TasklingError(f"llama.cpp's converter scripts for llama-cpp-python {ver} are not set up "
                                f"({final} is missing); run '{PREPARE_CMD}' (or 'make setup') once")
        sdist = download_sdist(ver=ver)
    final.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        n = _extract(sdist, build, ver)
        missing = [s for s in SCRIPTS if not (build / s).is_file()]
        if missing or not (build / "gguf-py" / "gguf" / "__init__.py").is_file():
            raise TasklingError(f"{sdist}: no vendor/llama.cpp/{', '.join(missing) or 'gguf-py'} in it; "
                                f"is it the llama-cpp-python {ver} sdist?")
        (build / _MARKER).write_text(json.dumps({
            "llama_cpp_python": ver, "sdist": sdist.name, "sha256": sha256_file(sdist), "files": n,
            "gguf_py": _gguf_py_version(build)}, indent=1) + "\n")
        if final.exists() and not (final / _MARKER).exists():  # left half-made by hand
            shutil.rmtree(final)
        publish_dir(build, final)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return final


def _extract(sdist: Path, into: Path, ver: str) -> int:
    n = 0
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/", 3)
                if len(parts) < 4 or parts[1:3] != ["vendor", "llama.cpp"]:
                    continue
                if not parts[0].endswith(f"-{ver}"):  # scripts must match the compiled library
                    raise TasklingError(f"{sdist} holds {parts[0]}, but llama-cpp-python {ver} is installed")
                rel = parts[3]
                if not member.isfile() or not _KEEP.fullmatch(rel):
                    continue
                member.name = rel
                tar.extract(member, into, filter="data")
                n += 1
    except (tarfile.TarError, OSError, EOFError) as e:
        raise TasklingError(f"{sdist}: cannot read it as a tar.gz ({e}); delete it and run '{PREPARE_CMD}'") from None
    return n


def _gguf_py_version(root: Path) -> str:
    m = re.search(r'^version\s*=\s*"([^"]+)"', (root / "gguf-py" / "pyproject.toml").read_text(), re.M)
    return m.group(1) if m else "?"


def converter_script(name: str = "convert_hf_to_gguf.py") -> Path:
    """llama.cpp's converter script `name` for the installed llama-cpp-python.
    Extracts it from a local sdist if needed; never downloads."""
    if name not in SCRIPTS:
        raise TasklingError(f"unknown converter script '{name}'; known: {', '.join(SCRIPTS)}")
    root = scripts_dir()
    if not (root / _MARKER).exists():
        root = prepare(download=False)
    return root / name


def _converter_env(root: Path) -> dict:
    env = dict(os.environ)
    # The scripts need the gguf-py they ship with (the PyPI gguf 0.19.0 lacks
    # what they use); they put it first on sys.path unless NO_LOCAL_GGUF is set.
    env.pop("NO_LOCAL_GGUF", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root / "gguf-py"), env.get("PYTHONPATH")) if p)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    return env


def _tail(text: str, n: int = 12) -> str:
    """The last meaningful lines of a subprocess's output (progress bars dropped)."""
    lines = [x.strip() for x in re.split(r"[\r\n]+", text or "")]
    lines = [x for x in lines if x and not re.match(r"^Writing:|^\S*:\s*\d+%\|", x)]
    return "\n    ".join(lines[-n:]) or "(no output)"


def _hint(stderr: str) -> str:
    if "pre-tokenizer was not recognized" in stderr:
        return ("llama.cpp's converter does not know this tokenizer (the hash of its pre-tokenizer output is not "
                "in its list); models whose tokenizer llama.cpp supports (SmolLM2, Llama 3, Qwen2.5, Gemma...) convert")
    m = re.search(r"No module named '([\w.]+)'", stderr)
    if m:
        return f"the converter needs the Python package '{m.group(1).split('.')[0]}'; run 'make setup'"
    m = re.search(r"Model (\w+) is not supported|Architecture '(\w+)' not supported", stderr)
    if m:
        return f"llama.cpp's converter does not support the architecture {m.group(1) or m.group(2)}"
    return ""


def _run_converter(script: str, args: list[str], out: Path, what: str) -> Path:
    """Run a converter into a temp file beside `out`, then rename it into place."""
    path = converter_script(script)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        proc = subprocess.run([sys.executable, str(path), *args, "--outfile", tmp],
                              capture_output=True, text=True, errors="replace", env=_converter_env(path.parent))
        if proc.returncode != 0 or os.path.getsize(tmp) == 0:
            hint = _hint(proc.stderr)
            # With a hint the traceback's last lines are enough to report it.
            raise TasklingError(f"{what}: {script} failed (exit {proc.returncode})"
                                + (f": {hint}" if hint else "") + f"\n    {_tail(proc.stderr, 3 if hint else 12)}")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------- conversion and quantization

def hf_to_gguf(model_dir: Path, out: Path, outtype: str = "f16") -> Path:
    """An HF model folder (config.json, safetensors, tokenizer) to one GGUF file."""
    model_dir = Path(model_dir)
    if outtype not in CONVERT_OUTTYPES:
        raise TasklingError(f"GGUF outtype '{outtype}' is not one of {', '.join(CONVERT_OUTTYPES)}")
    if not (model_dir / "config.json").is_file():
        raise TasklingError(f"{model_dir}: not an HF model folder (no config.json)")
    return _run_converter("convert_hf_to_gguf.py", [str(model_dir), "--outtype", outtype], out, str(model_dir))


def lora_to_gguf(adapter_dir: Path, base_dir: Path, out: Path, outtype: str = "f16") -> Path:
    """A PEFT LoRA adapter folder to a GGUF adapter for llama.cpp (lora_path=)
    and Ollama (ADAPTER). `base_dir` is the HF folder of the model it was
    trained on; only its config is read."""
    adapter_dir, base_dir = Path(adapter_dir), Path(base_dir)
    if outtype not in ("f32", "f16", "bf16", "q8_0"):
        raise TasklingError(f"GGUF adapter outtype '{outtype}' is not one of f32, f16, bf16, q8_0")
    if not (adapter_dir / "adapter_config.json").is_file():
        raise TasklingError(f"{adapter_dir}: not a PEFT adapter folder (no adapter_config.json)")
    if not (base_dir / "config.json").is_file():
        raise TasklingError(f"{base_dir}: not an HF model folder (no config.json) for the adapter's base")
    return _run_converter("convert_lora_to_gguf.py",
                          ["--base", str(base_dir), "--outtype", outtype, str(adapter_dir)], out, str(adapter_dir))


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


def quantize(src: Path, out: Path, qtype: str) -> Path:
    """Requantize a GGUF file with llama.cpp (q8_0, q4_k_m, q4_0, q5_k_m, f16).
    Tensors whose rows do not fit a k-quant block get llama.cpp's fallback type."""
    import llama_cpp

    src, out = Path(src), Path(out)
    if qtype not in QTYPES:
        raise TasklingError(f"quantization type '{qtype}' is not one of {', '.join(QTYPES)}")
    try:
        with open(src, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise TasklingError(f"{src}: cannot read it ({e.strerror})") from None
    if magic != b"GGUF":
        raise TasklingError(f"{src}: not a GGUF file")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QTYPES[qtype])
    params.allow_requantize = True
    params.nthread = cpu_threads()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with quiet_stderr():  # llama.cpp prints a line per tensor
            rc = llama_cpp.llama_model_quantize(str(src).encode(), tmp.encode(), params)
        if rc != 0:
            raise TasklingError(f"{src}: llama.cpp could not quantize it to {qtype} (code {rc})")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def greedy(path: Path, prompts: list[list[int]], max_tokens: int, stop_ids: list[int], *,
           lora: Path | None = None, n_ctx: int = 2048, threads: int | None = None) -> list[dict]:
    """Greedy completions of token-id prompts by llama.cpp (llama-cpp-python),
    optionally with a GGUF LoRA adapter applied: the real consumer of an exported
    GGUF. Each: the completion's token ids, their count and seconds."""
    from llama_cpp import Llama

    n = cpu_threads(threads)
    try:
        with quiet_stderr():
            llm = Llama(model_path=str(path), lora_path=str(lora) if lora else None, n_ctx=n_ctx,
                        n_threads=n, n_threads_batch=n, verbose=False, seed=0)
    except (ValueError, RuntimeError) as e:
        raise TasklingError(f"{lora or path}: llama.cpp could not load it ({e})") from None
    out = []
    try:
        for prompt in prompts:
            t0 = time.perf_counter()
            ids: list[int] = []
            if len(prompt) + max_tokens > n_ctx:
                raise TasklingError(f"{path}: a prompt of {len(prompt)} tokens does not fit n_ctx={n_ctx}")
            for tok in llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
                if tok in stop_ids or len(ids) >= max_tokens:
                    break
                ids.append(tok)
            out.append({"ids": ids, "completion_tokens": len(ids), "seconds": time.perf_counter() - t0})
    finally:
        llm.close()
    return out


# ---------------------------------------------------------------- set-up entry point

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m taskling.student.gguf", description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepare", action="store_true",
                    help="extract llama.cpp's converter scripts (fetching the sdist with pip if no local copy)")
    ap.add_argument("--sdist", type=Path, help="a local llama-cpp-python sdist to extract from")
    ap.add_argument("--offline", action="store_true", help="with --prepare: never download")
    args = ap.parse_args(argv)
    if not args.prepare:
        ap.print_help()
        return 0
    try:
        root = prepare(args.sdist, download=not args.offline)
    except TasklingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"llama.cpp converter scripts ready: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
