"""PDF, Word and PowerPoint.

Each format becomes segments a person can find again in the source:

  PDF          one segment per page           "page 3"
  DOCX         one per heading section         "Intro > Setup"; text before the first heading: "(start)"
  PPTX         one per slide                   "slide 2 — Quarterly results" (just "slide 2" without a title)

Tables in DOCX and PPTX are written as "cell | cell" lines, so they come back as the pipe tables of
the text (pipes.py). Spreadsheets and CSV are in sheets.py, EPUB in epub.py; opening a zip package,
telling an encrypted or legacy OLE file apart and sniffing are in package.py. Files whose extension
lies are recognised by their bytes: "%PDF-" is a PDF, a zip holding word/document.xml a DOCX,
ppt/presentation.xml a PPTX. The libraries are imported inside the converters, on first use.
"""
from __future__ import annotations

import io
import re
import zipfile
from typing import Iterable, Iterator

from . import ConvertError, Extracted, Limits, Segment, lib_version, register
from .package import clean_text, metadata, one_line, open_package, package_error, zip_names
from .text import cut_long_lines

MAX_PAGE_WARNINGS = 20   # per-page "no text layer" warnings before they are summed up


# --------------------------------------------------------------------------- sniffing

def _is_pdf(data: bytes, name: str) -> bool:
    return data.startswith(b"%PDF-")


def _is_docx(data: bytes, name: str) -> bool:
    return "word/document.xml" in zip_names(data)


def _is_pptx(data: bytes, name: str) -> bool:
    return "ppt/presentation.xml" in zip_names(data)


# --------------------------------------------------------------------------- Word and PowerPoint packages

# Content types of macro-enabled files, templates and slide shows; the
# libraries only open the plain document type, which has the same parts.
_MAIN_TYPES = {
    "docx": ("application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
             ("application/vnd.ms-word.document.macroEnabled.main+xml",
              "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
              "application/vnd.ms-word.template.macroEnabledTemplate.main+xml")),
    "pptx": ("application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml",
             ("application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml",
              "application/vnd.openxmlformats-officedocument.presentationml.template.main+xml",
              "application/vnd.ms-powerpoint.template.macroEnabled.main+xml",
              "application/vnd.openxmlformats-officedocument.presentationml.slideshow.main+xml",
              "application/vnd.ms-powerpoint.slideshow.macroEnabled.main+xml")),
}


def _as_plain_document(data: bytes, zf: zipfile.ZipFile, fmt: str) -> bytes:
    """The bytes unchanged, or (for .docm/.dotx/.pptm/.ppsx ...) a copy whose main part is typed as a plain document."""
    plain, variants = _MAIN_TYPES[fmt]
    try:
        types = zf.read("[Content_Types].xml").decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return data
    found = [v for v in variants if v in types]
    if not found:
        return data
    for v in found:
        types = types.replace(v, plain)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zf.infolist():
            body = types.encode("utf-8") if info.filename == "[Content_Types].xml" else zf.read(info)
            zout.writestr(info.filename, body)
    return out.getvalue()


# --------------------------------------------------------------------------- PDF

def convert_pdf(data: bytes, name: str, limits: Limits) -> Extracted:
    """A PDF: one segment per page with a text layer; scanned pages are reported, not guessed at."""
    reader = _open_pdf(data)
    warnings: list[str] = []
    try:
        pages = pdf_pages(reader, warnings)
    except Exception as e:
        raise ConvertError(f"damaged PDF: its page list cannot be read ({type(e).__name__}: {str(e)[:200]}); "
                           f"download it again or re-save it (print to PDF)") from None
    if b"%%EOF" not in data[-2048:]:
        warnings.append("the PDF has no %%EOF marker at its end, so it may be truncated: pages may be missing")
    segments, no_text = [], []
    for n, page in enumerate(pages, 1):
        try:
            text = clean_text(page.extract_text() or "")
        except Exception as e:
            warnings.append(f"page {n} could not be read ({type(e).__name__}: {str(e)[:120]}); skipped")
            continue
        if not text:
            no_text.append(n)
            continue
        segments.append(Segment(cut_long_lines(text, limits, warnings), f"page {n}", "page"))
    if pages and len(no_text) == len(pages):
        raise ConvertError(f"none of the {len(pages)} page(s) has a text layer: this looks like a scanned PDF; "
                           f"run OCR on it (e.g. ocrmypdf) and add it again")
    warnings += _no_text_warnings(no_text)
    meta = _pdf_meta(reader)
    meta["pages"] = len(pages)
    return Extracted(segments, "pdf", lib_version("pypdf"), warnings, meta=meta)


INHERITED = ("/Resources", "/MediaBox", "/CropBox", "/Rotate")


def pdf_pages(reader, warnings: list[str]) -> list:
    """The document's pages, each page object once. A page tree lists every page once; a hostile one
    lists one page 20,000 times (10 s of text extraction per 0.1 MB) or shares whole subtrees,
    which pypdf's own walk expands again each time (exponential in their depth). This walk visits
    every node once, keeping what pages inherit from their parents as pypdf does."""
    from pypdf import PageObject
    from pypdf.generic import IndirectObject

    root = reader.root_object
    stack = [(root.raw_get("/Pages"), {})]
    seen: set = set()
    pages, repeats = [], 0
    while stack:
        ref, inherit = stack.pop()
        key = (ref.idnum, ref.generation) if isinstance(ref, IndirectObject) else id(ref)
        if key in seen:
            repeats += 1
            continue
        seen.add(key)
        node = ref.get_object()
        if node is None:
            continue
        kind = node.get("/Type", "/Pages" if "/Kids" in node else "/Page")
        if kind == "/Pages":
            here = {**inherit, **{k: node[k] for k in INHERITED if k in node}}
            stack.extend((kid, here) for kid in reversed(list(node.get("/Kids", []))))
            continue
        for k, v in inherit.items():
            if k not in node:
                node[k] = v
        page = PageObject(reader, ref if isinstance(ref, IndirectObject) else None)
        page.update(node)
        pages.append(page)
    if repeats:
        warnings.append(f"the page tree lists pages or parts of itself more than once ({repeats:,} repeats); "
                        "each page was read once")
    return pages


def _open_pdf(data: bytes):
    """A pypdf reader, decrypted with the empty password if need be; ConvertError if it cannot be read."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    if b"%PDF-" not in data[:1024]:
        raise ConvertError("not a PDF: it does not start with %PDF- (an HTML error page or "
                           "another kind of file saved as .pdf?)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except DependencyError as e:
        raise _needs_crypto("reading", e) from None
    except Exception as e:
        raise ConvertError(f"damaged or truncated PDF: {type(e).__name__}: {str(e)[:200]}; "
                           f"download it again or re-save it (print to PDF)") from None
    if reader.is_encrypted:
        try:
            ok = reader.decrypt("")
        except DependencyError as e:
            raise _needs_crypto("decrypting", e) from None
        except Exception as e:
            raise ConvertError(f"encrypted PDF: it cannot be decrypted ({type(e).__name__}: {str(e)[:120]}); "
                               f"save an unprotected copy and add that") from None
        if not ok:
            raise ConvertError("encrypted PDF: password protected; open it with the password and save an "
                               "unprotected copy (or: qpdf --decrypt --password=... in.pdf out.pdf), then add that")
    return reader


def _needs_crypto(doing: str, e: Exception) -> ConvertError:
    return ConvertError(f"encrypted PDF: {doing} it needs an extra library ({e}); "
                        f"install 'cryptography' or save an unprotected copy")


def _no_text_warnings(pages: list[int]) -> list[str]:
    """One warning per page without text, summed up past MAX_PAGE_WARNINGS."""
    out = [f"page {n} has no text layer (scanned image?)" for n in pages[:MAX_PAGE_WARNINGS]]
    if len(pages) > MAX_PAGE_WARNINGS:
        out.append(f"{len(pages) - MAX_PAGE_WARNINGS} more page(s) have no text layer (scanned images?); "
                   f"run OCR on the PDF (e.g. ocrmypdf) to read them")
    return out


def _pdf_meta(reader) -> dict:
    try:
        info = reader.metadata
        return metadata(title=info.title, author=info.author) if info else {}
    except Exception:  # broken info dictionaries are common and never worth failing over
        return {}


# --------------------------------------------------------------------------- DOCX

_HEADING_STYLE = re.compile(r"heading\s*([1-9])$", re.I)


def convert_docx(data: bytes, name: str, limits: Limits) -> Extracted:
    """A Word document: one segment per heading section, tables as "cell | cell" lines."""
    zf = open_package(data, "docx", "word/document.xml", limits)
    data = _as_plain_document(data, zf, "docx")
    import docx

    try:
        doc = docx.Document(io.BytesIO(data))
        blocks = list(_docx_blocks(doc))
    except Exception as e:
        raise package_error("docx", e) from None
    warnings: list[str] = []
    segments = [Segment(cut_long_lines(text, limits, warnings), loc, "section") for loc, text in _sections(blocks)]
    cp = doc.core_properties
    meta = metadata(title=cp.title, author=cp.author)
    return Extracted(segments, "docx", lib_version("python-docx"), warnings, meta=meta)


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_WRAPPERS = {_W + "sdt", _W + "sdtContent", _W + "customXml", _W + "ins", _W + "moveTo"}
# Not text of the paragraph: properties (their w:tab are tab stops), deleted
# text, text boxes (a nested story), and the duplicate fallback of drawings.
_NOT_TEXT = {_W + "pPr", _W + "rPr", _W + "del", _W + "moveFrom", _W + "txbxContent", _W + "p", _MC_FALLBACK}


def _docx_blocks(doc) -> Iterator[tuple[int | None, str]]:
    """(heading level or None, text) for each paragraph and table, in document order."""
    style_levels = _style_levels(doc)
    for el in _story_elements(doc.element.body):
        if el.tag == _W + "tbl":
            text = _docx_table(el)
            if text:
                yield None, text
            continue
        text = clean_text(_paragraph_text(el))
        if text:
            yield _heading_level(el, style_levels), text


def _story_elements(parent) -> Iterator:
    """The w:p and w:tbl elements of a body or table cell, including those inside
    content controls and tracked insertions (which python-docx's iterators skip)."""
    for child in parent:
        if child.tag in (_W + "p", _W + "tbl"):
            yield child
        elif child.tag in _WRAPPERS:
            yield from _story_elements(child)


def _paragraph_text(p) -> str:
    """A paragraph's text as Word shows it with changes accepted: runs, hyperlinks,
    fields, content controls and insertions; tabs and line breaks kept."""
    parts: list[str] = []

    def walk(el) -> None:
        for child in el:
            tag = child.tag
            if tag == _W + "t":
                parts.append(child.text or "")
            elif tag == _W + "tab":
                parts.append("\t")
            elif tag in (_W + "br", _W + "cr"):
                parts.append("\n")
            elif tag == _W + "noBreakHyphen":
                parts.append("-")
            elif isinstance(tag, str) and tag not in _NOT_TEXT:
                walk(child)

    walk(p)
    return "".join(parts)


def _heading_level(p, style_levels: dict) -> int | None:
    """1-9 for a heading paragraph (by its outline level or its style's), None for body text."""
    own = p.xpath("./w:pPr/w:outlineLvl/@w:val")
    if own:
        return _outline_level(own[0])
    style_id = p.xpath("./w:pPr/w:pStyle/@w:val")
    return style_levels.get(style_id[0] if style_id else None, style_levels.get(None))


def _style_levels(doc) -> dict[str | None, int | None]:
    """Paragraph style id -> heading level (None: not a heading); key None is the default style.
    Worked out once per document: python-docx's per-paragraph style lookup is slow."""
    from docx.enum.style import WD_STYLE_TYPE

    def level(style) -> int | None:
        seen = set()
        while style is not None and style.style_id not in seen:
            seen.add(style.style_id)
            if m := _HEADING_STYLE.match(style.name or ""):
                return int(m.group(1))
            if outline := style.element.xpath("./w:pPr/w:outlineLvl/@w:val"):
                return _outline_level(outline[0])
            style = style.base_style
        return None

    paragraph_styles = [s for s in doc.styles if s.type == WD_STYLE_TYPE.PARAGRAPH]
    levels: dict[str | None, int | None] = {s.style_id: level(s) for s in paragraph_styles}
    default = doc.styles.default(WD_STYLE_TYPE.PARAGRAPH)
    levels[None] = level(default) if default is not None else None
    return levels


def _outline_level(value: str) -> int | None:
    """w:outlineLvl 0-8 is heading level 1-9; 9 means body text."""
    return int(value) + 1 if value.isdigit() and int(value) < 9 else None


def _docx_table(tbl) -> str:
    """A table as one "cell | cell | cell" line per row; merged cells appear once,
    a table inside a cell is flattened into that cell."""
    lines = []
    for tr in tbl.iterchildren(_W + "tr"):
        cells = [one_line(" ".join(_docx_table(el) if el.tag == _W + "tbl" else _paragraph_text(el)
                                    for el in _story_elements(tc)), 10_000)
                 for tc in tr.iterchildren(_W + "tc")]
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def _sections(blocks: Iterable[tuple[int | None, str]]) -> Iterator[tuple[str, str]]:
    """(heading path, text) per section; a section's text starts with its heading.
    A heading followed directly by a deeper one gives no section of its own: it
    lives on in the paths of its subsections."""
    path: list[tuple[int, str]] = []
    locator, parts, has_body, level_now = "(start)", [], False, 0
    for level, text in blocks:
        if level is None:
            parts.append(text)
            has_body = True
            continue
        if has_body or (parts and level <= level_now):
            yield locator, "\n\n".join(parts)
        path = [h for h in path if h[0] < level] + [(level, one_line(text))]
        locator, parts, has_body, level_now = " > ".join(t for _, t in path), [text], False, level
    if parts:
        yield locator, "\n\n".join(parts)


# --------------------------------------------------------------------------- PPTX

def convert_pptx(data: bytes, name: str, limits: Limits) -> Extracted:
    """A presentation: one segment per slide with the text of every shape, tables and speaker notes."""
    zf = open_package(data, "pptx", "ppt/presentation.xml", limits)
    data = _as_plain_document(data, zf, "pptx")
    from pptx import Presentation

    try:
        prs = Presentation(io.BytesIO(data))
        slides = list(prs.slides)
    except Exception as e:
        raise package_error("pptx", e) from None
    segments, warnings = [], []
    for n, slide in enumerate(slides, 1):
        try:
            title, text = _slide_text(slide)
        except Exception as e:  # one odd slide should not cost the deck
            warnings.append(f"slide {n} could not be read ({type(e).__name__}: {str(e)[:120]}); skipped")
            continue
        if not text:
            warnings.append(f"slide {n} has no text")
            continue
        locator = f"slide {n}" + (f" — {title}" if title else "")
        segments.append(Segment(cut_long_lines(text, limits, warnings), locator, "slide"))
    cp = prs.core_properties
    meta = metadata(title=cp.title, author=cp.author)
    meta["slides"] = len(slides)
    return Extracted(segments, "pptx", lib_version("python-pptx"), warnings, meta=meta)


def _slide_text(slide) -> tuple[str, str]:
    """The slide's title (one line, may be "") and its text: shapes top to bottom, then "Notes: ..."."""
    title_shape = slide.shapes.title
    title = one_line(title_shape.text_frame.text) if title_shape is not None and title_shape.has_text_frame else ""
    parts = list(_shape_texts(slide.shapes))
    if slide.has_notes_slide:
        frame = slide.notes_slide.notes_text_frame
        notes = clean_text(frame.text) if frame is not None else ""
        if notes:
            parts.append("Notes: " + notes)
    return title, "\n\n".join(parts)


def _shape_texts(shapes) -> Iterator[str]:
    """Text of each shape in reading order (top to bottom, left to right), groups and tables included."""
    from pptx.shapes.group import GroupShape

    def position(shape):
        return (shape.top or 0, shape.left or 0)

    for shape in sorted(shapes, key=position):
        if isinstance(shape, GroupShape):
            yield from _shape_texts(shape.shapes)
        elif getattr(shape, "has_table", False) and shape.has_table:
            rows = [" | ".join(one_line(c.text, 10_000) for c in row.cells) for row in shape.table.rows]
            text = "\n".join(r for r in rows if r.strip(" |"))
            if text:
                yield text
        elif shape.has_text_frame:
            text = clean_text(shape.text_frame.text.replace("\v", "\n"))
            if text:
                yield text


# --------------------------------------------------------------------------- registration

register((".pdf",), "pdf", f"{__name__}:convert_pdf", sniff=_is_pdf)
register((".docx", ".docm", ".dotx", ".dotm"), "docx", f"{__name__}:convert_docx", sniff=_is_docx)
register((".pptx", ".pptm", ".potx", ".potm", ".ppsx", ".ppsm"), "pptx", f"{__name__}:convert_pptx", sniff=_is_pptx)
