"""E-mail, archive and source-code converters. Every fixture is built here,
in memory, so the hostile cases (zip-slip, bombs, lying headers, encrypted
and truncated archives) are exact and need no files from anywhere."""
from __future__ import annotations

import io
import struct
import tarfile
import zipfile
from email.message import EmailMessage

import pytest

from taskling.data.formats import ConvertError, Limits, convert, detect
from taskling.data.formats import archive, mail


def spans_ok(ex) -> str:
    """Extracted.text() spans must give back each segment's text exactly."""
    text, spans = ex.text()
    assert len(spans) == len(ex.segments)
    for seg, (a, b) in zip(ex.segments, spans):
        assert text[a:b] == seg.text.strip("\n")
    return text


def make_zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ------------------------------------------------------------------ e-mail

def _reply_with_attachments() -> bytes:
    fwd = EmailMessage()
    fwd["From"] = "Carol <carol@example.com>"
    fwd["To"] = "alice@example.com"
    fwd["Subject"] = "Old numbers"
    fwd["Message-ID"] = "<fwd@example.com>"
    fwd.set_content("The forwarded text.")

    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.com>"
    msg["To"] = "Bob <bob@example.com>"
    msg["Date"] = "Tue, 02 Jan 2024 10:00:00 +0000"
    msg["Subject"] = "Re: Budget 2024"
    msg["Message-ID"] = "<m2@example.com>"
    msg["In-Reply-To"] = "<m1@example.com>"
    msg["References"] = "<m0@example.com> <m1@example.com>"
    msg.set_content("The plain body wins.\nSee the notes.\n")
    msg.add_alternative("<html><body><p>The <b>HTML</b> twin.</p></body></html>", subtype="html")
    msg.add_attachment(b"notes in plain text\n", maintype="text", subtype="plain", filename="notes.txt")
    msg.add_attachment(make_zip({"inner/readme.md": b"# Inner\n"}), maintype="application", subtype="zip",
                       filename="../../etc/bundle.zip")
    msg.add_attachment(fwd)
    return msg.as_bytes()


def test_eml_plain_preferred_reply_headers_and_attachments():
    ex = convert("reply.eml", _reply_with_attachments())
    assert ex.format == "eml" and ex.converter.startswith("stdlib email (python 3.11")
    [seg] = ex.segments
    assert seg.kind == "message" and seg.locator == "<m2@example.com>"
    assert seg.text.startswith("From: Alice <alice@example.com>\nTo: Bob <bob@example.com>\n"
                               "Date: Tue, 02 Jan 2024 10:00:00 +0000\nSubject: Re: Budget 2024\n"
                               "In-Reply-To: <m1@example.com>\n")
    assert "The plain body wins." in seg.text and "HTML" not in seg.text
    assert "The forwarded text." not in seg.text  # the forwarded mail is a child, not body text
    names = [c.name for c in ex.children]
    assert names == ["<m2@example.com>/notes.txt", "<m2@example.com>/bundle.zip",
                     "<m2@example.com>/Old numbers.eml"]
    assert all(c.relation == "attachment" for c in ex.children)
    assert ex.children[0].data == b"notes in plain text\n"
    assert "Attachments: notes.txt, bundle.zip, Old numbers.eml" in seg.text
    # the attachments convert again: the zip to its member, the forwarded mail to a message
    inner = convert(names[1], ex.children[1].data)
    assert [c.name for c in inner.children] == ["inner/readme.md"]
    fwd = convert(names[2], ex.children[2].data)
    assert fwd.segments[0].locator == "<fwd@example.com>" and "The forwarded text." in fwd.segments[0].text
    [info] = ex.meta["messages"]
    assert info == {"message_id": "<m2@example.com>", "in_reply_to": "<m1@example.com>",
                    "references": ["<m0@example.com>", "<m1@example.com>"], "subject": "Re: Budget 2024",
                    "date": "Tue, 02 Jan 2024 10:00:00 +0000", "from": "Alice <alice@example.com>"}
    assert ex.meta["title"] == "Re: Budget 2024"
    spans_ok(ex)


def test_eml_html_only_and_without_message_id():
    msg = EmailMessage()
    msg["From"] = "news@example.com"
    msg["Subject"] = "Newsletter"
    msg.set_content("<html><head><style>p{}</style></head><body><h1>Hello</h1><p>Read <i>this</i>.</p>"
                    "<script>x()</script></body></html>", subtype="html")
    ex = convert("news.eml", msg.as_bytes())
    [seg] = ex.segments
    assert seg.locator == "message 1"
    assert "# Hello" in seg.text and "Read this." in seg.text and "x()" not in seg.text and "p{}" not in seg.text
    assert ex.meta["messages"][0]["message_id"] is None
    spans_ok(ex)


@pytest.mark.parametrize("raw,expected", [
    ("../../etc/passwd", "passwd"), ("C:\\Users\\me\\report.pdf", "report.pdf"), ("/abs/x.txt", "x.txt"),
    ("bad\x00name\x1f.txt", "badname.txt"), ("..", "fallback.bin"), ("", "fallback.bin"), ("a/", "a"),
])
def test_attachment_filenames_are_sanitised(raw, expected):
    assert mail.safe_filename(raw, "fallback.bin") == expected


def _thread_mbox() -> bytes:
    return (
        b"From alice@example.com Mon Jan  1 09:00:00 2024\n"
        b"From: Alice <alice@example.com>\nTo: team@example.com\nSubject: Budget 2024\n"
        b"Date: Mon, 01 Jan 2024 09:00:00 +0000\nMessage-ID: <m1@example.com>\n\n"
        b"Here is the budget.\n>From here on, numbers are final.\n\n"
        b"From bob@example.com Mon Jan  1 10:00:00 2024\n"
        b"From: Bob <bob@example.com>\nTo: team@example.com\nSubject: Re: Budget 2024\n"
        b"Date: Mon, 01 Jan 2024 10:00:00 +0000\nMessage-ID: <m2@example.com>\nIn-Reply-To: <m1@example.com>\n"
        b"References: <m1@example.com>\n\nLooks good.\nFrom the numbers I see no problem.\n\n"
        b"From carol@example.com Mon Jan  1 11:00:00 2024\n"
        b"From: Carol <carol@example.com>\nTo: team@example.com\nSubject: Re: Budget 2024\n"
        b"Date: Mon, 01 Jan 2024 11:00:00 +0000\nIn-Reply-To: <m2@example.com>\n"
        b"References: <m1@example.com> <m2@example.com>\n\nAgreed.\n"
    )


def test_mbox_thread():
    ex = convert("team.mbox", _thread_mbox())
    assert ex.format == "mbox"
    assert [s.locator for s in ex.segments] == ["<m1@example.com>", "<m2@example.com>", "message 3"]
    assert all(s.kind == "message" for s in ex.segments)
    # mboxrd quoting undone; an unquoted "From the ..." body line did not start a message
    assert "From here on, numbers are final." in ex.segments[0].text
    assert "From the numbers I see no problem." in ex.segments[1].text
    assert "In-Reply-To: <m1@example.com>" in ex.segments[1].text
    msgs = ex.meta["messages"]
    assert [m["in_reply_to"] for m in msgs] == [None, "<m1@example.com>", "<m2@example.com>"]
    assert msgs[2]["references"] == ["<m1@example.com>", "<m2@example.com>"]
    assert msgs[2]["message_id"] is None and msgs[2]["from"] == "Carol <carol@example.com>"
    text = spans_ok(ex)
    assert text.count("Subject: ") == 3


def test_mail_sniffing_is_strict():
    mbox, eml = _thread_mbox(), _reply_with_attachments()
    assert detect("inbox", mbox).fmt == "mbox"
    assert detect("saved.txt", eml).fmt == "eml"
    assert convert("inbox", mbox).format == "mbox"
    # ordinary text that merely looks a little like mail stays text
    for text in (b"From the desk of the editor: Subject: none\n\nHello.\n",
                 b"Subject: meeting notes\nAgenda: budget\n\nWe met.\n",          # no From/Received/...
                 b"From: me\nSubject: x\nthis line is not a header\n\nbody\n",
                 b"From alice yesterday\nSubject: hi\n\nbody\n"):               # no date in the From_ line
        assert detect("notes.txt", text).fmt == "text", text
    # a .py file never goes to the mail converter, however it starts
    assert detect("x.py", eml).fmt == "python"


def test_eml_with_broken_headers_and_unknown_charset():
    raw = (b"From: =?utf-8?b?SsO8cmdlbg==?= <j@example.com>\r\nTo: ,,, @@@ <<>>\r\n"
           b"Subject: =?iso-8859-1?q?Gr=FC=DFe?=\r\nDate: not a date\r\nMessage-ID: <x y z>\r\n"
           b"Content-Type: text/plain; charset=x-unknown-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
           b"\r\nHall=F6chen =\r\nWelt\r\n")
    ex = convert("odd.eml", raw)
    [seg] = ex.segments
    assert seg.locator == "<x y z>"  # kept as written, not cut short by the header parser
    assert seg.text == ("From: J\u00fcrgen <j@example.com>\nTo: ,,, @@@ <<>>\nDate: not a date\n"
                        "Subject: Gr\u00fc\u00dfe\n\nHall\u00f6chen Welt")


def test_mbox_with_crlf_and_junk_before_the_first_message():
    box = b"junk line\r\n" + _thread_mbox().replace(b"\n", b"\r\n")
    ex = convert("team.mbox", box)
    assert [s.locator for s in ex.segments] == ["<m1@example.com>", "<m2@example.com>", "message 3"]
    assert ex.warnings == ["11 bytes before the first 'From ' line are not a message and were skipped"]
    assert "\r" not in ex.segments[0].text


def test_mbox_without_separator_is_an_error():
    with pytest.raises(ConvertError, match="no 'From sender date' separator"):
        convert("box.mbox", b"Subject: hi\n\njust text\n")


# ------------------------------------------------------------------ archives

def test_zip_members_nested_dirs_and_nested_zip():
    inner = make_zip({"deep/note.txt": b"inner note"})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("docs/", b"")                      # a directory entry: not a member
        zf.writestr("docs/guide/install.md", b"# Install\n")
        zf.writestr("./top.txt", b"top")
        zf.writestr("nested.zip", inner)
    ex = convert("bundle.zip", buf.getvalue())
    assert ex.format == "zip" and ex.converter == "stdlib zipfile" and ex.segments == []
    assert [(c.name, c.relation) for c in ex.children] == [
        ("docs/guide/install.md", "member"), ("top.txt", "member"), ("nested.zip", "member")]
    assert ex.children[2].data == inner and ex.warnings == []
    again = convert(ex.children[2].name, ex.children[2].data)
    assert [(c.name, c.data) for c in again.children] == [("deep/note.txt", b"inner note")]
    # sniffed without its extension, but an OOXML/EPUB package is left to its own converter
    assert detect("download.bin", buf.getvalue()).fmt == "zip"
    assert not archive._sniff_zip(make_zip({"[Content_Types].xml": b"<x/>", "word/document.xml": b"<x/>"}), "a")
    assert not archive._sniff_zip(make_zip({"mimetype": b"application/epub+zip"}), "a")


def test_tar_gz_and_sniffing():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in (("src/a.py", b"def a():\n    pass\n"), ("README", b"read me")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        d = tarfile.TarInfo("src/sub")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
    data = buf.getvalue()
    for name in ("code.tar.gz", "code.tgz", "code.bin"):
        ex = convert(name, data)
        assert ex.format == "tar" and ex.segments == [] and ex.meta["compression"] == "gzip"
        assert [(c.name, c.data, c.relation) for c in ex.children] == [
            ("src/a.py", b"def a():\n    pass\n", "member"), ("README", b"read me", "member")]
    with pytest.raises(ConvertError, match="tar archive"):
        convert("code.tar.gz", data[: len(data) // 2])


def test_tar_links_devices_and_unsafe_paths_are_skipped():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ok = tarfile.TarInfo("ok.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        for name, kind, target in (("link", tarfile.SYMTYPE, "/etc/shadow"), ("hard", tarfile.LNKTYPE, "ok.txt"),
                                   ("dev", tarfile.CHRTYPE, ""), ("fifo", tarfile.FIFOTYPE, "")):
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = kind, target
            tf.addfile(ti)
        evil = tarfile.TarInfo("../../evil.sh")
        evil.size = 4
        tf.addfile(evil, io.BytesIO(b"boom"))
    ex = convert("x.tar", buf.getvalue())
    assert [c.name for c in ex.children] == ["ok.txt"]
    w = "\n".join(ex.warnings)
    assert "link: skipped, a symbolic link (to /etc/shadow)" in w
    assert "hard: skipped, a hard link (to ok.txt)" in w
    assert "dev: skipped, a device or FIFO" in w and "fifo: skipped, a device or FIFO" in w
    assert "../../evil.sh: skipped, unsafe path" in w


def test_zip_slip_members_are_skipped():
    data = make_zip({"../evil.txt": b"x", "/etc/passwd": b"y", "a\\..\\..\\win.txt": b"z", "C:/boot.ini": b"w",
                     "safe/ok.txt": b"fine"})
    ex = convert("slip.zip", data)
    assert [c.name for c in ex.children] == ["safe/ok.txt"]
    assert ex.warnings == [
        "../evil.txt: skipped, unsafe path (contains a '..' component)",
        "/etc/passwd: skipped, unsafe path (absolute)",
        "a\\..\\..\\win.txt: skipped, unsafe path (contains a '..' component)",
        "C:/boot.ini: skipped, unsafe path (absolute)",
    ]


ZEROS = 50 * 2**20


@pytest.fixture(scope="module")
def bomb_zip() -> bytes:
    return make_zip({"bomb.bin": bytes(ZEROS), "ok.txt": b"fine"})


def test_zip_bomb_is_skipped_by_ratio(bomb_zip):
    assert len(bomb_zip) < ZEROS / 500
    ex = convert("bomb.zip", bomb_zip, Limits(max_archive_ratio=100))
    assert [c.name for c in ex.children] == ["ok.txt"]
    assert len(ex.warnings) == 1 and ex.warnings[0].startswith("bomb.bin: skipped, compression ratio ")
    assert "over the limit of 100:1" in ex.warnings[0]


def _patch_central(data: bytes, member: str, **fields) -> bytes:
    """Rewrite fields of one member's central-directory record (what
    zipfile trusts), leaving its local header and data alone."""
    out = bytearray(data)
    pos = out.find(b"PK\x01\x02")
    while pos >= 0:
        n = struct.unpack_from("<H", out, pos + 28)[0]
        if out[pos + 46:pos + 46 + n].decode() == member:
            for key, value in fields.items():
                offset, fmt = {"flags": (8, "<H"), "compress_size": (20, "<I"), "file_size": (24, "<I")}[key]
                struct.pack_into(fmt, out, pos + offset, value)
            return bytes(out)
        pos = out.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"{member} not in the central directory")


def test_zip_bomb_with_a_lying_header(bomb_zip):
    """The header claims 1 MB (ratio within limits) for 50 MB of zeros:
    zipfile stops at the declared size and the CRC check then fails, so the
    member is skipped as corrupt and never more than 1 MB is held."""
    lying = _patch_central(bomb_zip, "bomb.bin", file_size=2**20)
    ex = convert("bomb.zip", lying, Limits(max_archive_ratio=100))
    assert [c.name for c in ex.children] == ["ok.txt"]
    assert ex.warnings == ["bomb.bin: skipped, corrupt (BadZipFile: Bad CRC-32 for file 'bomb.bin')"]


def test_reading_stops_at_the_limit_whatever_the_header_says():
    """The in-flight guard read_capped, for a stream that yields more than
    any header promised (zipfile itself caps at the declared size, so this
    is checked on a plain stream)."""
    limits = Limits(max_file_bytes=10 * 2**20, max_archive_ratio=100)
    stream = io.BytesIO(bytes(8 * 2**20))
    with pytest.raises(archive._OverLimit, match="100 times its packed size") as e:
        archive.read_capped(stream, limits.max_file_bytes, archive._ratio_cap(20_000, limits), 2**30, limits)
    assert not e.value.stop and stream.tell() <= 2 * 2**20 + 2**16  # gave up within a chunk of the cap
    with pytest.raises(archive._OverLimit, match="max_archive_total_bytes") as e:
        archive.read_capped(io.BytesIO(bytes(5000)), 2**20, None, 4096, limits)
    assert e.value.stop
    with pytest.raises(archive._OverLimit, match="per-file limit"):
        archive.read_capped(io.BytesIO(bytes(5000)), 4096, None, 2**30, limits)


def test_member_over_file_size_limit():
    ex = convert("big.zip", make_zip({"big.txt": b"a" * 5000, "small.txt": b"b"}), Limits(max_file_bytes=4096))
    assert [c.name for c in ex.children] == ["small.txt"]
    assert ex.warnings == ["big.txt: skipped, 5000 bytes is over the per-file limit of 4096 bytes (max_file_bytes)"]


def test_total_size_limit_stops_the_archive():
    data = make_zip({f"f{i}.txt": bytes([65 + i]) * 1000 for i in range(4)})
    ex = convert("many.zip", data, Limits(max_archive_total_bytes=2500))
    assert [c.name for c in ex.children] == ["f0.txt", "f1.txt"]
    assert len(ex.warnings) == 1
    assert ex.warnings[0].startswith("stopped at f2.txt: unpacking it would take the archive to over")
    assert "max_archive_total_bytes" in ex.warnings[0]


def test_member_count_limit_stops_the_archive():
    data = make_zip({f"f{i}.txt": b"x" for i in range(5)})
    ex = convert("many.zip", data, Limits(max_archive_members=2))
    assert [c.name for c in ex.children] == ["f0.txt", "f1.txt"]
    assert ex.warnings == ["stopped at f2.txt: the archive has more than 2 members (limit max_archive_members); "
                           "3 member(s) from here on were not read"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(5):
            ti = tarfile.TarInfo(f"t{i}.txt")
            ti.size = 1
            tf.addfile(ti, io.BytesIO(b"x"))
    ex = convert("many.tar", buf.getvalue(), Limits(max_archive_members=2))
    assert [c.name for c in ex.children] == ["t0.txt", "t1.txt"]
    assert ex.warnings[0].startswith("stopped at t2.txt: the archive has more than 2 members")


def test_encrypted_zip_member_is_skipped():
    """Built by hand: the 'encrypted' flag bit set on a stored member in both
    its local and central headers (what a real ZipCrypto member declares)."""
    data = bytearray(make_zip({"secret.txt": b"top secret", "open.txt": b"hello"}, zipfile.ZIP_STORED))
    assert data[:4] == b"PK\x03\x04"  # secret.txt's local header comes first
    struct.pack_into("<H", data, 6, struct.unpack_from("<H", data, 6)[0] | 0x1)
    data = _patch_central(bytes(data), "secret.txt", flags=0x1)
    ex = convert("locked.zip", data)
    assert [c.name for c in ex.children] == ["open.txt"]
    assert ex.warnings == ["secret.txt: skipped, encrypted (password protected)"]


def test_zip_symlinks_and_empty_members_are_skipped():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        link = zipfile.ZipInfo("link")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
        zf.writestr("empty.txt", b"")
        zf.writestr("pkg/__init__.py", b"")
        zf.writestr("real.txt", b"real")
    ex = convert("links.zip", buf.getvalue())
    assert [c.name for c in ex.children] == ["real.txt"]
    assert ex.warnings == ["link: skipped, a symbolic link", "2 empty member(s) (0 bytes) skipped"]


def test_corrupt_member_and_truncated_zip():
    data = bytearray(make_zip({"a.txt": b"A" * 100, "b.txt": b"hello world"}, zipfile.ZIP_STORED))
    pos = data.find(b"A" * 100)
    data[pos + 10] = ord("Z")  # the stored bytes no longer match their CRC
    ex = convert("crc.zip", bytes(data))
    assert [c.name for c in ex.children] == ["b.txt"]
    assert ex.warnings == ["a.txt: skipped, corrupt (BadZipFile: Bad CRC-32 for file 'a.txt')"]
    whole = make_zip({"a.txt": b"some text " * 100})
    with pytest.raises(ConvertError, match="not a readable zip archive"):
        convert("cut.zip", whole[: len(whole) // 2])


def test_compressed_tar_bomb_stops_the_stream():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        first = tarfile.TarInfo("first.txt")
        first.size = 5
        tf.addfile(first, io.BytesIO(b"first"))
        ti = tarfile.TarInfo("zeros.bin")
        ti.size = 20 * 2**20
        tf.addfile(ti, io.BytesIO(bytes(ti.size)))
    ex = convert("bomb.tar.gz", buf.getvalue(), Limits(max_archive_ratio=100))
    assert [c.name for c in ex.children] == ["first.txt"]
    assert ex.warnings[0].startswith("stopped at zeros.bin: the gzip stream would unpack to over 100 times")


# ------------------------------------------------------------------ code

PY = '''"""Tools for piles."""
import os

LIMIT = 3


# Parse the command line.
@cache
def parse_args(argv):
    """Why: one place for flags."""
    return argv


class Pile:
    """A pile."""

    def push(self, x):
        self.items.append(x)


async def fetch(url):
    return url

if __name__ == "__main__":
    parse_args([])
'''


def test_python_units_with_exact_locators():
    ex = convert("tools.py", PY.encode())
    assert ex.format == "python" and ex.converter.startswith("stdlib ast (python 3.11")
    assert [s.locator for s in ex.segments] == [
        "lines 1-4", "def parse_args (lines 7-11)", "class Pile (lines 14-18)", "async def fetch (lines 21-22)",
        "lines 24-25"]
    assert all(s.kind == "code" for s in ex.segments)
    assert ex.segments[1].text.startswith("# Parse the command line.\n@cache\ndef parse_args(argv):")
    assert ex.warnings == []
    spans_ok(ex)


def test_big_python_class_is_split_per_method():
    methods = "".join(f"    def m{i}(self):\n" + "        x = 1\n" * 20 + "\n" for i in range(8))
    src = "class Big:\n    \"\"\"Many methods.\"\"\"\n    SIZE = 1\n\n" + methods + "    TAIL = 2\n"
    ex = convert("big.py", src.encode())
    locs = [s.locator for s in ex.segments]
    assert locs[0] == "class Big (lines 1-3)"
    assert locs[1] == "def Big.m0 (lines 5-25)" and locs[8] == "def Big.m7 (lines 159-179)"
    assert locs[9] == "class Big (lines 181-181)" and len(locs) == 10
    spans_ok(ex)


def test_python_syntax_error_falls_back_to_definition_lines():
    src = "import os\n\ndef ok():\n    return 1\n\nprint 'python 2'\n\nclass Later:\n    pass\n"
    ex = convert("old.py", src.encode())
    assert ex.format == "python" and ex.converter.startswith("taskling regex splitter")
    assert ex.warnings == ["Python syntax error at line 6 (Missing parentheses in call to 'print'. "
                           "Did you mean print(...)?); split at definition lines instead"]
    assert [s.locator for s in ex.segments] == ["lines 1-1", "def ok (lines 3-4)", "lines 6-6",
                                                "class Later (lines 8-9)"]
    spans_ok(ex)


JS = '''import fs from "fs";

/** Read a config file. */
export function readConfig(path) {
  return JSON.parse(fs.readFileSync(path));
}

const helper = async (x) => {
  return x * 2;
};

export default class Store {
  get(key) {
    return this.data[key];
  }
}

module.exports = { readConfig };
'''


def test_javascript_units():
    ex = convert("store.js", JS.encode())
    assert ex.format == "javascript"
    assert [s.locator for s in ex.segments] == [
        "lines 1-1", "function readConfig (lines 3-6)", "const helper (lines 8-10)", "class Store (lines 12-16)",
        "lines 18-18"]
    assert ex.segments[1].text.startswith("/** Read a config file. */\nexport function readConfig")
    spans_ok(ex)


def test_go_rust_sql_and_windows():
    go = ("package main\n\nimport \"fmt\"\n\ntype Server struct {\n\tname string\n}\n\n"
          "// Handle serves.\nfunc (s *Server) Handle() {\n\tfmt.Println(s.name)\n}\n\nfunc main() {\n}\n")
    assert [s.locator for s in convert("main.go", go.encode()).segments] == [
        "lines 1-3", "type Server (lines 5-7)", "func Server.Handle (lines 9-12)", "func main (lines 14-15)"]
    rs = ("use std::fmt;\n\n#[derive(Debug)]\npub struct Point { x: f64 }\n\n"
          "impl fmt::Display for Point {\n    fn fmt(&self) {}\n}\n\npub(crate) async fn run() {\n}\n")
    assert [s.locator for s in convert("p.rs", rs.encode()).segments] == [
        "lines 1-1", "struct Point (lines 3-4)", "impl fmt::Display for Point (lines 6-8)", "fn run (lines 10-11)"]
    sql = ("-- users\nCREATE TABLE users (\n  id int,\n  name text\n);\n\nINSERT INTO users VALUES (1, 'a');\n\n"
           "create index if not exists users_name on users(name);\n")
    assert [s.locator for s in convert("schema.sql", sql.encode()).segments] == [
        "table users (lines 1-5)", "lines 7-7", "index users_name (lines 9-9)"]
    sh = "".join(f"echo step {i}\n" for i in range(130))
    ex = convert("run.sh", sh.encode())
    assert [s.locator for s in ex.segments] == ["lines 1-60", "lines 61-120", "lines 121-130"]
    spans_ok(ex)


def test_big_java_class_is_split_per_method():
    body = "".join(f"    public int m{i}() {{\n" + "        int x = 1;\n" * 30 + "        return x;\n    }\n\n"
                   for i in range(6))
    src = "package a;\n\npublic class Big {\n    private int n;\n\n" + body + "}\n"
    ex = convert("Big.java", src.encode())
    locs = [s.locator for s in ex.segments]
    assert locs[:3] == ["lines 1-1", "class Big (lines 3-4)", "method Big.m0 (lines 6-38)"]
    assert locs[-1] == "method Big.m5 (lines 176-210)" and len(locs) == 8
    assert ex.segments[-1].text.endswith("        return x;\n    }\n\n}")  # the class's closing brace
    spans_ok(ex)


def test_nested_containers_split_down_to_methods():
    rb = ("module Util\n  class Pile\n" + "".join(f"    def m{i}\n" + "      x = 1\n" * 30 + "    end\n\n"
                                                  for i in range(5)) + "  end\nend\n")
    ex = convert("pile.rb", rb.encode())
    assert [s.locator for s in ex.segments] == [
        "module Util (lines 1-1)", "class Util.Pile (lines 2-2)", "def Util.Pile.m0 (lines 3-34)",
        "def Util.Pile.m1 (lines 36-67)", "def Util.Pile.m2 (lines 69-100)", "def Util.Pile.m3 (lines 102-133)",
        "def Util.Pile.m4 (lines 135-169)"]
    rs = "impl fmt::Display for Point {\n" + "".join(
        f"    /// doc {i}\n    pub fn f{i}(&self) -> u32 {{\n" + "        let x = 1;\n" * 25 + "        x\n    }\n\n"
        for i in range(6)) + "}\n"
    locs = [s.locator for s in convert("point.rs", rs.encode()).segments]
    assert locs[:2] == ["impl fmt::Display for Point (lines 1-1)", "fn Point.f0 (lines 2-30)"] and len(locs) == 7
    spans_ok(ex)


def test_chunks_keep_message_and_code_locators():
    from taskling.data.chunking import chunk_document

    def words(texts):
        return [len(t.split()) for t in texts]

    _, chunks = chunk_document(convert("team.mbox", _thread_mbox()), 200, words)
    assert [c["locator"] for c in chunks] == ["<m1@example.com>", "<m2@example.com>", "message 3"]
    _, chunks = chunk_document(convert("tools.py", PY.encode()), 200, words)
    assert [c["locator"] for c in chunks] == [
        "lines 1-4", "def parse_args (lines 7-11)", "class Pile (lines 14-18)", "async def fetch (lines 21-22)",
        "lines 24-25"]


def test_shebang_script_without_extension():
    src = b"#!/usr/bin/env python3\nimport sys\n\ndef main():\n    print(sys.argv)\n"
    assert detect("bin/tool", src).fmt == "code"
    ex = convert("bin/tool", src)
    assert ex.format == "python" and [s.locator for s in ex.segments] == ["lines 1-2", "def main (lines 4-5)"]
    assert detect("notes", b"#!not a script\n").fmt == "text"
