"""EPUB: one segment per chapter, in spine order, titled from the table of contents.

  EPUB         one per chapter (spine order)   the chapter's table-of-contents title, else its file name
"""
from __future__ import annotations

import posixpath
import re
import zipfile
from typing import Iterator
from urllib.parse import unquote
from xml.etree import ElementTree as ET

from . import ConvertError, Extracted, Limits, Segment, register
from .html import HTMLText
from .package import clean_text, metadata, one_line, open_package, read_member, zip_mimetype
from .text import cut_long_lines, decode_text

# --------------------------------------------------------------------------- EPUB

_XHTML_TYPES = {"application/xhtml+xml", "text/html", "application/xml", "text/xml"}
_OPS_NS = "{http://www.idpf.org/2007/ops}"


def convert_epub(data: bytes, name: str, limits: Limits) -> Extracted:
    """An EPUB book: one segment per chapter in reading (spine) order, titled from its table of contents."""
    zf = open_package(data, "epub", "META-INF/container.xml", limits)
    opf_path = _epub_rootfile(zf)
    opf = _parse_xml(zf, opf_path, "the package file")
    manifest = _epub_manifest(opf, posixpath.dirname(opf_path))
    spine = [ref.get("idref", "") for ref in _all(opf, "itemref")]
    titles = _epub_titles(zf, opf, manifest)
    encrypted = _epub_encrypted(zf)
    segments, warnings, no_text, locked = [], [], 0, 0
    for idref in spine:
        path, media_type = manifest.get(idref, ("", ""))
        if not path or media_type not in _XHTML_TYPES:
            continue
        if path in encrypted:
            locked += 1
            continue
        text = _epub_chapter(zf, path, limits, warnings)
        if not text:
            no_text += 1
            continue
        title = titles.get(path) or _first_heading(text) or posixpath.basename(path)
        segments.append(Segment(_demote_title(text, title), title, "section"))
    if locked and not segments:
        raise ConvertError("DRM-protected EPUB: its chapters are encrypted (META-INF/encryption.xml); "
                           "only DRM-free EPUBs can be read")
    if locked:
        warnings.append(f"{locked} chapter(s) are encrypted (DRM) and were skipped")
    if no_text:
        warnings.append(f"{no_text} spine item(s) had no text (cover or image pages)")
    meta = metadata(title=_first_text(opf, "title"), author=_first_text(opf, "creator"))
    meta["chapters"] = len(segments)
    return Extracted(segments, "epub", "stdlib zipfile + html.parser", warnings, meta=meta)


def _all(root: ET.Element, local: str) -> list[ET.Element]:
    """Elements with this local name, whatever their namespace."""
    return [el for el in root.iter() if isinstance(el.tag, str) and el.tag.rsplit("}", 1)[-1] == local]


def _first_text(root: ET.Element, local: str) -> str:
    for el in _all(root, local):
        text = "".join(el.itertext()).strip()
        if text:
            return text
    return ""


def _parse_xml(zf: zipfile.ZipFile, path: str, what: str) -> ET.Element:
    try:
        return ET.fromstring(zf.read(path))
    except KeyError:
        raise ConvertError(f"not a valid EPUB: {what} {path} is missing from the zip") from None
    except ET.ParseError as e:
        raise ConvertError(f"not a valid EPUB: {what} {path} is not well-formed XML ({e})") from None


def _epub_rootfile(zf: zipfile.ZipFile) -> str:
    """The path of the package (.opf) file named in META-INF/container.xml."""
    container = _parse_xml(zf, "META-INF/container.xml", "the container file")
    for el in _all(container, "rootfile"):
        if el.get("full-path"):
            return el.get("full-path")
    raise ConvertError("not a valid EPUB: META-INF/container.xml names no package (.opf) file")


def _resolve(base: str, href: str) -> str:
    """A manifest or table-of-contents href as a path inside the zip (no fragment, %-escapes decoded)."""
    return posixpath.normpath(posixpath.join(base, unquote(href.split("#", 1)[0])))


def _epub_manifest(opf: ET.Element, base: str) -> dict[str, tuple[str, str]]:
    """Manifest id -> (path in the zip, media type)."""
    return {el.get("id", ""): (_resolve(base, el.get("href", "")), el.get("media-type", ""))
            for el in _all(opf, "item") if el.get("href")}


def _epub_titles(zf: zipfile.ZipFile, opf: ET.Element, manifest: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Chapter path -> title, from the EPUB 3 nav document or else the EPUB 2 NCX; the first entry per file wins."""
    titles: dict[str, str] = {}
    nav_ids = [el.get("id", "") for el in _all(opf, "item") if "nav" in (el.get("properties") or "").split()]
    ncx_ids = [spine.get("toc", "") for spine in _all(opf, "spine")]
    ncx_ids += [i for i, (_, t) in manifest.items() if t == "application/x-dtbncx+xml"]
    for item_id in nav_ids + ncx_ids:
        path = manifest.get(item_id, ("", ""))[0]
        try:
            root = ET.fromstring(zf.read(path))
        except (KeyError, ET.ParseError):
            continue  # titles are a nicety: fall back to headings and file names
        base = posixpath.dirname(path)
        for href, title in (_nav_entries(root) if item_id in nav_ids else _ncx_entries(root)):
            titles.setdefault(_resolve(base, href), one_line(title))
        if titles:
            break
    return titles


def _nav_entries(root: ET.Element) -> Iterator[tuple[str, str]]:
    navs = _all(root, "nav")
    toc = [n for n in navs if n.get(f"{_OPS_NS}type") == "toc"] or navs[:1]
    for nav in toc:
        for a in _all(nav, "a"):
            text = "".join(a.itertext()).strip()
            if a.get("href") and text:
                yield a.get("href"), text


def _ncx_entries(root: ET.Element) -> Iterator[tuple[str, str]]:
    for point in _all(root, "navPoint"):
        label = _first_text(point, "navLabel")
        content = _all(point, "content")
        if label and content and content[0].get("src"):
            yield content[0].get("src"), label


def _epub_encrypted(zf: zipfile.ZipFile) -> set[str]:
    """Paths listed in META-INF/encryption.xml (DRM, or obfuscated fonts)."""
    raw = read_member(zf, "META-INF/encryption.xml")
    if not raw:
        return set()
    try:
        root = ET.fromstring(raw)
    except ET.ParseError:
        return set()
    return {_resolve("", el.get("URI", "")) for el in _all(root, "CipherReference") if el.get("URI")}


def _epub_chapter(zf: zipfile.ZipFile, path: str, limits: Limits, warnings: list[str]) -> str:
    """A chapter's text, headings marked "# " as for HTML; "" (with a warning) when it cannot be read."""
    try:
        info = zf.getinfo(path)
        if info.file_size > limits.max_file_bytes:
            warnings.append(f"chapter {path} is over the {limits.max_file_bytes / 2**20:.0f} MB limit; skipped")
            return ""
        html, _ = decode_text(zf.read(info))
    except KeyError:
        warnings.append(f"chapter {path} is listed in the spine but missing from the zip")
        return ""
    except (ConvertError, zipfile.BadZipFile, EOFError, ValueError) as e:
        warnings.append(f"chapter {path} could not be read ({e}); skipped")
        return ""
    parser = HTMLText()
    parser.feed(html)
    parser.close()
    return cut_long_lines(clean_text(parser.text()), limits, warnings)


def _first_heading(text: str) -> str:
    m = re.search(r"^#{1,6} (.+)$", text, re.M)
    return one_line(m.group(1)) if m else ""


def _demote_title(text: str, title: str) -> str:
    """Drop the "#" marks of a chapter's opening heading when it repeats the chapter title,
    so chunk locators read "Chapter 1 > Section", not "Chapter 1 > Chapter 1"."""
    m = re.match(r"#{1,6} (.+)(\n|$)", text)
    if m and one_line(m.group(1)) == title:
        return m.group(1) + text[m.end(1):]
    return text


def _is_epub(data: bytes, name: str) -> bool:
    return zip_mimetype(data) == "application/epub+zip"


register((".epub",), "epub", f"{__name__}:convert_epub", sniff=_is_epub)
