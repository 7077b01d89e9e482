"""The open-book student's prompt and its answers' citations: one layout for training, evaluation,
predict and serve.

    msgs = open_messages(system, "What does SQLSTATE 23505 mean?", chunks, limit=600)
    text, cited = split_citations("unique_violation [2]")    # ("unique_violation", [2])

The retrieved chunks come as numbered <document> blocks before the input; the answer ends with
the number of the block it used, `[n]`, or is `core.openbook.ABSTAIN` when no block holds it.
Citations are read from the end of the answer only (`[2]`, `[1][3]`, `[1, 3]`, a full stop after),
so brackets inside an answer (a JSON list, `a[0]`) stay part of it.
"""
from __future__ import annotations

import json
import re

from ..core.delimit import defuse
from ..core.openbook import ABSTAIN
from ..data.pile import Chunk
from . import DATA_RULE, document_block, excerpt, locate, phrase

OPEN_RULE = ("Answer from the documents below and end your answer with the number of the document you used, "
             f"as [1]. If they do not contain the answer, reply exactly: {ABSTAIN}")
NO_DOCUMENTS = "(no documents were found for this input)"
TRAILING = re.compile(r"((?:\s*\[\s*\d{1,2}(?:\s*,\s*\d{1,2})*\s*\])+)\s*[.]?\s*$")


def open_messages(system: str, input_text: str, chunks: list[Chunk], limit: int) -> list[dict]:
    """The open-book student's conversation: its task prompt with the rule to answer from the
    documents and cite them, then the chunks (each cut to `limit` characters) and the input."""
    docs = document_block(chunks, limit) if chunks else NO_DOCUMENTS
    return [{"role": "system", "content": f"{system}\n{OPEN_RULE}\n{DATA_RULE}"},
            {"role": "user", "content": f"{docs}\n\n{input_text}"}]


def cite(answer: str, n: int | None) -> str:
    """An answer with the number of the document it came from (1-based), or as it is without one."""
    return answer if n is None else f"{answer.rstrip()} [{n}]"


def split_citations(text: str) -> tuple[str, list[int]]:
    """(the answer without its trailing citations, the cited document numbers in order, each once)."""
    m = TRAILING.search(text)
    if not m or not text[:m.start()].strip():
        return text.strip(), []
    nums = [int(n) for n in re.findall(r"\d+", m.group(1))]
    return text[:m.start()].rstrip(), list(dict.fromkeys(nums))


def is_abstention(text) -> bool:
    """Whether an answer is the abstention sentence (case, spaces, final punctuation and citations aside)."""
    if not isinstance(text, str):
        return False
    clean = split_citations(text)[0]
    return _plain(clean) == _plain(ABSTAIN)


def _plain(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def cited_chunks(cited: list[int], chunks: list[Chunk], answer: str | None = None) -> list[dict]:
    """What each cited number points at among the chunks shown (numbers outside them are dropped). Given
    the `answer`, each also says where in its chunk the answer rests (`span`, see `answer_span`), so a
    reader can check the claim without opening the document."""
    out = []
    for n in cited:
        if 1 <= n <= len(chunks):
            c = chunks[n - 1]
            out.append({"n": n, "chunk": c.key, "path": c.path, "locator": c.locator}
                       | ({"span": answer_span(c, answer)} if answer is not None else {}))
    return out


def answer_span(chunk: Chunk, answer: str) -> dict | None:
    """Where `answer` sits in the chunk it cites, in the document's characters ({start, end, text, match}:
    its words exactly, else the sentence sharing most of them); None when the chunk holds none of it,
    which tells a reader the citation does not support the answer."""
    found = locate([chunk], answer) if answer.strip() and not is_abstention(answer) else None
    return None if found is None else {k: found[k] for k in ("start", "end", "text", "match")}


def abstention_metrics(expected: list, predicted: list) -> dict:
    """How often a system abstains, and, where some items expect the abstention (questions the pile
    cannot answer), its precision (abstentions that were right) and recall (such items it abstained on)."""
    said = [is_abstention(p) for p in predicted]
    want = [is_abstention(e) for e in expected]
    out = {"abstain_rate": sum(said) / len(said) if said else None}
    if any(want):
        both = sum(s and w for s, w in zip(said, want))
        out |= {"abstain_precision": both / sum(said) if any(said) else None, "abstain_recall": both / sum(want)}
    return out


def holds_text(text: str, needle: str) -> bool:
    """Whether `text` holds `needle` word for word (any case and spacing), not inside a longer word:
    `condition_2` is not in `condition_28`, nor `v2.1` in `v2.10`."""
    return bool(str(needle).split()) and phrase(needle, whole=True).search(text) is not None


def source_found(item: dict, shown: list[Chunk], sources: list[Chunk] | None = None) -> bool | None:
    """Whether the retrieved chunks include the item's source: one of its chunks (held-out items), or a
    chunk of its `source` document (a gold item naming one); None for an item without a source, and
    for a question about a key the pile lacks (`absent`: no chunk could hold its answer). Given the
    source chunks whole (`sources`), a source shown focused (data.retrieve.focus) without the answer
    its whole text holds word for word does not count: the reader could not have read it there."""
    if item.get("absent"):
        return None
    keys = item.get("chunks") or []
    if keys:
        whole = {c.key: c for c in sources or []}
        answer = item.get("output") if isinstance(item.get("output"), str) else None
        return any(c.key in keys and not (answer and c.key in whole and holds_text(whole[c.key].text, answer)
                                          and not holds_text(c.text, answer)) for c in shown)
    src = item.get("source")
    if isinstance(src, str) and src.strip():
        src = src.strip().lstrip("./")
        return any(c.path == src or c.path.endswith("/" + src) for c in shown)
    return None


def recall_at_k(items: list[dict], shown: list[list[Chunk]], k: int, sources: list[list[Chunk]] | None = None) -> dict:
    """recall@k of the source chunk over the items that have a source: {k, recall, n} (`sources`: each
    item's source chunks whole, see source_found)."""
    sources = sources or [None] * len(items)
    hits = [h for it, ch, src in zip(items, shown, sources) if (h := source_found(it, ch, src)) is not None]
    return {"k": k, "recall": sum(hits) / len(hits) if hits else None, "n": len(hits)}


def error_sources(items: list[dict], shown: list[list[Chunk]], scores: list[float], said: list,
                  sources: list[list[Chunk]] | None = None) -> dict:
    """Where an open-book system's wrong answers (item score below 1) come from. Of those to items whose
    source is known: `retrieval_missed`, the retriever did not show the source, so no reader could have
    answered; `reader_wrong`, it did and the model still answered wrong (`reader_abstained` of them by
    saying the documents lack the answer). `no_source`: wrong answers to items without a known source."""
    out = {"wrong": 0, "retrieval_missed": 0, "reader_wrong": 0, "reader_abstained": 0, "no_source": 0}
    for item, chunks, score, answer, src in zip(items, shown, scores, said, sources or [None] * len(items)):
        if score >= 1.0:
            continue
        out["wrong"] += 1
        found = source_found(item, chunks, src)
        if found is None:
            out["no_source"] += 1
        elif not found:
            out["retrieval_missed"] += 1
        else:
            out["reader_wrong"] += 1
            out["reader_abstained"] += is_abstention(answer)
    return out


# -- answers copied from the documents (student.retrieval.spans) ---------------------------------------------------
PIECE = re.compile(r"\w+|[^\w\s]")
MAX_PIECES = 4000  # words and signs a span grammar spans in all (k=4 chunks of 600 characters: about 600)


def span_rules(texts: list[str], sep: str = "-", root: str = "root") -> list[tuple[str, str]]:
    """The grammar of an answer copied from the documents shown (`texts`, as the prompt shows them):
    any run of one text's words and punctuation, spaced as there, then optionally the citation [n] of
    that text; or the abstention sentence. As (rule name, body) pairs in the notation GBNF and
    llguidance's Lark share: quoted literals, rule names, ( ), ?, |. Linear in the texts' length:
    piece i of text T continues with piece i + 1 or ends (`s-T-i ::= "piece" (" " s-T-i+1)?`), over
    the first MAX_PIECES pieces of the texts in all. Rule names join their parts with `sep` (GBNF
    takes "-", Lark "_"); the first rule is `root`."""
    lit = lambda s: json.dumps(s, ensure_ascii=False)  # noqa: E731
    rules: list[tuple[str, str]] = []
    heads: list[tuple[str, str]] = []
    room = MAX_PIECES  # the grammar's size, and so the engines' work per token, stays bounded
    for t, text in enumerate(texts):
        pieces = [(m.group(), m.start() > 0 and text[m.start() - 1].isspace()) for m in PIECE.finditer(text)][:room]
        room -= len(pieces)
        starts = []
        rule = lambda i: f"s{sep}{t}{sep}{i}"  # noqa: E731
        for i, (piece, _) in enumerate(pieces):
            if i + 1 < len(pieces):
                gap = " " if pieces[i + 1][1] else ""
                rules.append((rule(i), f"{lit(piece)} ({lit(gap) + ' ' if gap else ''}{rule(i + 1)})?"))
            else:
                rules.append((rule(i), lit(piece)))
            if piece[0].isalnum() or piece[0] == "_":
                starts.append(rule(i))
        if starts:
            heads.append((f"span{sep}{t}", f"({' | '.join(starts)}) ({lit(f' [{t + 1}]')})?"))
    return [(root, " | ".join([name for name, _ in heads] + [lit(ABSTAIN)]))] + heads + rules


def span_gbnf(texts: list[str]) -> str:
    """span_rules as a llama.cpp GBNF grammar."""
    return "\n".join(f"{name} ::= {body}" for name, body in span_rules(texts))


def span_lark(texts: list[str]) -> str:
    """span_rules as an llguidance Lark grammar."""
    return "\n".join(f"{name}: {body}" for name, body in span_rules(texts, "_", "start"))


def shown_texts(chunks: list[Chunk], limit: int) -> list[str]:
    """The chunks' texts as open_messages shows them (cut to `limit`, defused): what a span answer copies."""
    return [defuse(excerpt(c, limit)) for c in chunks]
