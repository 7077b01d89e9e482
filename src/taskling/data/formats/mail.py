"""E-mail: single messages (.eml) and Unix mailboxes (.mbox).

Each message becomes one segment of kind "message" whose locator is its
Message-ID, so an answer can cite the exact mail ("<abc@host>"); a message
without one is "message N" (its position in the file). The segment text is a
short header block (From, To, Cc, Date, Subject, In-Reply-To, Attachments)
and the body: text/plain is preferred, HTML is converted to text. The
In-Reply-To line stays in the text so a chunk still shows which mail it
answers; the full thread links (Message-ID, In-Reply-To, References) go to
`meta["messages"]` for the ingest stage.

Attachments (parts with a filename or Content-Disposition: attachment, and
forwarded messages, message/rfc822) come back as children named
"<message locator>/<file name>", so the ingest stage can convert them as
documents of their own and link them to their message.

Everything is stdlib `email` with policy.default. An mbox is split here on
its "From " separator lines rather than with `mailbox.mbox`, which needs a
path on disk; the split accepts only real separator lines (sender and date),
so an unescaped "From here on ..." in a body does not start a new message.
"""
from __future__ import annotations

import platform
import re
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from mimetypes import guess_extension

from . import Child, ConvertError, Extracted, Limits, Segment, register, suffix
from .html import HTMLText
from .text import cut_long_lines

CONVERTER = f"stdlib email (python {platform.python_version()})"

# A header line: a field name of printable ASCII other than ":" and space, then ":".
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:")
# An mbox separator ("From_ line"): "From " sender date, the date in asctime
# style ("Sat Jan  3 01:05:34 1996", also with a zone before the year) or
# "Wed, 16 Jan 2008 10:00:00".
_FROM_LINE = re.compile(
    rb"From \S+ +(?:[A-Z][a-z]{2},? +)?(?:[A-Z][a-z]{2} +\d{1,2}|\d{1,2} +[A-Z][a-z]{2}(?: +\d{4})?) +\d{1,2}:\d{2}")
_MSG_ID = re.compile(r"<[^<>\s]+>")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SNIFF_NAMES = ("", ".txt")
# Signatures of signed mail: proof of origin, not content to ingest.
_SIGNATURES = {"application/pgp-signature", "application/pkcs7-signature", "application/x-pkcs7-signature"}


def _raw_header(msg: EmailMessage, name: str) -> str | None:
    for key, raw in msg.raw_items():
        if key.lower() == name.lower():
            return str(raw)
    return None


def _header(msg: EmailMessage, name: str) -> str:
    """A header as one line of text; malformed headers never stop a message.

    policy.default parses headers on access; on odd ones (bad address lists,
    broken encoded words) it raises or drops parts of the value, so then the
    raw value is decoded by hand instead.
    """
    try:
        value = msg.get(name)
        text = "" if value is None else str(value)
        bad = bool(getattr(value, "defects", None))
    except Exception:
        text, bad = "", True
    if bad:
        raw = _raw_header(msg, name) or ""
        try:
            text = str(make_header(decode_header(raw)))
        except Exception:
            text = raw
    return " ".join(text.split())


def _ids(value: str) -> list[str]:
    return _MSG_ID.findall(value)


def _id_header(msg: EmailMessage, name: str) -> str:
    """Message-ID, In-Reply-To, References as written: they are ASCII tokens,
    and policy.default's parser cuts a malformed one short."""
    return " ".join((_raw_header(msg, name) or "").split())


def _message_id(msg: EmailMessage) -> str:
    raw = _id_header(msg, "Message-ID")
    ids = _ids(raw)
    return ids[0] if ids else raw[:200]


def safe_filename(raw: str | None, fallback: str) -> str:
    """A file name an attachment can carry without escaping its message:
    directories, drive letters, '..' and control characters are removed."""
    name = _CONTROL.sub("", raw or "").replace("\\", "/")
    parts = [p.strip() for p in name.split("/")]
    parts = [p for p in parts if p and p not in (".", "..")]
    name = re.sub(r"^[A-Za-z]:", "", parts[-1]).strip() if parts else ""
    if set(name) <= {".", " "}:  # "...": nothing left that names a file
        name = ""
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:190] + dot + ext[:9]) if dot and len(ext) < 10 else name[:200]
    return name or fallback


def _part_text(part: EmailMessage) -> str:
    """The decoded text of a text/* part, whatever its declared charset."""
    try:
        content = part.get_content()
        if isinstance(content, str):
            text = content
        else:
            text = bytes(content).decode("utf-8", errors="replace")
    except Exception:  # unknown or wrong charset: UTF-8 if it is that, else the Windows superset of Latin-1
        payload = part.get_payload(decode=True) or b""
        if isinstance(payload, bytes):
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                text = payload.decode("cp1252", errors="replace")
        else:
            text = str(payload)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if part.get_content_subtype() == "html":
        parser = HTMLText()
        parser.feed(text)
        parser.close()
        text = parser.text()
    return text.strip()


def _is_attachment(part: EmailMessage) -> bool:
    try:
        filename = part.get_filename()
    except Exception:
        filename = None
    return bool(filename) or part.get_content_disposition() == "attachment"


def _leaves(part: EmailMessage):
    """The single parts of a message, not descending into forwarded messages."""
    if part.is_multipart():
        if part.get_content_maintype() != "message":
            for sub in part.iter_parts():
                yield from _leaves(sub)
    else:
        yield part


def _walk(msg: EmailMessage, body: EmailMessage | None):
    """Inline text parts and attachments, in order.

    Yields ("text", part) for inline text/plain or text/html parts that add
    to the body (a second inline part, e.g. a list footer), and
    ("attachment", part) for files and forwarded messages. Alternatives of
    the body (the HTML twin of a text/plain body) are dropped.
    """
    def visit(part: EmailMessage, in_alternative: bool):
        ctype = part.get_content_type()
        if part is not msg and ctype in ("message/rfc822", "message/global"):
            yield "attachment", part
            return
        if part.is_multipart():
            alt = in_alternative or ctype == "multipart/alternative"
            for sub in part.iter_parts():
                yield from visit(sub, alt)
            return
        if part is body or ctype in _SIGNATURES:
            return
        if _is_attachment(part):
            yield "attachment", part
        elif part.get_content_maintype() == "text" and part.get_content_subtype() in ("plain", "html") \
                and not in_alternative:
            yield "text", part

    yield from visit(msg, False)


def _attachment_bytes(part: EmailMessage) -> bytes:
    if part.get_content_maintype() == "message":
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if inner is None:
            return b""
        try:
            return inner.as_bytes(policy=policy.default.clone(max_line_length=0))
        except Exception:  # headers the generator cannot re-fold: keep them as they came
            return inner.as_bytes(policy=policy.compat32)
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _attachment_name(part: EmailMessage, n: int) -> str:
    try:
        raw = part.get_filename()
    except Exception:
        raw = None
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        subject = _header(inner[0], "Subject") if isinstance(inner, list) and inner else ""
        if raw:
            return safe_filename(raw, f"attached message {n}.eml")
        return safe_filename(subject[:80], f"attached message {n}") + ".eml"
    ext = guess_extension(part.get_content_type()) or ".bin"
    return safe_filename(raw, f"attachment {n}{ext}")


def _unique(name: str, used: set[str]) -> str:
    if name not in used:
        used.add(name)
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    k = 2
    while (cand := f"{stem} ({k}){dot}{ext}") in used:
        k += 1
    used.add(cand)
    return cand


def _message(msg: EmailMessage, locator: str, limits: Limits, warnings: list[str]) -> tuple[Segment, list[Child], dict]:
    """One message: its segment, its attachments as children, its thread info."""
    try:
        body = msg.get_body(preferencelist=("plain", "html"))
    except Exception:
        body = None
    if body is None:  # no text/plain or text/html body: the first inline text part of any kind
        body = next((p for p in _leaves(msg) if p.get_content_maintype() == "text" and not _is_attachment(p)),
                    None)
    texts = [_part_text(body)] if body is not None else []
    children: list[Child] = []
    used: set[str] = set()
    for what, part in _walk(msg, body):
        if what == "text":
            texts.append(_part_text(part))
            continue
        filename = _unique(_attachment_name(part, len(children) + 1), used)
        data = _attachment_bytes(part)
        if not data:
            warnings.append(f"{locator}: attachment '{filename}' is empty and was skipped")
            continue
        if len(data) > limits.max_file_bytes:
            warnings.append(f"{locator}: attachment '{filename}' ({len(data) / 2**20:.1f} MB) is over the "
                            f"per-file limit of {limits.max_file_bytes / 2**20:.0f} MB and was skipped")
            continue
        children.append(Child(f"{locator}/{filename}", data, "attachment"))

    info = {
        "message_id": _message_id(msg) or None,
        "in_reply_to": (_ids(_id_header(msg, "In-Reply-To")) or [_id_header(msg, "In-Reply-To")])[0] or None,
        "references": _ids(_id_header(msg, "References")),
        "subject": _header(msg, "Subject"),
        "date": _header(msg, "Date"),
        "from": _header(msg, "From"),
    }
    lines = []
    for label, value in (("From", info["from"]), ("To", _header(msg, "To")), ("Cc", _header(msg, "Cc")),
                         ("Date", info["date"]), ("Subject", info["subject"]),
                         ("In-Reply-To", info["in_reply_to"] or "")):
        if value:
            lines.append(f"{label}: {value}")
    if children:
        lines.append("Attachments: " + ", ".join(c.name.rsplit("/", 1)[-1] for c in children))
    body_text = "\n\n".join(t for t in texts if t)
    text = "\n".join(lines) + ("\n\n" + body_text if body_text else "")
    return Segment(cut_long_lines(text, limits, warnings), locator, "message"), children, info


def _parse(data: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(data)


def _convert_messages(raws: list[bytes], fmt: str, limits: Limits, warnings: list[str]) -> Extracted:
    segments, children, infos = [], [], []
    seen: dict[str, int] = {}
    for n, raw in enumerate(raws, 1):
        try:
            msg = _parse(raw)
            locator = _message_id(msg) or f"message {n}"
            if locator in seen:  # the same mail twice (copied between folders): keep locators distinct
                seen[locator] += 1
                locator = f"{locator} (copy {seen[locator]})"
            else:
                seen[locator] = 1
            seg, kids, info = _message(msg, locator, limits, warnings)
        except Exception as e:  # one broken message must not lose the rest of the mailbox
            warnings.append(f"message {n}: could not be read ({type(e).__name__}: {str(e)[:200]}), skipped")
            continue
        segments.append(seg)
        children.extend(kids)
        infos.append(info)
    if not segments:
        raise ConvertError(f"no readable message in this {fmt} file" +
                           (f" ({'; '.join(warnings[:3])})" if warnings else ""))
    meta: dict = {"messages": infos}
    if fmt == "eml":
        meta.update(title=infos[0]["subject"], message_id=infos[0]["message_id"])
    return Extracted(segments, fmt, CONVERTER, warnings, children, meta)


def split_mbox(data: bytes) -> tuple[list[bytes], int]:
    """The raw messages of an mbox and the number of bytes before the first
    separator (junk, reported by the caller).

    A message starts at a "From sender date" line; the separator line is
    dropped and mboxrd quoting (">From " in bodies) is undone one level.
    """
    starts = [m.start() for m in re.finditer(rb"(?m)^From [^\n]*", data) if _FROM_LINE.match(data, m.start())]
    out = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        nl = data.find(b"\n", start, end)
        body = data[nl + 1:end] if nl >= 0 else b""
        body = re.sub(rb"(?m)^>(>*From )", rb"\1", body)
        if body.strip():
            out.append(body)
    return out, (starts[0] if starts else len(data))


def convert_eml(data: bytes, name: str, limits: Limits) -> Extracted:
    warnings: list[str] = []
    if _FROM_LINE.match(data):  # an mbox saved as .eml: read every message, not just the first
        raws, _ = split_mbox(data)
        if len(raws) > 1:
            return _convert_messages(raws, "mbox", limits, warnings)
    return _convert_messages([data], "eml", limits, warnings)


def convert_mbox(data: bytes, name: str, limits: Limits) -> Extracted:
    raws, junk = split_mbox(data)
    if not raws:
        raise ConvertError("not an mbox mailbox: no 'From sender date' separator line starts a message")
    warnings = [f"{junk} bytes before the first 'From ' line are not a message and were skipped"] \
        if data[:junk].strip() else []
    return _convert_messages(raws, "mbox", limits, warnings)


def _header_block(data: bytes) -> list[bytes] | None:
    """The field names of a leading RFC 822 header block, or None when the
    data does not start with one (every line a header or a folded
    continuation, up to a blank line)."""
    names = []
    for line in data[:65536].split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            return names if names else None
        if line[:1] in (b" ", b"\t"):
            if not names:
                return None
            continue
        m = _HEADER_LINE.match(line)
        if not m:
            return None
        names.append(m.group(0)[:-1].lower())
    return None  # no blank line after the headers within the first 64 KiB


def _sniff_eml(data: bytes, name: str) -> bool:
    """An extensionless or .txt file that starts with mail headers: a
    Subject plus one of From / Received / Return-Path / Message-ID."""
    if suffix(name) not in _SNIFF_NAMES:
        return False
    names = _header_block(data)
    return bool(names) and b"subject" in names and bool(
        {b"from", b"received", b"return-path", b"message-id"} & set(names))


def _sniff_mbox(data: bytes, name: str) -> bool:
    """A "From sender date" line followed by mail headers."""
    if suffix(name) not in _SNIFF_NAMES or not _FROM_LINE.match(data):
        return False
    nl = data.find(b"\n")
    names = _header_block(data[nl + 1:]) if nl >= 0 else None
    return bool(names) and bool({b"from", b"subject", b"date", b"message-id", b"received", b"return-path"}
                                & set(names))


register((".eml",), "eml", f"{__name__}:convert_eml", sniff=_sniff_eml)
register((".mbox", ".mbx"), "mbox", f"{__name__}:convert_mbox", sniff=_sniff_mbox)
