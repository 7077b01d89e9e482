"""The `taskling` commands that look inside a workspace without changing it: `status` (where it
stands), `try` (one input answered), `pile` (stats, topics, search, show) and `log` (the teacher's
calls)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .api import Workspace
from .cli_common import HELP, ConfigOpt, JsonOpt, emit, guarded, make_ctx
from .core.errors import TasklingError

def status(config: ConfigOpt = Path("taskling.yaml"), run: Annotated[Optional[str], typer.Option(
        "--run", help="Run id (default: the task name).")] = None, as_json: JsonOpt = False) -> None:
    """Where the workspace stands: each stage done, stale (and why) or not run, the pile per format and
    label pool, the last figures, and the next command to run.

    Example: taskling status; taskling status --json
    """
    def go():
        from .status import lines

        st = Workspace(make_ctx(config, None, run, lock=False)).status()
        if as_json:
            return emit(st, True)
        for line in lines(st):
            Console().print(line, markup=False, highlight=False, soft_wrap=True)
    guarded(go)


def try_(text: Annotated[str, typer.Argument(help="The input, as a user would send it.")],
         model: Annotated[str, typer.Option("--model", help="student (the newest trained round), base or "
                                            "teacher.")] = "student",
         config: ConfigOpt = Path("taskling.yaml"), as_json: JsonOpt = False) -> None:
    """Answer one input in the terminal, as evaluate asks it: the answer and, for classify, every
    label's probability.

    Example: taskling try "How do I hash a file in node?" --model base
    """
    def go():
        ans = Workspace(make_ctx(config, None, None, lock=False)).ask(text, model)
        if as_json:
            return emit(ans, True)
        out = Console()
        out.print(f"{ans['system']}: {ans['parsed'] if ans['parsed'] is not None else ans['output']}", markup=False,
                  highlight=False, soft_wrap=True)
        if ans.get("probabilities"):
            out.print("  " + ", ".join(f"{k} {v:.2f}" for k, v in ans["probabilities"].items())
                      + (f"  (most likely: {ans['constrained']})" if ans["constrained"] != ans["parsed"] else ""),
                      markup=False, highlight=False, soft_wrap=True)
        out.print(f"  {ans['seconds']:.2f} s" + (f", round {ans['round']}" if "round" in ans else "")
                  + (", from the call log" if ans.get("cached") else ""), style="dim", highlight=False)
    guarded(go)


pile_app = typer.Typer(help="Look inside the pile of ingested documents.\n\nExample: taskling pile stats",
                       no_args_is_help=True, context_settings=HELP)


def log(key: Annotated[Optional[str], typer.Argument(help="Show one call in full: its key or a prefix of it.")] = None,
        config: ConfigOpt = Path("taskling.yaml"),
        limit: Annotated[int, typer.Option(help="How many calls to list.")] = 20,
        purpose: Annotated[Optional[str], typer.Option(help="Only calls made for: generate, evaluate, judge.")] = None,
        model: Annotated[Optional[str], typer.Option(help="Only calls to this model.")] = None,
        grep: Annotated[Optional[str], typer.Option(help="Only calls whose prompt or reply contains this text.")] = None,
        failed: Annotated[bool, typer.Option("--failed", help="Only calls that failed after all retries.")] = False,
        errors: Annotated[bool, typer.Option("--errors", help="List failed attempts (429s, timeouts, bad "
                                             "replies...) with the raw response kept for inspection.")] = False,
        since: Annotated[Optional[str], typer.Option(help="Only calls at or after this UTC time, e.g. 2026-11-23T10:00.")] = None,
        as_json: JsonOpt = False) -> None:
    """List, filter and show teacher and judge calls from the call log (.taskling/calls.db), with totals.

    Example: taskling log --purpose generate --grep invoice --limit 5; taskling log 3fa2c1
    """
    def go():
        from rich.text import Text

        ws = Workspace(make_ctx(config, None, None, lock=False))
        if key:
            call = ws.call(key)
            if as_json:
                return emit(call, True)
            con = Console()
            con.print(f"[bold]{call['key']}[/] {call['created_at']} {call['purpose']} {call['backend']}:"
                      f"{call['model']}  {call['prompt_tokens']}+{call['completion_tokens']} tokens, "
                      f"{call['latency_s']:.2f} s, cost {call['cost']:.6f}, {call['attempts']} attempt(s)"
                      + (f"\n[red]failed: {call['error']}[/]" if call["error"] else ""))
            for m in call["request"]["messages"]:  # the role styled, the text as it is (no markup in it)
                con.print(Text.assemble((f"{m['role']}:", "bold"), " ", str(m["content"])), highlight=False)
            con.print(Text.assemble(("reply:", "bold"), " ", str(call["response"])), highlight=False)
            for a in call["failed_attempts"]:
                con.print(f"[yellow]attempt failed ({a['kind']}, HTTP {a['status']}): {a['detail']}[/]")
            return None
        if errors:
            found = ws.call_errors(limit)
            if as_json:
                return emit(found, True)
            t = Table(title="failed attempts by kind: " + (", ".join(
                f"{k} {n}" for k, n in found["by_kind"].items()) or "none"))
            for c in ("when", "key", "kind", "status", "detail", "body"):
                t.add_column(c)
            for r in found["errors"]:
                t.add_row(r["created_at"], r["key"][:12], r["kind"], str(r["status"] or ""),
                          Text(r["detail"][:60]), Text(r["body"][:40].replace("\n", " ")))
            Console().print(t)
            return None
        found = ws.calls(limit, purpose, model, grep, failed, since)
        if as_json:
            return emit(found, True)
        rows, totals = found["calls"], found["totals"]
        t = Table(title=f"{totals['calls']} calls, {totals['prompt_tokens']} prompt + {totals['completion_tokens']} "
                        f"completion tokens, {totals['seconds']} s, cost {totals['cost']:.4f}, "
                        f"{totals['failed']} failed, {totals['retries']} retries")
        for c in ("when", "key", "purpose", "model", "tokens", "s", "reply"):
            t.add_column(c)
        for r in rows:
            reply = Text(r["error"][:50], style="red") if r["error"] else Text(r["response"][:50].replace("\n", " "))
            t.add_row(r["created_at"], r["key"][:12], r["purpose"], r["model"],
                      f"{r['prompt_tokens']}+{r['completion_tokens']}", f"{r['latency_s']:.2f}", reply)
        Console().print(t)
    guarded(go)


@pile_app.command("stats")
def pile_stats(config: ConfigOpt = Path("taskling.yaml"), as_json: JsonOpt = False) -> None:
    """Documents, chunks, tokens, duplicates and topics in the pile, by format.

    Example: taskling pile stats --json
    """
    def go():
        st = Workspace(make_ctx(config, None, None, lock=False)).pile_stats()
        if as_json:
            return emit(st, True)
        t = Table(title=f"{st['documents']} documents, {st['chunks']} chunks, {st['tokens']} tokens, "
                        f"{st['topics']} topics")
        for c in ("format", "documents", "chunks"):
            t.add_column(c, justify="left" if c == "format" else "right")
        for fmt, row in st["by_format"].items():
            t.add_row(fmt, str(row["documents"]), str(row["chunks"]))
        out = Console()
        out.print(t)
        out.print(f"duplicates: {st['duplicate_documents']} documents, {st['duplicate_chunks']} chunks; "
                  f"embedded chunks: {st['embedded_chunks']}; gone: {st['gone']}")
    guarded(go)


@pile_app.command("topics")
def pile_topics(config: ConfigOpt = Path("taskling.yaml"), as_json: JsonOpt = False,
                examples: Annotated[int, typer.Option(help="Example chunks to show per topic.")] = 1) -> None:
    """The topics the pile's chunks cluster into: label, size, distinctive terms, examples.

    Example: taskling pile topics --examples 2
    """
    def go():
        topics = Workspace(make_ctx(config, None, None, lock=False)).topics(examples)
        if as_json:
            return emit({"topics": topics}, True)
        if not topics:
            raise TasklingError("the pile has no topics yet; run 'taskling ingest' (with ingest.embed: true)")
        t = Table(title=f"{len(topics)} topics")
        for c in ("id", "label", "size", "example"):
            t.add_column(c, justify="right" if c in ("id", "size") else "left")
        for tp in topics:
            ex = tp["example_chunks"][0] if tp["example_chunks"] else None
            t.add_row(str(tp["id"]), tp["label"], str(tp["size"]),
                      f"{ex['path']} {ex['locator']}: {ex['text'][:80]!r}" if ex else "")
        Console().print(t)
    guarded(go)


@pile_app.command("search")
def pile_search(query: Annotated[str, typer.Argument(help="Words to look for, or a question.")],
                limit: Annotated[int, typer.Option(help="How many chunks.")] = 10,
                mode: Annotated[str, typer.Option(help="fts (words), embed (meaning) or both.")] = "both",
                config: ConfigOpt = Path("taskling.yaml"), as_json: JsonOpt = False) -> None:
    """Search the chunks by words (FTS5, bm25) and by meaning (embeddings), with provenance.

    Example: taskling pile search "how do I read a JSON field" --mode embed
    """
    def go():
        from rich.text import Text

        if mode not in ("fts", "embed", "both"):
            raise TasklingError(f"--mode {mode}: use fts, embed or both")
        hits = Workspace(make_ctx(config, None, None, lock=False)).search(query, limit, mode)
        if as_json:
            return emit({"query": query, "mode": mode, "hits": hits}, True)
        out = Console()
        for h in hits:  # the chunk's text as a person reads it, not as a Python string
            out.print(Text.assemble((h["path"], "bold"), f" {h['locator']} ", (f"({h['chunk']}, {h['by']} {h['score']})",
                                                                            "dim")), highlight=False, soft_wrap=True)
            out.print(Text("  " + " ".join(h["text"][:200].split())), highlight=False, soft_wrap=True)
    guarded(go)


@pile_app.command("show")
def pile_show(chunk: Annotated[str, typer.Argument(help="A chunk key, as printed by search.")],
              config: ConfigOpt = Path("taskling.yaml"), as_json: JsonOpt = False) -> None:
    """Show one chunk with its provenance.

    Example: taskling pile show 3f2a9c0d1e2b4a5c:12
    """
    def go():
        from rich.text import Text

        c = Workspace(make_ctx(config, None, None, lock=False)).chunk(chunk)
        if c is None:
            raise TasklingError(f"chunk '{chunk}' is not in the pile; find keys with 'taskling pile search'")
        if as_json:
            return emit(c, True)
        out = Console()
        out.print(Text.assemble((f"{c['path']}", "bold"), f"  {c['locator']}"), highlight=False)
        out.print(f"chunk {c['chunk']} · {c['format']} · characters {c['start_char']}-{c['end_char']} of the "
                  f"document · sha256 {c['sha256'][:16]}", style="dim", highlight=False, markup=False)
        out.print()
        out.print(c["text"], markup=False, highlight=False)
    guarded(go)


