"""Archives: zip and tar (plain, gzip, bzip2, xz), and single compressed files (.gz, .bz2,
.xz: the usual form of Debian docs, logs and exports), unpacked in memory.

A single compressed file comes back as one Child, its name without the compression suffix
(changelog.Debian.gz holds changelog.Debian), under the same per-file and ratio limits as an
archive's members.

An archive has no text of its own: the converter returns no segments and one
Child per regular file (relation "member", name = the member's path), and
the ingest stage converts each child as a document of its own. Archives
inside the archive come back as children too; the ingest stage converts them
again one level deeper and enforces Limits.max_depth. The total-bytes budget
(Limits.max_archive_total_bytes) is counted per call of this converter, i.e.
per archive: a nested archive gets a fresh budget when it is converted, so
the ingest stage must also count the bytes of a whole archive tree if it
wants one budget for all of it.

Archives are hostile input, so nothing is ever written to disk (members are
read through io.BytesIO into bytes) and every member that is not read gets a
warning naming the member and the reason:
  * absolute paths and paths with a ".." component (zip-slip),
  * symbolic and hard links, devices and FIFOs (tar),
  * encrypted members (zip),
  * members over Limits.max_file_bytes,
  * zip members whose unpacked / packed size is over Limits.max_archive_ratio
    (zip bombs), judged on the declared sizes and again while reading,
    because headers can lie; members under 1 MiB are exempt, since a small
    file of repeated characters legitimately compresses 100:1 and cannot
    hurt anyone,
  * compressed tar streams that would unpack to over max_archive_ratio times
    their packed size (the whole stream is one compressed unit, and even
    skipping a member means decompressing it), counted in bytes read, tar
    headers included (core.tarsafe),
  * tar headers that would be read whole past a few KB (GNU long names, pax
    headers) and sparse members: the archive stops there,
  * corrupt members (CRC errors, truncated data).
Going over the total-bytes budget or Limits.max_archive_members stops the
archive with a warning. A wholly unreadable archive raises ConvertError.
"""
from __future__ import annotations

import io
import re
import zipfile

from pathlib import PurePosixPath

from ...core.tarsafe import TarRefused, compression, decompressed, open_stream
from . import Child, ConvertError, Extracted, Limits, register

_CHUNK = 1 << 16
_RATIO_FLOOR = 1 << 20    # the compression-ratio rule applies above this many unpacked bytes
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_ARCHIVES = {"[Content_Types].xml", "mimetype", "META-INF/container.xml"}  # OOXML, ODF, EPUB


class _OverLimit(Exception):
    """Reading a member went over a limit; `stop` when the whole archive must stop."""

    def __init__(self, reason: str, stop: bool = False) -> None:
        super().__init__(reason)
        self.stop = stop


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{int(n)} bytes"


def _show(name: str) -> str:
    """A member name fit for a warning (control characters made visible)."""
    return repr(name) if _CONTROL.search(name) else name


def safe_member_path(raw: str) -> tuple[str | None, str]:
    """(normalised path, "") for a safe member path, (None, reason) for one
    that would escape the directory it is unpacked to."""
    name = _CONTROL.sub("", raw).replace("\\", "/")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return None, "unsafe path (absolute)"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "unsafe path (contains a '..' component)"
    if not parts:
        return None, "empty member name"
    return "/".join(parts), ""


class _Budget:
    """The per-archive counters: members seen, bytes unpacked."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.members = 0
        self.total = 0

    def count_member(self, name: str, left: int | None, warnings: list[str]) -> bool:
        """False (with a warning) once the member limit is passed; `left` is
        how many members remain, when the archive's index tells (zip)."""
        self.members += 1
        if self.members > self.limits.max_archive_members:
            rest = f"{left} member(s)" if left is not None else "the members"
            warnings.append(f"stopped at {_show(name)}: the archive has more than "
                            f"{self.limits.max_archive_members} members (limit max_archive_members); "
                            f"{rest} from here on were not read")
            return False
        return True

    def fits_total(self, name: str, size: int, warnings: list[str]) -> bool:
        if self.total + size > self.limits.max_archive_total_bytes:
            warnings.append(f"stopped at {_show(name)}: unpacking it would take the archive to over "
                            f"{_mb(self.limits.max_archive_total_bytes)} (limit max_archive_total_bytes); "
                            f"it and the members after it were not read")
            return False
        return True


def read_capped(stream, file_cap: int, ratio_cap: int | None, total_left: int, limits: Limits) -> bytes:
    """Read a member in chunks and give up as soon as it is bigger than any
    limit allows, whatever its header said: a lying header cannot make us
    hold more than one chunk over the limit."""
    buf = bytearray()
    while chunk := stream.read(_CHUNK):
        buf += chunk
        n = len(buf)
        if n > file_cap:
            raise _OverLimit(f"unpacks to over {_mb(file_cap)}, the per-file limit (max_file_bytes)")
        if ratio_cap is not None and n > ratio_cap:
            raise _OverLimit(f"unpacks to over {limits.max_archive_ratio:g} times its packed size "
                             f"(limit max_archive_ratio; a zip bomb?)")
        if n > total_left:
            raise _OverLimit(f"unpacking it would take the archive to over "
                             f"{_mb(limits.max_archive_total_bytes)} (limit max_archive_total_bytes)", stop=True)
    return bytes(buf)


def _seen_before(path: str, seen: set[str]) -> bool:
    """True for a second member with the same path; the first one is remembered."""
    if path in seen:
        return True
    seen.add(path)
    return False


def _over_file_limit(size: int, limits: Limits) -> str | None:
    if size > limits.max_file_bytes:
        return f"{_mb(size)} is over the per-file limit of {_mb(limits.max_file_bytes)} (max_file_bytes)"
    return None


def _ratio_cap(compressed: int, limits: Limits) -> int:
    return max(_RATIO_FLOOR, int(limits.max_archive_ratio * max(compressed, 1)))


def _note_empty(n: int, warnings: list[str]) -> None:
    """Empty members have nothing to convert; one warning says how many were passed over."""
    if n:
        warnings.append(f"{n} empty member(s) (0 bytes) skipped")


def convert_zip(data: bytes, name: str, limits: Limits) -> Extracted:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as e:
        raise ConvertError(f"not a readable zip archive (truncated or corrupt: {e})") from None
    warnings: list[str] = []
    children: list[Child] = []
    budget = _Budget(limits)
    seen: set[str] = set()
    empty = 0
    files = [i for i in infos if not i.is_dir()]
    for k, info in enumerate(files):
        raw = info.filename
        if not budget.count_member(raw, len(files) - k, warnings):
            break
        path, reason = safe_member_path(raw)
        if path is None:
            warnings.append(f"{_show(raw)}: skipped, {reason}")
            continue
        if _seen_before(path, seen):
            warnings.append(f"{_show(raw)}: skipped, a second member with the same path (the first one was read)")
            continue
        if info.flag_bits & 0x1:
            warnings.append(f"{_show(raw)}: skipped, encrypted (password protected)")
            continue
        if (info.external_attr >> 16) & 0o170000 == 0o120000:  # Unix mode S_IFLNK: the data is a link target
            warnings.append(f"{_show(raw)}: skipped, a symbolic link")
            continue
        if info.file_size == 0:
            empty += 1
            continue
        if (reason := _over_file_limit(info.file_size, limits)) is not None:
            warnings.append(f"{_show(raw)}: skipped, {reason}")
            continue
        if info.file_size > _ratio_cap(info.compress_size, limits):
            ratio = info.file_size / max(info.compress_size, 1)
            warnings.append(f"{_show(raw)}: skipped, compression ratio {ratio:.0f}:1 is over the limit of "
                            f"{limits.max_archive_ratio:g}:1 (max_archive_ratio; a zip bomb?)")
            continue
        if not budget.fits_total(raw, info.file_size, warnings):
            break
        try:
            with zf.open(info) as f:
                body = read_capped(f, limits.max_file_bytes, _ratio_cap(info.compress_size, limits),
                                   limits.max_archive_total_bytes - budget.total, limits)
        except _OverLimit as e:
            if e.stop:
                warnings.append(f"stopped at {_show(raw)}: {e}; it and the members after it were not read")
                break
            warnings.append(f"{_show(raw)}: skipped, {e}")
            continue
        except NotImplementedError as e:  # deflate64, implode, ...: zipfile cannot unpack it
            warnings.append(f"{_show(raw)}: skipped, unsupported compression method ({e})")
            continue
        except Exception as e:  # BadZipFile (bad CRC, bad local header), zlib/lzma/bz2 errors, EOFError
            warnings.append(f"{_show(raw)}: skipped, corrupt ({type(e).__name__}: {str(e)[:200]})")
            continue
        budget.total += len(body)
        children.append(Child(path, body, "member"))
    _note_empty(empty, warnings)
    return Extracted([], "zip", "stdlib zipfile", warnings, children,
                     meta={"members": len(files), "read": len(children)})


def _stream_cap(data: bytes, limits: Limits) -> int:
    """Decompressed bytes a tar may take to read, headers and skipped members included: the total
    budget (and its end-of-archive blocks), and for a compressed one its ratio to the packed size."""
    cap = limits.max_archive_total_bytes + 64 * 1024
    return min(cap, _ratio_cap(len(data), limits)) if compression(data) else cap


def convert_tar(data: bytes, name: str, limits: Limits) -> Extracted:
    kind = compression(data)
    try:
        tf, counted = open_stream(io.BytesIO(data), _stream_cap(data, limits), kind)
    except TarRefused as e:
        raise ConvertError(f"refusing to read this tar archive: {e}") from None
    except Exception as e:  # tarfile.ReadError, EOFError, zlib / lzma / bz2 errors
        raise ConvertError(f"not a readable tar archive (truncated or corrupt: {e})") from None
    with tf:
        return _tar_members(tf, counted, data, kind, limits)


def _tar_members(tf, counted, data: bytes, compression: str, limits: Limits) -> Extracted:
    """The members of a tar opened as a stream, read in order."""
    warnings: list[str] = []
    children: list[Child] = []
    budget = _Budget(limits)
    seen: set[str] = set()
    last = None
    empty = 0
    while True:
        try:
            ti = tf.next()
        except TarRefused as e:  # a header too long to read, a sparse member, a decompression bomb
            where = f"after {_show(last)}" if last else "at the start"
            if not children:
                raise ConvertError(f"refusing to read this tar archive {where}: {e}") from None
            warnings.append(f"stopped {where}: {e}; the rest was not read")
            break
        except Exception as e:  # truncated or corrupt after some members
            where = f"after {_show(last)}" if last else "at the start"
            if not children:
                raise ConvertError(f"the tar archive is truncated or corrupt {where} "
                                   f"({type(e).__name__}: {str(e)[:200]})") from None
            warnings.append(f"the archive is truncated or corrupt {where} ({type(e).__name__}: "
                            f"{str(e)[:200]}); the rest was not read")
            break
        if ti is None:
            break
        last = raw = ti.name
        if ti.isdir():
            continue
        if not budget.count_member(raw, None, warnings):
            break
        if compression and counted.count + ti.size > counted.budget:
            warnings.append(f"stopped at {_show(raw)}: the {compression} stream would unpack to over "
                            f"{limits.max_archive_ratio:g} times its packed size ({_mb(counted.count + ti.size)} "
                            f"from {_mb(len(data))}; limit max_archive_ratio, a decompression bomb?); "
                            f"it and the members after it were not read")
            break
        path, reason = safe_member_path(raw)
        if path is None:
            warnings.append(f"{_show(raw)}: skipped, {reason}")
            continue
        if ti.issym():
            warnings.append(f"{_show(raw)}: skipped, a symbolic link (to {_show(ti.linkname)})")
            continue
        if ti.islnk():
            warnings.append(f"{_show(raw)}: skipped, a hard link (to {_show(ti.linkname)})")
            continue
        if ti.ischr() or ti.isblk() or ti.isfifo():
            warnings.append(f"{_show(raw)}: skipped, a device or FIFO, not a file")
            continue
        if not ti.isreg():
            warnings.append(f"{_show(raw)}: skipped, not a regular file (tar type {ti.type!r})")
            continue
        if _seen_before(path, seen):
            warnings.append(f"{_show(raw)}: skipped, a second member with the same path (the first one was read)")
            continue
        if ti.size == 0:
            empty += 1
            continue
        if (reason := _over_file_limit(ti.size, limits)) is not None:
            warnings.append(f"{_show(raw)}: skipped, {reason}")
            continue
        if not budget.fits_total(raw, ti.size, warnings):
            break
        try:
            f = tf.extractfile(ti)
            body = read_capped(f, limits.max_file_bytes, None, limits.max_archive_total_bytes - budget.total,
                               limits) if f is not None else b""
        except TarRefused as e:
            warnings.append(f"stopped at {_show(raw)}: {e}; it and the members after it were not read")
            break
        except _OverLimit as e:
            if e.stop:
                warnings.append(f"stopped at {_show(raw)}: {e}; it and the members after it were not read")
                break
            warnings.append(f"{_show(raw)}: skipped, {e}")
            continue
        except Exception as e:  # truncated data, decompression errors
            warnings.append(f"{_show(raw)}: skipped, corrupt ({type(e).__name__}: {str(e)[:200]})")
            continue
        if len(body) != ti.size:
            warnings.append(f"{_show(raw)}: skipped, truncated ({len(body)} of {ti.size} bytes)")
            continue
        budget.total += len(body)
        children.append(Child(path, body, "member"))
    _note_empty(empty, warnings)
    meta = {"members": budget.members, "read": len(children)}
    if compression:
        meta["compression"] = compression
    return Extracted([], "tar", "stdlib tarfile", warnings, children, meta)


def _sniff_zip(data: bytes, name: str) -> bool:
    """A zip that is an archive, not a document stored as a zip (docx, xlsx,
    odt, epub ...), which its own converter reads."""
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    except Exception:
        return False
    return not (names & _NOT_ARCHIVES)


def _sniff_tar(data: bytes, name: str) -> bool:
    """A tar, plain or compressed. Only data that could be one is opened:
    a compression magic, the "ustar" magic, or an octal header checksum."""
    plausible = (compression(data) or data[257:262] == b"ustar"
                 or (len(data) >= 512 and re.fullmatch(rb"[0-7 ]*\x00?[0-7 \x00]*", data[148:156]) is not None
                     and data[148:156].strip(b" \x00") != b""))
    if not plausible:
        return False
    try:  # the first header, read as convert_tar reads it (tarfile.is_tarfile would read a huge one whole)
        with open_stream(io.BytesIO(data), 64 * 2**20, compression(data))[0]:
            return True
    except TarRefused:
        return True  # a tar all the same: convert_tar says why it is refused
    except Exception:
        return False


COMPRESSED = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz"}
TAR_NAMES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")


def convert_compressed(data: bytes, name: str, limits: Limits) -> Extracted:
    """One compressed file (not a tar): its content as one Child, read within max_file_bytes, the
    archive total and max_archive_ratio (with the archive members' 1 MiB floor)."""
    kind = compression(data)
    if not kind:
        raise ConvertError(f"not {COMPRESSED.get(PurePosixPath(name).suffix.lower(), 'compressed')} data "
                           "(the name says compressed, the bytes do not)")
    base = PurePosixPath(name).name
    inner = base[: -len(PurePosixPath(base).suffix)] if PurePosixPath(base).suffix.lower() in COMPRESSED else base
    cap = min(limits.max_file_bytes, limits.max_archive_total_bytes)
    try:
        body = read_capped(decompressed(io.BytesIO(data), kind), cap, _ratio_cap(len(data), limits),
                           limits.max_archive_total_bytes, limits)
    except _OverLimit as e:
        raise ConvertError(f"refusing to unpack this {kind} file: it {e}") from None
    except Exception as e:  # truncated stream, CRC error, not really compressed
        raise ConvertError(f"not a readable {kind} file (truncated or corrupt: {type(e).__name__}: "
                           f"{str(e)[:200]})") from None
    if not body:
        raise ConvertError(f"the file is empty once unpacked ({kind})")
    return Extracted([], kind, f"stdlib {kind}", [], [Child(inner or "content", body, "member")],
                     meta={"compression": kind, "packed": len(data), "unpacked": len(body)})


def _sniff_compressed(data: bytes, name: str) -> bool:
    """gzip, bzip2 or xz bytes that are not a tar (the tar sniffer, registered first, takes those; a
    broken one named as a tar is left to the tar converter, which says what is wrong with it)."""
    return bool(compression(data)) and not PurePosixPath(name.lower()).name.endswith(TAR_NAMES)


register((".zip",), "zip", f"{__name__}:convert_zip", sniff=_sniff_zip)
register(TAR_NAMES, "tar", f"{__name__}:convert_tar", sniff=_sniff_tar)
register(tuple(COMPRESSED), "compressed", f"{__name__}:convert_compressed", sniff=_sniff_compressed)
