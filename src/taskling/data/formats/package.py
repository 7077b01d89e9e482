"""What the zip-packaged document formats share (OOXML: DOCX, PPTX, XLSX; OpenDocument: ODS; EPUB).

Reading a package's member list and "mimetype" cheaply (for sniffing), opening a package or saying
clearly why it is not one (an OLE container: a legacy binary Office file or an encrypted one; a
damaged zip; a zip bomb), the message for a library that refused a package, and the small text
helpers their converters use for titles, cells and metadata.
"""
from __future__ import annotations

import io
import re
import zipfile

from . import ConvertError, Limits

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"   # old binary Office files, and encrypted OOXML
ZIP_BOMB_MIN_BYTES = 2**20  # members smaller than this are never called a zip bomb


# --------------------------------------------------------------------------- sniffing

def zip_names(data: bytes) -> list[str]:
    """Member names when the bytes are a readable zip, else []. Cheap: reads the central directory only."""
    if not data.startswith(b"PK"):
        return []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return zf.namelist()
    except Exception:
        return []


def zip_mimetype(data: bytes) -> str:
    """The "mimetype" member of an OpenDocument / EPUB zip, or ""."""
    if not data.startswith(b"PK"):
        return ""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            info = zf.getinfo("mimetype")
            if info.file_size > 200:
                return ""
            return zf.read(info).decode("ascii", errors="replace").strip()
    except Exception:
        return ""


# --------------------------------------------------------------------------- text

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Text as a segment wants it: no control characters, no trailing blanks, at most one blank line in a row."""
    text = _CONTROL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def one_line(text: str, limit: int = 80) -> str:
    """A title or cell value on one line, cut to `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def metadata(**fields) -> dict:
    """Metadata without the empty fields."""
    return {k: one_line(v, 300) for k, v in fields.items() if v and str(v).strip()}


# --------------------------------------------------------------------------- packages

def open_package(data: bytes, fmt: str, main: str, limits: Limits) -> zipfile.ZipFile:
    """Open a zip-based document (OOXML, OpenDocument, EPUB), or say clearly why it is not one."""
    label = fmt.upper()
    if data.startswith(OLE_MAGIC):
        raise _ole_error(data, fmt)
    if not data.startswith(b"PK"):
        raise ConvertError(f"not a valid {label}: it is not a zip file, and every {label} is one "
                           f"(was another kind of file renamed to .{fmt}?)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
        raise ConvertError(f"not a valid {label}: the zip is damaged ({e}); "
                           f"re-save it or download it again") from None
    if main not in zf.namelist():
        raise ConvertError(f"not a valid {label}: the zip has no {main}, so it is some other kind of zip")
    _check_unpacked_size(zf, label, limits)
    return zf


def _check_unpacked_size(zf: zipfile.ZipFile, label: str, limits: Limits) -> None:
    """Refuse a document that would unpack to absurd sizes (a zip bomb) before a library inflates it."""
    infos = zf.infolist()
    total = sum(i.file_size for i in infos)
    if total > limits.max_archive_total_bytes:
        raise ConvertError(f"this {label} unpacks to {total / 2**20:.0f} MB, over the limit of "
                           f"{limits.max_archive_total_bytes / 2**20:.0f} MB; split it into smaller files")
    for i in infos:
        if i.file_size > ZIP_BOMB_MIN_BYTES and i.file_size > limits.max_archive_ratio * max(i.compress_size, 1):
            raise ConvertError(f"this {label} looks like a zip bomb: {i.filename} expands "
                               f"{i.file_size / max(i.compress_size, 1):.0f}x (limit {limits.max_archive_ratio:.0f}x)")


_OLE_STREAMS = {"docx": ("WordDocument", "Word 97-2003 (.doc)"),
                "pptx": ("PowerPoint Document", "PowerPoint 97-2003 (.ppt)"),
                "xlsx": ("Workbook", "Excel 97-2003 (.xls)")}


def ole_has_stream(data: bytes, stream: str) -> bool:
    """Whether an OLE compound file names a stream (directory entries are UTF-16-LE)."""
    return stream.encode("utf-16-le") in data


def _ole_error(data: bytes, fmt: str) -> ConvertError:
    """The message for an OLE compound file where a zip-based document was expected."""
    label = fmt.upper()
    if ole_has_stream(data, "EncryptedPackage") or ole_has_stream(data, "EncryptionInfo"):
        return ConvertError(f"encrypted or legacy Office file: this {label} is password protected "
                            f"(encrypted Office files are OLE containers); open it in Office, remove the "
                            f"password (File > Info > Protect > Encrypt with Password) and save it again")
    stream, legacy = _OLE_STREAMS.get(fmt, ("", "Office 97-2003"))
    what = legacy if stream and ole_has_stream(data, stream) else "Office 97-2003"
    return ConvertError(f"encrypted or legacy Office file: this is an old binary {what} file, not a {label}; "
                        f"open it in Office or LibreOffice and save it as .{fmt}")


def package_error(fmt: str, e: Exception) -> ConvertError:
    """A library refused a zip-based document: name the likely cause."""
    label = fmt.upper()
    if isinstance(e, zipfile.BadZipFile):
        return ConvertError(f"not a valid {label}: the zip is damaged ({e}); re-save it or download it again")
    if isinstance(e, KeyError):
        return ConvertError(f"not a valid {label}: a part it refers to is missing ({e}); "
                            f"open it in Office or LibreOffice and save it again")
    return ConvertError(f"not a valid {label}: {type(e).__name__}: {str(e)[:200]}; "
                        f"open it in Office or LibreOffice and save it again")


def read_member(zf: zipfile.ZipFile, member: str) -> bytes:
    """A member's bytes, b"" when the package has no such member."""
    try:
        return zf.read(member)
    except KeyError:
        return b""
