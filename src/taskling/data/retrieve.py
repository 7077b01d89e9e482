"""Retrieval for the teacher: the pile chunks most relevant to an input, by words and by meaning.

    hits = retrieve(pile, "What does SQLSTATE 23505 mean?", k=3, embedder=emb)

FTS5 (BM25) and embedding cosine each rank the pile; reciprocal rank fusion (RRF, k=60)
merges the two lists, so a chunk that is near the top of either comes first and one near
the top of both comes before it. Without embeddings (ingest.embed: false) it is FTS5 alone.

Identifiers match exactly. A query word that names a thing rather than says something (`identifiers`:
one with a digit or an underscore, or written in backticks; not a year or an ordinal) is a code or a name: `23505` is not
`23503`, and `max_connections` is not "max" and "connections" apart, though FTS5 splits it into those
two words and an embedding sees them as near. So the chunks that hold such a word as it is written
(any case, not inside a longer word) are found on their own (Pile.holding) and come before those that
do not, each name counting the more the fewer chunks hold it (`name_weights`); fusion orders each
group. The index is unchanged, so piles and exported indexes of before read as they did.

An open-book reader is shown each chunk focused on the question (`focus`): its paragraph that best
matches, with its neighbours, not its first characters.

For task types that check it (TaskType.retrieval_check: answer, extract), evaluate's
`teacher-retrieval` system asks the teacher with these chunks in its prompt
(`tasks.with_context`), then checks its answer against them (TaskType.check_retrieved). So
the report shows what the teacher knows *with* the documents, the bar the student, which
answers without them, has to reach.

An open-book student (student.retrieval, core/openbook.py) reads through one `Retriever`: the
pile, the embedder and the settings (k, the characters kept of each chunk) that train renders its
examples with, evaluate asks the open-book systems with, and predict answers with.

    with Retriever.open(cfg, ws.pile_db) as r:
        chunks = r.find("What does SQLSTATE 23505 mean?")
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

from ..core.openbook import is_open
from .pile import Chunk, Pile

# Words that match nearly every chunk: left out of the FTS5 query (BM25 would rank on them when a
# question shares no content word with the documents, and that ranking would count in the fusion).
STOP = frozenset("""a an and are as at be by can do does for from how i in is it its me my of on or so that the
this to was what when where which who why will with you your""".split())
RRF_K = 60          # the usual constant: rank 1 scores 1/61, rank 10 scores 1/70
CANDIDATES = 30     # each ranking's depth before fusion
MOST_IDENTIFIERS = 8  # looked up one by one (Pile.holding): a pasted log of numbers stays one quick search


WORD = re.compile(r"\w+")
# Scripts written without spaces (kana, CJK ideographs, hangul) glue a name to the words around it
# ("错误23505是什么意思", "max_connectionsを増やす"): their letters are never part of a name.
UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
NAME_CHAR = rf"[^\W{UNSPACED}]"
NAME_CHAR_RE = re.compile(NAME_CHAR)
NAME = re.compile(rf"{NAME_CHAR}+(?:\.{NAME_CHAR}+)*")  # a word, or words joined by dots: v2.1, 3.11, os.path.join
QUOTED = re.compile(r"`([^`]+)`")
# Numbers as prose writes them say when or which one in a row, not which thing: a year or a decade
# (1900-2099, "in 2019", "the 1990s") and an ordinal ("3rd", "21st").
PROSE_NUMBER = re.compile(r"(?:19|20)\d\ds?|\d+(?:st|nd|rd|th)", re.IGNORECASE)


def identifiers(query: str) -> list[str]:
    """The query's names that must match to the letter: words, or words joined by dots (NAME: `v2.1`,
    `3.11`), with a digit (of three characters or more: `23505`, `E1000`, `404`, `v2.1`, not the 2 of
    "2 steps") or an underscore, and any name written in backticks (`createHash`, `os.path.join`). A
    year or an ordinal (PROSE_NUMBER) is a word like any other, ranked by BM25 and meaning but not
    demanded; in backticks it is a name (a 4-digit code such as MySQL's `2006` in that range is then
    matched exactly)."""
    quoted = {w for q in QUOTED.findall(query) for w in NAME.findall(q)}
    return list(dict.fromkeys(w for w in NAME.findall(query) if w in quoted or ("_" in w and w.strip("_."))
                              or (len(w) >= 3 and any(ch.isdigit() for ch in w)
                                  and not PROSE_NUMBER.fullmatch(w))))


def holds_word(text: str, word: str) -> bool:
    """Whether `text` holds `word` as it is written (any case), not as part of a longer name: `v2.1`
    is not in `v2.10` nor in `v2.1.3`; a sentence's full stop after it does not count; in text written
    without spaces it is found between the ideographs around it ("错误23505是")."""
    return word_at(text, word) is not None


def word_at(text: str, word: str) -> re.Match | None:
    """Where `text` first holds `word` as holds_word means it (word_pattern's match, found as the word's
    letters and then its edges checked: compiling word_pattern costs tens of milliseconds a word, as
    NAME_CHAR's class is large, and a served question brings new words every time)."""
    pat = re.compile(re.escape(word), re.IGNORECASE)
    m = pat.search(text)
    while m is not None:
        a, b = m.span()
        if not (_name_char(text, a - 1) or (a >= 2 and text[a - 1] == "." and _name_char(text, a - 2))
                or _name_char(text, b) or (text[b:b + 1] == "." and _name_char(text, b + 1))):
            return m
        m = pat.search(text, a + 1)  # overlapping candidates too ("11" in "1.11")
    return None


def _name_char(text: str, i: int) -> bool:
    return 0 <= i < len(text) and NAME_CHAR_RE.match(text, i) is not None


def word_pattern(word: str) -> str:
    """The regex of `word` standing alone as holds_word means it (search it with re.IGNORECASE)."""
    c = NAME_CHAR
    return rf"(?<!{c})(?<!{c}\.){re.escape(word)}(?!{c}|\.{c})"


def retrieve(pile: Pile, query: str, k: int = 3, embedder=None) -> list[Chunk]:
    """The `k` chunks nearest to `query` (FTS5 and embeddings fused by reciprocal rank), those holding
    more of its identifiers first, a rare identifier counting more than a common one."""
    return ranked(pile, query, k, embedder)[0]


def ranked(pile: Pile, query: str, k: int = 3, embedder=None) -> tuple[list[Chunk], dict[str, float]]:
    """retrieve's chunks, and the weight of each of the query's identifiers (`name_weights`)."""
    if k <= 0 or not query.strip():
        return [], {}
    scores: dict[str, float] = {}
    chunks: dict[str, Chunk] = {}
    content = " ".join(w for w in query.split() if w.lower().strip("?,.!:;\"'()") not in STOP) or query
    rankings = [pile.search(content, CANDIDATES)]
    if embedder is not None:
        rankings.append(pile.nearest(embedder.encode([query])[0], CANDIDATES))
    for ranking in rankings:
        for rank, (c, _) in enumerate(ranking):
            scores[c.key] = scores.get(c.key, 0.0) + 1.0 / (RRF_K + rank + 1)
            chunks[c.key] = c
    holders = _holders(pile, query)
    for found in holders.values():  # a chunk holding the identifier that neither ranking reached still competes
        for c in found:
            chunks.setdefault(c.key, c)
    weight = {name: _rarity(found) for name, found in holders.items()}
    exact = {key: round(sum(w for n, w in weight.items() if holds_word(c.text, n)), 9) for key, c in chunks.items()}
    # equal fused scores (first by words and first by meaning): meaning decides, as BM25 over a
    # query without a shared content word ranks on its stop words
    by_meaning = {c.key: r for r, (c, _) in enumerate(rankings[-1])} if embedder is not None else {}
    best = sorted(chunks, key=lambda key: (-exact.get(key, 0), -round(scores.get(key, 0.0), 12),
                                           by_meaning.get(key, CANDIDATES), key))[:k]
    return [chunks[key] for key in best], weight


def name_weights(pile: Pile, query: str) -> dict[str, float]:
    """How much holding each of the query's identifiers says (its first MOST_IDENTIFIERS): the rarer the
    name in the pile, the more. In "sqlite3_step() returned 2579" the code, held by one chunk, outranks
    the function name held by hundreds (counted up to CANDIDATES): log(1 + CANDIDATES / holders)."""
    return {name: _rarity(found) for name, found in _holders(pile, query).items()}


def _holders(pile: Pile, query: str) -> dict[str, list[Chunk]]:
    return {name: [c for c, _ in pile.holding(name, CANDIDATES) if holds_word(c.text, name)]
            for name in identifiers(query)[:MOST_IDENTIFIERS]}


def _rarity(holders: list) -> float:
    return math.log(1 + CANDIDATES / max(1, len(holders)))


NAME_WEIGHT = 4.0  # focus: a piece holding one of the query's identifiers outranks lines sharing only words


BLANK_LINE = re.compile(r"\n[^\S\n]*\n")  # between paragraphs (and between the rows ingest writes of a table)
NEWLINE = re.compile(r"\n")
SPACE = re.compile(r"\s")


def focus(chunk: Chunk, query: str, lines: int | None, limit: int, weights: dict[str, float] | None = None) -> Chunk:
    """The part of `chunk` a reader is shown for `query`: the paragraph that best matches it, with up to
    `lines` paragraphs either side while they fit in `limit` characters. A paragraph longer than `limit`
    is focused the same way by its lines, and a line longer than that is cut around its match. Best
    match: the query's identifiers (written as they are) weigh most, the rarer in the pile the more
    (`weights`, name_weights), then its words, the rarer among the pieces the more; the first wins a
    tie. The result is a piece of the chunk's own text with its offsets, so citations and spans point
    into the document as before. The chunk as it is when `lines` is None or nothing in it shares a
    word with the query.

    In a table of codes (ingest writes a row a paragraph), "What is SQLSTATE 53100?" is shown the row
    of 53100 and two rows either side, not the 20 rows that fill the chunk's first 600 characters (which
    may not reach 53100's row, and among which a small model copies the row next to the right one)."""
    if lines is None:
        return chunk
    text, a, b, at = chunk.text, 0, len(chunk.text), None
    for sep in (BLANK_LINE, NEWLINE):
        pieces = _pieces(text, a, b, sep)
        best = _best_piece(text, pieces, query, weights or {})
        if best is None:
            break
        i, at = best
        a, b = _window(pieces, i, lines, limit)
        if b - a <= limit:
            break
        a, b = pieces[i]  # the best piece alone is over the limit: within it, by lines, then around the match
    if at is None:
        return chunk
    if b - a > limit:
        a, b = _around(text, a, b, at, limit)
    return replace(chunk, text=text[a:b], start_char=chunk.start_char + a, end_char=chunk.start_char + b)


def _pieces(text: str, a: int, b: int, sep: re.Pattern) -> list[tuple[int, int]]:
    """The non-blank pieces of text[a:b] between matches of `sep`, each without its surrounding blanks."""
    out, start = [], a
    for m in [*sep.finditer(text, a, b), None]:
        end = b if m is None else m.start()
        seg = text[start:end]
        if seg.strip():
            out.append((start + len(seg) - len(seg.lstrip()), start + len(seg.rstrip())))
        if m is not None:
            start = m.end()
    return out


def _window(pieces: list[tuple[int, int]], i: int, lines: int, limit: int) -> tuple[int, int]:
    """The span of pieces[i] with up to `lines` pieces either side, taken alternately while they fit in `limit`."""
    lo = hi = i
    for _ in range(lines):
        before = lo > 0 and pieces[hi][1] - pieces[lo - 1][0] <= limit
        lo -= before
        after = hi < len(pieces) - 1 and pieces[hi + 1][1] - pieces[lo][0] <= limit
        hi += after
        if not (before or after):
            break
    return pieces[lo][0], pieces[hi][1]


def _best_piece(text: str, pieces: list[tuple[int, int]], query: str,
                weights: dict[str, float]) -> tuple[int, int] | None:
    """(the index of the piece that best matches `query`, where in `text` its match starts), or None when
    no piece holds a word of the query. Work: one pass over the pieces' words, and a search per piece for
    each of the query's first MOST_IDENTIFIERS identifiers."""
    names = identifiers(query)[:MOST_IDENTIFIERS]
    words = {w.lower() for w in WORD.findall(query) if len(w) > 1 and w.lower() not in STOP}
    if not pieces or not (names or words):
        return None
    n = len(pieces)
    hits = [[word_at(text[a:b], name) for name in names] for a, b in pieces]
    said = [{w.lower() for w in WORD.findall(text[a:b])} & words for a, b in pieces]
    df = Counter(w for s in said for w in s)
    weight = {w: math.log((n + 1) / (df[w] + 0.5)) for w in df}
    name_w = [NAME_WEIGHT * weights.get(name, 1.0) * math.log((n + 1) / (sum(h[j] is not None for h in hits) + 0.5))
              for j, name in enumerate(names)]
    scores = [sum(name_w[j] for j, h in enumerate(hs) if h is not None) + sum(weight[w] for w in s)
              for hs, s in zip(hits, said)]
    i = max(range(n), key=lambda j: (scores[j], -j))
    if scores[i] <= 0:
        return None
    a, b = pieces[i]
    named = [h.start() for h in hits[i] if h is not None]
    if named:
        return i, a + min(named)
    worded = [m.start() for m in WORD.finditer(text, a, b) if m.group(0).lower() in said[i]]
    return i, (worded[0] if worded else a)


def _around(text: str, a: int, b: int, at: int, limit: int) -> tuple[int, int]:
    """A piece of text[a:b] at most `limit` characters long around position `at`, cut at blanks."""
    start = max(a, min(at - limit // 3, b - limit))
    end = min(b, start + limit)
    if start > a and (m := SPACE.search(text, start, at)):
        start = m.end()
    if end < b:
        last = None
        for last in SPACE.finditer(text, max(start, at), end):
            pass
        end = last.start() if last is not None and last.start() > start else end
    return start, end


class Retriever:
    """The open-book student's retriever: `find(query)` gives the `k` chunks it reads for an input,
    each focused on the input (`focus`: its best-matching paragraph with `focus` paragraphs either side;
    None: from the chunk's start) and shown cut to `chunk_chars` characters. An absent or empty pile finds
    nothing."""

    def __init__(self, pile: Pile | None, embedder=None, k: int = 4, chunk_chars: int = 600,
                 focus: int | None = None):
        self.pile, self.embedder, self.k, self.chunk_chars, self.focus = pile, embedder, k, chunk_chars, focus

    @classmethod
    def open(cls, cfg, pile_db: Path, threads: int | None = None) -> "Retriever":
        """The retriever `cfg` (a core.config.Config) describes, over the pile at `pile_db`: the one a served
        model of it reads (`served_settings`), so train and evaluate retrieve as serve and predict do."""
        return cls.from_settings(served_settings(cfg), pile_db, threads)

    @classmethod
    def from_settings(cls, settings: dict, pile_db: Path, threads: int | None = None) -> "Retriever":
        """The retriever a served model was trained with (task.json's `retrieval`, `served_settings`) over
        the pile at `pile_db` (absent: it finds nothing)."""
        pile = Pile(pile_db) if Path(pile_db).exists() else None
        emb = None
        if settings.get("embed_model") and pile is not None:
            from .embed import Embedder

            emb = Embedder(settings["embed_model"], threads, max_tokens=settings.get("embed_max_tokens"))
        lines = settings.get("focus")  # a model exported before focus was read its chunks from their start
        return cls(pile, emb, int(settings.get("k", 4)), int(settings.get("chunk_chars", 600)),
                   None if lines is None else int(lines))

    def find(self, query: str, k: int | None = None) -> list[Chunk]:
        """The chunks nearest `query`, best first (`k` of them, default the retriever's), each as `shown`."""
        if self.pile is None:
            return []
        chunks, weights = ranked(self.pile, str(query), self.k if k is None else k, self.embedder)
        return [focus(c, str(query), self.focus, self.chunk_chars, weights) for c in chunks]

    def shown(self, chunk: Chunk, query: str) -> Chunk:
        """The part of `chunk` this retriever shows a reader for `query` (`focus`), as `find` shows it."""
        if self.focus is None:
            return chunk
        weights = name_weights(self.pile, str(query)) if self.pile is not None else {}
        return focus(chunk, str(query), self.focus, self.chunk_chars, weights)

    def chunk(self, key: str) -> Chunk | None:
        return self.pile.chunk(key) if self.pile is not None else None

    def close(self) -> None:
        if self.pile is not None:
            self.pile.close()

    def __enter__(self) -> "Retriever":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_book(cfg, pile_db: Path) -> bool:
    """Whether `cfg`'s student is open-book (core.openbook.is_open), the pile at `pile_db` deciding `auto`."""
    rc = cfg.student.retrieval
    if rc.mode != "auto":
        return is_open(rc, cfg.task.type, False)
    if not Path(pile_db).exists():
        return False
    with Pile(pile_db) as pile:
        return is_open(rc, cfg.task.type, pile.stats()["chunks"] > 0)


def retriever_settings(cfg) -> dict:
    """What besides student.retrieval decides what the retriever finds (a stage's fingerprint)."""
    return {"embed": cfg.ingest.embed, "embed_model": cfg.ingest.embed_model if cfg.ingest.embed else None,
            "embed_max_tokens": cfg.ingest.embed_max_tokens if cfg.ingest.embed else None}


def served_settings(cfg) -> dict:
    """What a served open-book model needs to retrieve as it was trained (task.json's `retrieval`)."""
    rc = cfg.student.retrieval
    # focus is for questions: an extract or classify input is a passage itself, every line of it matches
    return {"k": rc.k, "chunk_chars": rc.chunk_chars, "focus": rc.focus if cfg.task.type == "answer" else None,
            "missing": rc.missing, "spans": rc.spans} | retriever_settings(cfg)
