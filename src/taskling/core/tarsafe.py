"""Tar archives read without trusting their headers: every byte counted, no header read whole
before it is judged, no sparse member.

tarfile reads a GNU long name or a pax header whole, as long as the header says it is (a 0.6 MB
.tar.gz can name a 600 MB member), and expands a sparse member's holes to any size it declares.
`open_stream` reads a tar (plain, gzip, bzip2 or xz) as a stream through `Counted`, which stops
once more than `budget` decompressed bytes, headers included, have been read; its members are
`BoundedTarInfo`, which refuses an extended header over MAX_NAME_BYTES / MAX_PAX_BYTES before
reading it, and refuses sparse members (old GNU, and pax 0.0 / 0.1 / 1.0) before their maps are
read. A refusal is `TarRefused`; the archive stops there. Used by ingest (formats.archive) and by
serve's bundles (serving.target).
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import tarfile
from typing import BinaryIO

from .errors import TasklingError

MAX_NAME_BYTES = 4096          # a GNU long name or link target (PATH_MAX)
MAX_PAX_BYTES = 64 * 1024      # one pax extended header
LONG_NAMES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
PAX = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)


class TarRefused(TasklingError):
    """The archive asked for more than it may have; reading stopped here."""


class BoundedTarInfo(tarfile.TarInfo):
    """A member header judged before tarfile acts on it (CPython 3.11's tarfile dispatches every
    header through `_proc_member` and the sparse readers below; those are what is guarded)."""

    def _proc_member(self, tf):
        if self.type in LONG_NAMES and self.size > MAX_NAME_BYTES:
            raise TarRefused(f"a member's name header is {self.size:,} bytes long (limit {MAX_NAME_BYTES:,})")
        if self.type in PAX and self.size > MAX_PAX_BYTES:
            raise TarRefused(f"a pax header is {self.size:,} bytes long (limit {MAX_PAX_BYTES:,})")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise TarRefused(f"member {self.name[:200]!r} is a sparse file (its holes could unpack to any size)")
        return super()._proc_member(tf)

    def _proc_gnusparse_00(self, next, pax_headers, buf):
        raise TarRefused(f"member {next.name[:200]!r} is a sparse file (pax GNU.sparse 0.0)")

    def _proc_gnusparse_01(self, next, pax_headers):
        raise TarRefused(f"member {next.name[:200]!r} is a sparse file (pax GNU.sparse 0.1)")

    def _proc_gnusparse_10(self, next, pax_headers, tf):
        raise TarRefused(f"member {next.name[:200]!r} is a sparse file (pax GNU.sparse 1.0)")


class Counted(io.RawIOBase):
    """A read-only stream that counts what passes and refuses to pass more than `budget` bytes;
    `digest` (a hashlib object) sees every byte read, in order."""

    def __init__(self, raw: BinaryIO, budget: int | None, digest=None, what: str = "the archive"):
        self.raw, self.budget, self.digest, self.what, self.count = raw, budget, digest, what, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        want = len(b)
        if self.budget is not None and self.count + want > self.budget:
            want = self.budget - self.count + 1  # one byte past the budget proves it is passed
            if want <= 0:
                raise TarRefused(f"{self.what} unpacks to more than {self.budget:,} bytes (headers included)")
        data = self.raw.read(want)
        n = len(data)
        b[:n] = data
        self.count += n
        if self.digest is not None:
            self.digest.update(data)
        if self.budget is not None and self.count > self.budget:
            raise TarRefused(f"{self.what} unpacks to more than {self.budget:,} bytes (headers included)")
        return n


def compression(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return ""


def decompressed(raw: BinaryIO, kind: str) -> BinaryIO:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "bzip2":
        return bz2.BZ2File(raw, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(raw, mode="rb")
    return raw


def open_stream(raw: BinaryIO, budget: int | None, kind: str = "", digest=None,
                what: str = "the archive") -> tuple[tarfile.TarFile, Counted]:
    """A tar read as a stream from `raw` (decompressed by `kind`), at most `budget` bytes of it.
    Members must be read in order, right after `next()` returns them."""
    counted = Counted(decompressed(raw, kind), budget, digest, what)
    tf = tarfile.open(fileobj=io.BufferedReader(counted, 64 * 1024), mode="r|", tarinfo=BoundedTarInfo)
    return tf, counted


def hashing(raw: BinaryIO):
    """(a stream over `raw` that hashes what is read through it, the sha256 object)."""
    digest = hashlib.sha256()
    return Counted(raw, None, digest), digest
