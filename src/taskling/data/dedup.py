"""Exact and near-duplicate detection for chunks, before anything is embedded
or sent to a teacher: the same boilerplate page ingested twice, a licence
header in every file or two versions of one manual would otherwise be
over-represented in everything generated from the pile.

Two tests, in order, for each item:
  - exact: the SHA-1 of the normalised text (lowercase, punctuation gone,
    whitespace collapsed) was seen before;
  - near: MinHash (datasketch, 128 permutations) over word 5-shingles -
    character 5-grams for texts under 20 words, where one changed word would
    wipe out most word shingles - finds candidates through an LSH index, and
    a candidate counts only if the estimated Jaccard similarity reaches the
    threshold. An item is a duplicate of the earliest such kept item. With
    128 permutations the estimate has a standard error of about 0.03, so
    pairs within a few hundredths of the threshold go either way.

Only kept (first) items go into the LSH index, so `Duplicate.of` for a near
duplicate always names a kept item; an exact copy names the first item with
that text, which may itself be a near duplicate (follow `of` at most twice).

Incremental ingest: store `exact_key(text)` and `signature(text)` (a
524-byte blob) for every chunk; on the next run build a `DedupIndex`, `add`
the stored rows (nothing is re-hashed) and `check` the new chunks. Existing
chunks count as earlier than any new one. A signature records its
parameters, and loading one made with others raises ValueError.
"""
from __future__ import annotations

import hashlib
import re
import struct
import unicodedata
import zlib
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Literal

import numpy as np

_NON_WORD = re.compile(r"[\W_]+")
_SHORT_WORDS = 20  # below this many words, shingle characters instead
_CHAR_GRAM = 5
_SIG_HEAD = struct.Struct("<4sHHI")  # magic, shingle, num_perm, seed
_SIG_MAGIC = b"TKM1"  # version 1: datasketch "affine32" permutations
_SCHEME = "affine32"
# Odd 64-bit multiplier for combining word hashes into a shingle hash.
_MIX = np.uint64(0x9E3779B97F4A7C15)


def normalise(text: str) -> str:
    """The text as compared for duplicates: Unicode-compatibility folded,
    lowercased, every run of punctuation/underscores/whitespace one space.
    Punctuation becomes a space (not nothing) so "end.Next" and "end. Next"
    agree."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def exact_key(text: str) -> str:
    """SHA-1 hex of the normalised text: equal keys mean exact duplicates."""
    return _sha1(normalise(text))


def _sha1(norm: str) -> str:
    return hashlib.sha1(norm.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Duplicate:
    """`item` repeats `of` (both are the caller's keys). similarity is 1.0
    for exact duplicates and the estimated Jaccard of the shingle sets for
    near ones."""
    item: Hashable
    of: Hashable
    method: Literal["exact", "near"]
    similarity: float


def _identity(h):
    return h


def shingle_hashes(text: str, shingle: int = 5) -> np.ndarray:
    """32-bit hashes of the text's shingles (a set: sorted, unique).

    Word shingles are hashed without building strings: each word once
    (CRC-32), then `shingle` consecutive word hashes folded together with a
    multiply-add in 64 bits. Fast and stable across runs and machines
    (Python's own hash() is salted per process, which would break stored
    signatures)."""
    return _shingle_hashes(normalise(text), shingle)


def _shingle_hashes(norm: str, shingle: int) -> np.ndarray:
    if not norm:
        return np.zeros(0, dtype=np.uint32)
    words = norm.split(" ")
    if len(words) < max(_SHORT_WORDS, shingle):
        n = max(1, len(norm) - _CHAR_GRAM + 1)
        # A leading \x01 keeps character grams apart from word shingles.
        hs = [zlib.crc32(norm[i:i + _CHAR_GRAM].encode("utf-8"), 1) for i in range(n)]
        return np.unique(np.array(hs, dtype=np.uint32))
    wh = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))
    n = len(words) - shingle + 1
    with np.errstate(over="ignore"):
        h = np.zeros(n, dtype=np.uint64)
        for j in range(shingle):
            h = h * _MIX + wh[j:j + n]
        h ^= h >> np.uint64(29)
        h *= _MIX
    return np.unique((h >> np.uint64(32)).astype(np.uint32))


class DedupIndex:
    """Incremental duplicate finder: `add` existing items (from their stored
    exact key and signature), then `check` new ones in order. check() both
    answers and records the item, so later items can match it.

    Memory is about 1 KB per kept item (hash values plus LSH band keys):
    ~100 MB for 100k chunks."""

    def __init__(self, threshold: float = 0.85, num_perm: int = 128, shingle: int = 5, seed: int = 1):
        from datasketch import MinHash, MinHashLSH

        if not 0.0 < threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        self.threshold, self.num_perm, self.shingle, self.seed = threshold, num_perm, shingle, seed
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=_lsh_params(threshold, num_perm))
        # Fresh MinHashes copy this template: the permutations are made once.
        # The scheme is pinned (datasketch >= 2.0) because stored signatures
        # are only comparable under the scheme that made them.
        self._template = MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity, scheme=_SCHEME)
        self._exact: dict[str, Hashable] = {}
        self._keys: list[Hashable] = []  # LSH key (an int, the arrival order) -> caller's key
        self._sigs: list = []            # LeanMinHash of each kept item, same order

    def __len__(self) -> int:
        return len(self._keys)

    # -- signatures ------------------------------------------------------

    def minhash(self, text: str):
        """The LeanMinHash of a text under this index's parameters."""
        return self._minhash(normalise(text))

    def _minhash(self, norm: str):
        from datasketch import LeanMinHash

        m = self._template.copy()
        hs = _shingle_hashes(norm, self.shingle)
        if len(hs):
            m.update_batch(hs.tolist())
        return LeanMinHash(m)

    def signature(self, text: str) -> bytes:
        """Bytes to store with a chunk so it never has to be hashed again."""
        return self._to_bytes(self.minhash(text))

    def _to_bytes(self, m) -> bytes:
        return _SIG_HEAD.pack(_SIG_MAGIC, self.shingle, self.num_perm, self.seed) + \
            np.asarray(m.hashvalues, dtype="<u4").tobytes()

    def load_signature(self, blob: bytes):
        """The LeanMinHash stored by signature(); ValueError if it was made
        with other parameters (the pile must then be re-hashed)."""
        from datasketch import LeanMinHash

        try:
            magic, shingle, num_perm, seed = _SIG_HEAD.unpack_from(blob)
        except struct.error:
            raise ValueError("not a dedup signature") from None
        if magic != _SIG_MAGIC or len(blob) != _SIG_HEAD.size + 4 * num_perm:
            raise ValueError("not a dedup signature")
        if (shingle, num_perm, seed) != (self.shingle, self.num_perm, self.seed):
            raise ValueError(f"signature made with shingle={shingle}, num_perm={num_perm}, seed={seed}; "
                             f"this index uses {self.shingle}, {self.num_perm}, {self.seed}")
        values = np.frombuffer(blob, dtype="<u4", offset=_SIG_HEAD.size).astype(np.uint32)
        return LeanMinHash(seed=seed, hashvalues=values, scheme=_SCHEME)

    # -- indexing --------------------------------------------------------

    def add(self, key: Hashable, exact: str | None = None, signature: bytes | None = None,
            text: str | None = None) -> None:
        """Record an existing, kept item without checking it: its stored
        exact key and signature, or its text to compute whichever is missing."""
        if exact is None:
            if text is None:
                raise ValueError("add() needs the item's exact key or its text")
            exact = exact_key(text)
        if signature is not None:
            m = self.load_signature(signature)
        elif text is not None:
            m = self.minhash(text)
        else:
            raise ValueError("add() needs the item's signature or its text")
        self._exact.setdefault(exact, key)
        self._insert(key, m)

    def check(self, key: Hashable, text: str, signature: bytes | None = None,
              accept: Callable[[Hashable], bool] | None = None) -> Duplicate | None:
        """The Duplicate this item is, or None if it is new (then it is kept
        and indexed). Pass `signature` if you already computed it, and
        `accept(earlier key)` to say which earlier items it may repeat at all
        (default: any)."""
        norm = normalise(text)
        ek = _sha1(norm)
        first = self._exact.get(ek)
        if first is not None and (accept is None or accept(first)):
            return Duplicate(key, first, "exact", 1.0)
        self._exact.setdefault(ek, key)
        m = self.load_signature(signature) if signature is not None else self._minhash(norm)
        if not m.is_empty():
            for cand in sorted(self._lsh.query(m)):  # earliest first
                if accept is not None and not accept(self._keys[cand]):
                    continue
                sim = m.jaccard(self._sigs[cand])
                if sim >= self.threshold:
                    return Duplicate(key, self._keys[cand], "near", float(sim))
        self._insert(key, m)
        return None

    def _insert(self, key: Hashable, m) -> None:
        seq = len(self._keys)
        self._keys.append(key)
        self._sigs.append(m)
        if not m.is_empty():  # an empty text has no shingles: nothing to be near
            self._lsh.insert(seq, m, check_duplication=False)


def _lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) for the LSH: the fewest rows per band (so the fewest
    spurious candidates) that still make a pair exactly at the threshold a
    candidate with probability >= 0.99.

    datasketch's own choice balances false positives against false
    negatives and so misses about half the pairs at the threshold (and one
    in five at 0.9); here every candidate is confirmed by its estimated
    Jaccard anyway, so a spurious candidate costs one comparison while a
    missed one is a duplicate let through."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if bands >= 2 and 1 - (1 - threshold ** rows) ** bands >= 0.99:
            return bands, rows
    return num_perm, 1


def signature(text: str, num_perm: int = 128, shingle: int = 5, seed: int = 1) -> bytes:
    """Stored form of a text's MinHash (12-byte header + 4 bytes per
    permutation). For many texts, reuse one DedupIndex(...).signature: this
    builds the permutations on every call."""
    return DedupIndex(num_perm=num_perm, shingle=shingle, seed=seed).signature(text)


def find_duplicates(items: Iterable[tuple[Hashable, str]], threshold: float = 0.85, num_perm: int = 128,
                    shingle: int = 5, seed: int = 1, index: DedupIndex | None = None) -> list[Duplicate]:
    """Duplicates among `items` ((key, text) pairs), in input order.

    The first occurrence of anything is never reported. Pass an `index`
    preloaded with the pile's existing chunks to also catch new chunks that
    repeat old ones (its own parameters are then used). Deterministic: the
    same items give the same answer on any run or machine."""
    if index is None:
        index = DedupIndex(threshold=threshold, num_perm=num_perm, shingle=shingle, seed=seed)
    out = []
    for key, text in items:
        dup = index.check(key, text or "")
        if dup is not None:
            out.append(dup)
    return out
