"""What `taskling serve` and `taskling predict` run, found and loaded.

    t = resolve("my-run", root)        # a run id, a .gguf, an HF folder or a bundle .tar
    engine = load(t)                   # llama.cpp (GGUF) or transformers (HF folder)

A run resolves to runs/<id>/export/gguf/<name>-<quant>.gguf for llama.cpp (f16, then any
other GGUF, when that type was not exported) or to runs/<id>/export/merged for transformers.
A bundle (`taskling export --bundle`) is checked against its SHA256SUMS and unpacked into a
cache folder keyed by its sha256 (open_bundle), refusing links, devices and paths outside it.
task.json beside the model says how the student was prompted (system prompt, labels, schema);
without it the chat endpoints still work and /v1/task does not.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..core import tasktype
from ..core.errors import TasklingError
from .engine import Engine
from .hf import HFEngine
from .llama import LlamaEngine

QUANT_ORDER = ("q8_0", "q5_k_m", "q4_k_m", "q4_0")  # fallbacks when neither the asked type nor f16 exists
EXPORT_HINT = "run 'taskling export' first, or pass a run id, a .gguf file, a model folder or a bundle (.tar)"


@dataclass(frozen=True)
class Target:
    backend: str                 # "llama.cpp" | "transformers"
    path: Path                   # a .gguf file or an HF model folder
    info: dict                   # task.json ({} when there is none)
    source: str                  # what it came from, for the start-up line
    notes: tuple[str, ...] = ()  # fallbacks taken, told to the user once

    @property
    def model_id(self) -> str:
        return self.info.get("name") or (self.path.stem if self.path.suffix == ".gguf" else self.path.name)


def read_task(path: Path) -> dict:
    """task.json as a dict ({} when absent), checked enough that /v1/task can trust it."""
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TasklingError(f"{path}: not valid JSON ({e}); re-run 'taskling export' to rewrite it") from None
    if not isinstance(info, dict):
        raise TasklingError(f"{path}: must be a JSON object (name, type, system_prompt, ...)")
    kind = info.get("type")
    if kind is None:
        return info
    if kind not in tasktype.names():
        raise TasklingError(f"{path}: type {tasktype.unknown(kind)}")
    labels = tasktype.get(kind).served_decoding(info).labels
    if labels is not None and len(labels) < 2:
        raise TasklingError(f"{path}: a {kind} task needs a list of at least two 'labels'")
    return info


def resolve(target: str | None, root: Path, backend: str = "llama.cpp", quant: str = "q8_0",
            explicit: bool = False, sha256: str | None = None) -> Target:
    """The model to serve for `target`: None (the newest exported run), a run id, a .gguf
    file, an HF folder, an export folder or a bundle .tar. `backend` picks what a run
    serves; a file decides for itself, and an `explicit` backend that disagrees is an error."""
    root = Path(root)
    if target is None:
        return from_export(newest_export(root), backend, quant, explicit)
    run = root / "runs" / target / "export"
    path = Path(target).expanduser()
    if "/" not in target and run.is_dir():
        return from_export(run, backend, quant, explicit)
    if path.is_file() and path.suffix in (".tar", ".bundle"):
        return check_backend(open_bundle(path, sha256=sha256), backend, explicit)
    if path.is_file() and path.suffix == ".gguf":
        t = Target("llama.cpp", path.resolve(), read_task(path.parent / "task.json"), f"GGUF {path}")
        return check_backend(t, backend, explicit)
    if path.is_dir() and (path / "config.json").exists():
        t = Target("transformers", path.resolve(), read_task(path / "task.json"), f"model folder {path}")
        return check_backend(t, backend, explicit)
    if path.is_dir() and ((path / "merged").is_dir() or (path / "gguf").is_dir()):
        return from_export(path, backend, quant, explicit)
    raise TasklingError(f"'{target}' is neither a run ({run} does not exist), a .gguf file, a model folder "
                        f"with config.json nor a bundle .tar; {EXPORT_HINT}")


def check_backend(t: Target, backend: str, explicit: bool) -> Target:
    if explicit and backend != t.backend:
        need = ".gguf file (or a run with GGUF exports)" if backend == "llama.cpp" else "model folder or run"
        raise TasklingError(f"{t.source} runs on {t.backend}; --backend {backend} needs a {need}")
    return t


def newest_export(root: Path) -> Path:
    """The export finished last: only an export with its finished manifest.json counts (an export
    killed halfway has model files and no manifest)."""
    from ..core.manifests import ExportManifest

    found = [d for d in (root / "runs").glob("*/export") if ExportManifest.read(d) is not None]
    if not found:
        half = [d for d in (root / "runs").glob("*/export") if d.is_dir()]
        raise TasklingError(f"no exported model in {root / 'runs'}/*/export"
                            + (f" ({half[0]} has no manifest.json: it stopped halfway)" if half else "")
                            + f"; {EXPORT_HINT}")
    return max(found, key=lambda d: (d / "manifest.json").stat().st_mtime)


def finished_export(export: Path) -> Path:
    """`export` when its manifest.json says the export finished; else an error saying what to run."""
    from ..core.manifests import ExportManifest

    if ExportManifest.read(export) is None:
        raise TasklingError(f"{export}: no finished export here (manifest.json is missing or damaged: an export that "
                            "stopped halfway?); run 'taskling export' again, then serve it")
    return export


def export_ggufs(gdir: Path) -> dict[str, Path]:
    """Exported GGUF files by type (f16, q8_0, ...), the LoRA adapter left out."""
    return {p.stem.rsplit("-", 1)[-1]: p for p in sorted(gdir.glob("*.gguf")) if "-lora-" not in p.name}


def from_export(export: Path, backend: str, quant: str, explicit: bool) -> Target:
    finished_export(export)
    return model_of_export(export, backend, quant, explicit)


def model_of_export(export: Path, backend: str, quant: str, explicit: bool) -> Target:
    merged, gdir = export / "merged", export / "gguf"
    where = f"run {export.parent.name}" if export.parent.parent.name == "runs" else f"export {export}"
    if backend == "transformers":
        if not (merged / "config.json").exists():
            raise TasklingError(f"{merged}: no merged model to serve with transformers; run 'taskling export'")
        return Target("transformers", merged.resolve(), read_task(merged / "task.json"), f"{where} (merged/)")
    info = read_task(gdir / "task.json") or read_task(merged / "task.json")
    files = export_ggufs(gdir)
    if quant in files:
        return Target("llama.cpp", files[quant].resolve(), info, where)
    missing = gdir / f"{info.get('name', '<task>')}-{quant}.gguf"
    for alt in ("f16", *QUANT_ORDER):
        if alt in files:
            note = (f"{missing} was not exported; serving {alt} instead "
                    f"(add {quant} to export.gguf and re-run 'taskling export' to serve it)")
            return Target("llama.cpp", files[alt].resolve(), info, where, (note,))
    has_merged = (merged / "config.json").exists()
    if explicit or not has_merged:
        raise TasklingError(f"{gdir}: no GGUF file exported; set export.gguf and re-run 'taskling export'"
                            + (", or serve merged/ with --backend transformers" if has_merged else ""))
    note = f"{gdir} holds no GGUF (export.gguf is empty); serving {merged} with transformers instead"
    return Target("transformers", merged.resolve(), read_task(merged / "task.json"), f"{where} (merged/)", (note,))


# -------------------------------------------------------------------------------------------- bundles
BUNDLE_HINT = "re-create it with 'taskling export --bundle'"


def bundle_cache() -> Path:
    from ..core.packages import cache_root

    return cache_root() / "bundles"


def open_bundle(tar: Path, cache: Path | None = None, sha256: str | None = None) -> Target:
    """Serve a bundle: verified and unpacked once into <cache>/<sha256 of the tar>/. The file is opened
    once; the key of what is unpacked is the digest of the very bytes unpacked (no time-of-check/
    time-of-use gap), and `sha256` (the digest the user got from whoever made the bundle) pins it:
    SHA256SUMS inside a bundle proves it is whole, not who made it."""
    from ..core.workspace import sha256_stream

    with open(tar, "rb") as f:
        whole = sha256_stream(f)
        check_pin(tar, whole, sha256)
        dest = (cache or bundle_cache()) / whole
        if (dest / ".verified").exists():
            return bundle_target(tar, dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        f.seek(0)
        digest = unpack_bundle(tar, f, dest.parent)
    check_pin(tar, digest, sha256)
    return bundle_target(tar, dest.parent / digest)


def check_pin(tar: Path, digest: str, pinned: str | None) -> None:
    if pinned and digest != pinned.strip().lower():
        raise TasklingError(f"{tar}: its sha256 is {digest}, not the {pinned.strip()} you pinned (--sha256): it is "
                            "not the bundle you were given; refusing to serve it")


def unpack_bundle(tar: Path, f, cache: Path) -> str:
    """Unpack the open bundle `f` into a temporary folder, check everything (sums, serve.json, task.json),
    and only then mark it verified and move it to <cache>/<digest of the bytes read>; its digest. A refused
    bundle leaves nothing in the cache."""
    import shutil
    import tempfile

    from ..core.tarsafe import hashing

    stream, digest = hashing(f)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".unpacking."))
    try:
        check_sums(tar, tmp, extract_members(tar, tmp, stream))
        bundle_target(tar, tmp)
        while stream.read(1 << 20):  # the rest (tar padding): the digest covers the whole file
            pass
        dest = cache / digest.hexdigest()
        (tmp / ".verified").write_text(f"{tar}\n")
        try:
            os.replace(tmp, dest)
        except OSError:  # another server unpacked the same bundle meanwhile
            if not (dest / ".verified").exists():
                raise
        return digest.hexdigest()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def member_name(tar: Path, m) -> str:
    """A member's path inside the bundle, refusing anything that could write outside the
    folder or be more than plain data: absolute paths, '..', links, devices, FIFOs."""
    from pathlib import PurePosixPath

    name = m.name
    kinds = [(m.issym(), "is a symbolic link"), (m.islnk(), "is a hard link"), (m.ischr() or m.isblk(), "is a device"),
             (m.isfifo(), "is a FIFO")]  # sparse members never get here: core.tarsafe refuses them
    why = next((w for bad, w in kinds if bad), None) or (None if m.isreg() or m.isdir() else "is not a regular file")
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        why = "has an absolute path"
    elif ".." in parts or "\\" in name:
        why = "points outside the bundle ('..' or '\\' in its path)"
    elif not parts or parts == (".",):
        why = why or ("is the bundle's own folder" if m.isdir() else "has an empty name")
    if why:
        raise TasklingError(f"{tar}: member '{name}' {why}; refusing to unpack this bundle ({BUNDLE_HINT})")
    return "/".join(p for p in parts if p != ".")


def extract_members(tar: Path, into: Path, stream) -> dict[str, str]:
    """Unpack regular files and folders (nothing else) read from `stream` and hash each file as it is
    written; over-long headers and sparse members are refused before they are read (core.tarsafe)."""
    import hashlib
    import tarfile

    from ..core.tarsafe import TarRefused, open_stream

    hashes: dict[str, str] = {}
    try:
        tf = open_stream(stream, None, what=str(tar))[0]
        with tf:
            for m in tf:
                if m.isdir() and m.name.strip("./") == "":
                    continue
                name = member_name(tar, m)
                if name in hashes:
                    raise TasklingError(f"{tar}: member '{name}' appears twice; refusing to unpack ({BUNDLE_HINT})")
                out = into / name
                if m.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with tf.extractfile(m) as src, open(out, "xb") as dst:
                    while block := src.read(1 << 20):
                        h.update(block)
                        dst.write(block)
                hashes[name] = h.hexdigest()
    except TarRefused as e:
        raise TasklingError(f"{tar}: refusing to unpack this bundle: {e}; {BUNDLE_HINT}") from None
    except tarfile.TarError as e:
        raise TasklingError(f"{tar}: not a readable uncompressed tar bundle ({e}); {BUNDLE_HINT}") from None
    except OSError as e:
        raise TasklingError(f"{tar}: cannot unpack it into {into} ({e.strerror or e})") from None
    return hashes


def check_sums(tar: Path, folder: Path, hashes: dict[str, str]) -> None:
    """Every other member listed in SHA256SUMS, and each one's digest equal to its listing."""
    if hashes.pop("SHA256SUMS", None) is None:
        raise TasklingError(f"{tar}: has no SHA256SUMS member, so it is not a taskling bundle; {BUNDLE_HINT}")
    listed: dict[str, str] = {}
    for n, line in enumerate((folder / "SHA256SUMS").read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        digest, _, name = line.strip().partition(" ")
        name = name.strip().removeprefix("*")
        if not line.strip():
            continue
        if len(digest) != 64 or not name:
            raise TasklingError(f"{tar}: SHA256SUMS line {n} is not '<sha256>  <member>': {line[:80]!r}")
        listed[name.removeprefix("./")] = digest.lower()
    for name, digest in listed.items():
        if name not in hashes:
            raise TasklingError(f"{tar}: member '{name}' is listed in SHA256SUMS but missing; {BUNDLE_HINT}")
        if hashes[name] != digest:
            raise TasklingError(f"{tar}: member '{name}' does not match its SHA256SUMS checksum: the bundle is "
                                f"damaged or was altered; refusing to serve it ({BUNDLE_HINT})")
    for name in hashes:
        if name not in listed:
            raise TasklingError(f"{tar}: member '{name}' is not listed in SHA256SUMS; refusing to serve it "
                                f"({BUNDLE_HINT})")


def bundle_target(tar: Path, folder: Path) -> Target:
    """What serve.json says to run: model.gguf on llama.cpp or model/ on transformers."""
    try:
        spec = json.loads((folder / "serve.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TasklingError(f"{tar}: has no serve.json member; {BUNDLE_HINT}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TasklingError(f"{tar}: serve.json is not valid JSON ({e}); {BUNDLE_HINT}") from None
    backend, model = spec.get("backend"), str(spec.get("model") or "")
    if backend not in ("llama.cpp", "transformers"):
        raise TasklingError(f"{tar}: serve.json backend {backend!r} is not 'llama.cpp' or 'transformers'")
    path = (folder / model).resolve()
    inside = path.is_relative_to(folder.resolve()) and path != folder.resolve()
    ok = path.is_file() and path.suffix == ".gguf" if backend == "llama.cpp" else (path / "config.json").is_file()
    if not model or not inside or not ok:
        want = "a .gguf member" if backend == "llama.cpp" else "a folder member with config.json"
        raise TasklingError(f"{tar}: serve.json model {model!r} is not {want} of the bundle; {BUNDLE_HINT}")
    return Target(backend, path, read_task(folder / "task.json"), f"bundle {tar}")



# -------------------------------------------------------------------------------------------- loading
def load(target: Target, threads: int | None = None) -> Engine:
    if target.backend == "llama.cpp":
        return LlamaEngine(target.path, target.info, threads)
    return HFEngine(target.path, target.info, threads)
