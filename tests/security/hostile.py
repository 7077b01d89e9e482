"""Hostile files, each built from an attack of issue 23: the security tests and bench/fuzz.py use them."""
from __future__ import annotations

import gzip
import io
import tarfile

def pdf_bytes(objs: list[bytes]) -> bytes:
    out = io.BytesIO(); out.write(b"%PDF-1.4\n"); offs = []
    for i, o in enumerate(objs, 1):
        offs.append(out.tell()); out.write(b"%d 0 obj\n" % i + o + b"\nendobj\n")
    x = out.tell(); out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for o in offs: out.write(b"%010d 00000 n \n" % o)
    out.write(b"trailer\n<< /Root 1 0 R /Size %d >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, x))
    return out.getvalue()

def stream(d: bytes, extra=b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n" % (len(d), extra) + d + b"\nendstream"

def xobject_bomb(depth=7, fan=10) -> bytes:
    # objects: 1 catalog, 2 pages, 3 page, 4 content, 5 font, 6.. xobjects X0..Xdepth
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> /XObject << /X%d %d 0 R >> >> >>" % (depth, 6 + depth),
            stream(b"/X%d Do" % depth), b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for k in range(depth + 1):
        if k == 0:
            body = b"BT /F1 12 Tf 72 720 Td (boom) Tj ET"
            res = b"/Resources << /Font << /F1 5 0 R >> >> "
        else:
            body = b" ".join([b"/X%d Do" % (k - 1)] * fan)
            res = b"/Resources << /XObject << /X%d %d 0 R >> >> " % (k - 1, 6 + k - 1)
        objs.append(stream(body, b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] " + res))
    return pdf_bytes(objs)


def pdf_page_repeats(times: int = 20_000) -> bytes:
    """A 0.1 MB PDF whose page tree lists one page `times` times."""
    content = b"BT /F1 12 Tf 72 720 Td (Hello from a hostile page tree) Tj ET"
    return pdf_bytes([b"<< /Type /Catalog /Pages 2 0 R >>",
                      b"<< /Type /Pages /Kids [" + b" ".join([b"3 0 R"] * times) + b"] /Count %d >>" % times,
                      b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
                      b"/Resources << /Font << /F1 5 0 R >> >> >>", stream(content),
                      b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"])


def pdf_shared_subtrees(depth: int = 40) -> bytes:
    """A page tree of `depth` levels whose every node lists its child twice: 2**depth pages to a naive walk."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    for k in range(depth):  # objects 2 .. depth+1: Pages nodes
        objs.append(b"<< /Type /Pages /Kids [%d 0 R %d 0 R] /Count 2 >>" % (k + 3, k + 3))
    page, content, font = depth + 2, depth + 3, depth + 4
    objs.append(b"<< /Type /Page /MediaBox [0 0 612 792] /Contents %d 0 R /Resources << /Font << /F1 %d 0 R >> >> >>"
                % (content, font))
    objs.append(stream(b"BT /F1 12 Tf 72 720 Td (one page) Tj ET"))
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return pdf_bytes(objs)


def tgz_long_name(n: int) -> bytes:
    """A small .tar.gz whose first header is a GNU long name of `n` bytes (0.6 MB of gzip for 600 MB)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as gz:
        ti = tarfile.TarInfo("././@LongLink")
        ti.type, ti.size = tarfile.GNUTYPE_LONGNAME, n
        gz.write(ti.tobuf(format=tarfile.GNU_FORMAT))
        chunk, left = b"a" * (1 << 20), n
        while left > 0:
            gz.write(chunk[:min(left, len(chunk))])
            left -= len(chunk)
        gz.write(b"\0" * ((512 - n % 512) % 512))
        gz.write(member(b"x.txt", b"hello") + b"\0" * 1024)
    return buf.getvalue()


def member(name: bytes, data: bytes, **kw) -> bytes:
    ti = tarfile.TarInfo(name.decode())
    ti.size = len(data)
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * ((512 - len(data) % 512) % 512)


def tar_sparse_gnu() -> bytes:
    """An old-GNU sparse member ('S'): its holes would unpack to whatever size the header says."""
    ti = tarfile.TarInfo("model.gguf")
    ti.type, ti.size = tarfile.GNUTYPE_SPARSE, 0
    return ti.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024


def tar_sparse_pax() -> bytes:
    """A pax GNU.sparse 1.0 member claiming 300 MB from a few bytes."""
    ti = tarfile.TarInfo("GNUSparseFile.0/model.gguf")
    ti.size = 512
    ti.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "model.gguf",
                      "GNU.sparse.realsize": str(300 * 2**20)}
    body = b"1\n0\n5\n".ljust(512, b"\0")
    return ti.tobuf(format=tarfile.PAX_FORMAT) + body + b"\0" * 1024


def headers_only_tar(members: int) -> bytes:
    """Many empty members: bytes that are all headers."""
    return b"".join(member(f"d/{i:06d}.txt".encode(), b"") for i in range(members)) + b"\0" * 1024


def html_open_tag(n: int = 20_000) -> bytes:
    return (b"<html><body><p>before</p>" + b"<a b='" * n)
