"""evaluate: the tuned student, its base and the teacher on the held-out set
and on gold.jsonl, every metric of the task type with 95% bootstrap intervals.

Systems (evaluate.models):
  student       the tuned student with its prompt; for a labelled task (classify) its answer is the
                label it finds most likely, as `taskling serve`, predict and try answer (so
                student-constrained repeats it there)
  base          the untuned student with the same prompt (zero-shot)
  base-fewshot  the untuned student with the task's examples as earlier turns
  teacher       the teacher through its backend, few-shot, as it would be used without taskling
and, for an open-book student (student.retrieval, core/openbook.py), student-open and base-open: the
same models asked with the chunks the one retriever finds put in front (the layout the student was
trained on), their trailing citations resolved to chunks; beside them recall@k of each item's source
chunk, how often each system says the documents do not contain the answer (abstention
precision and recall where items expect it), and where each open-book system's wrong answers come
from (the source chunk not retrieved, or retrieved and answered wrong);
and, with evaluate.constrained, student-constrained and base-constrained:
for classify the answer is the label the model finds most likely
(infer.choose), so it is always a label; for extract decoding is limited to
JSON valid against the task's schema (infer.schema_constraint, llguidance).

Student and base run through the same transformers code path (infer.py).
Predictions per system and set are saved as they finish (with latency and
tokens), so a re-run after a kill redoes only the unfinished ones. Every
wrong student answer goes to failures.jsonl with its source and topic; error
rates per topic and label are what the next round's allocation reads.
"""
from __future__ import annotations

import shutil
import statistics
import time
from collections import Counter
from pathlib import Path

from .. import tasks
from ..core import tasktype
from ..core import stage
from ..core.config import Config, Price
from ..core.manifests import CurateManifest, EvaluateManifest
from ..core.stage import StageSpec
from ..core.workspace import Context, atomic_write_json, read_jsonl, sha256_file, write_jsonl
from ..curation.gold import load_gold
from ..data.pile import Pile
from ..data.retrieve import Retriever, open_book, retriever_settings
from ..serving.systems import conversations, open_conversations, predict_local, predict_teacher, with_citations
from ..student import infer
from ..student.models import dir_size_mb, load_causal_lm, model_size_mb, resolve_gguf, resolve_hf
from ..student.trained import load_trained, trained_dir
from ..tasks import metrics, openbook
from ..teacher.backends import Logged, open_for
from ..teacher.calls import CallLog

SPEC = StageSpec("evaluate", reads=("task", "student", "teacher", "evaluate", "seed"), manifest=EvaluateManifest,
                 needs=("curate", "train"))


def systems(cfg: Config, opened: bool = False) -> list[str]:
    """The systems to score; an open-book student (`opened`) adds student-open and base-open."""
    kind = tasktype.get(cfg.task.type)
    out = list(cfg.evaluate.models)
    if opened:
        out += [f"{w}-open" for w in ("student", "base") if w in cfg.evaluate.models]
    if kind.decoding(cfg.task).constrained and cfg.evaluate.constrained:
        out += [f"{w}-constrained" for w in ("student", "base") if w in cfg.evaluate.models]
    if kind.retrieval_check and cfg.evaluate.teacher_retrieval and "teacher" in cfg.evaluate.models:
        out.append("teacher-retrieval")
    return out


def retrieval_conversations(cfg: Config, ctx: Context, task, items: list[dict]) -> tuple[list, list]:
    """The teacher's few-shot conversations with the pile chunks nearest each input put in front
    (retrieve.py), and those chunks (what its answers are checked against)."""
    from ..data.embed import Embedder
    from ..data.retrieve import retrieve

    emb = Embedder(cfg.ingest.embed_model, ctx.threads, max_tokens=cfg.ingest.embed_max_tokens) \
        if cfg.ingest.embed else None
    with Pile(ctx.ws.pile_db) as pile:
        found = [retrieve(pile, str(it["input"]), cfg.evaluate.teacher_retrieval, emb) for it in items]
    convs = [task.teacher_eval_messages(cfg.task, it["input"]) for it in items]
    return [tasks.with_context(c, ch) for c, ch in zip(convs, found)], found


def checked(cfg: Config, task, rows: list[dict], found: list[list]) -> None:
    """Each retrieval answer checked against its chunks, in place: extract values not in them are
    set to null; `supported` and the chunks it saw are recorded."""
    for row, chunks in zip(rows, found):
        parsed = task.parse_output(cfg.task, row["output"])
        fixed, info = task.check_retrieved(cfg.task, parsed, chunks)
        if info["dropped"]:
            row["raw_output"], row["output"] = row["output"], tasks.output_text(fixed)
        row.update(supported=info["supported"], dropped=info["dropped"], retrieved=[c.key for c in chunks])


def score_set(task, cfg: Config, items: list[dict], rows: list[dict], sources: list[str | None], seed: int) -> dict:
    preds = [task.parse_output(cfg.task, r["output"]) for r in rows]
    expected = [it["output"] for it in items]
    summ = task.summarize(cfg.task, expected, preds, sources, seed=seed)
    scores = task.item_scores(cfg.task, expected, preds)
    head = task.metric
    lo, hi = summ["cis"].get(head, [None, None])
    lat = sorted(r.get("seconds", 0.0) * 1000 for r in rows)
    secs = sum(r.get("seconds", 0.0) for r in rows)
    n = len(rows)
    per_label: dict[str, list[float]] = {}
    if task.labelled:
        for it, s in zip(items, scores):
            per_label.setdefault(it["output"], []).append(s)
    out = {"metric": summ.get(head), "ci_low": lo, "ci_high": hi, "n": n,
           "metrics": {k: v for k, v in summ.items() if isinstance(v, (int, float)) and k != "n"},
           "cis": summ["cis"], "unparsed": sum(p is None for p in preds),
           "items_per_s": round(n / max(secs, 1e-9), 2) if n else None,
           "latency_ms": {"mean": round(statistics.fmean(lat), 1), "p50": round(lat[n // 2], 1),
                          "p95": round(lat[min(n - 1, int(0.95 * n))], 1)} if n else None,
           "tokens": {"prompt": round(statistics.fmean(r.get("prompt_tokens", 0) for r in rows), 1),
                      "completion": round(statistics.fmean(r.get("completion_tokens", 0) for r in rows), 1)}
           if n else None,
           "cpu_seconds_per_1k": round(1000 * secs / n, 1) if n else None,
           "per_label": {k: round(sum(v) / len(v), 4) for k, v in sorted(per_label.items())},
           "_preds": preds, "_scores": scores}
    for k in ("per_class", "confusion", "per_field"):
        if summ.get(k):
            out[k] = summ[k]
    return out


def rounded(x, nd: int = 4):
    """Floats to `nd` places all through a JSON-like structure."""
    if isinstance(x, float):
        return round(x, nd)
    if isinstance(x, dict):
        return {k: rounded(v, nd) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v, nd) for v in x]
    return x


def error_rates(failed: list[dict], items: list[dict], key: str) -> list[dict]:
    n = Counter(str(it.get(key)) for it in items)
    bad = Counter(str(f.get(key)) for f in failed)
    rows = [{key: k, "n": n[k], "errors": bad[k], "error_rate": round(bad[k] / n[k], 4)} for k in n]
    return sorted(rows, key=lambda r: (-r["error_rate"], -r["n"], r[key]))


def topics_of(ctx: Context, items: list[dict]) -> list[tuple[int | None, str | None]]:
    """Each item's topic (id, name): the one its example was generated for, else (gold) the topic of
    the chunk the pile's search ranks first for its input."""
    if not ctx.ws.pile_db.exists():
        return [(None, None)] * len(items)
    with Pile(ctx.ws.pile_db) as pile:
        names = {t["id"]: t["label"] for t in pile.topics()}
        out = []
        for it in items:
            tid = (it.get("arm") or [None])[0]
            if tid is None:
                hits = pile.search(str(it["input"]), limit=1)
                tid = hits[0][0].topic_id if hits else None
            out.append((tid, names.get(tid, f"topic {tid}") if tid is not None else None))
    return out


def chunks_of(ctx: Context, items: list[dict]) -> list[list]:
    """The chunks each item cites (none for gold items)."""
    if not ctx.ws.pile_db.exists():
        return [[] for _ in items]
    with Pile(ctx.ws.pile_db) as pile:
        return [[c for k in it.get("chunks", []) if (c := pile.chunk(k)) is not None] for it in items]


def judged(cfg: Config, ctx: Context, sets: dict, chunks: dict, results: dict, out: Path) -> dict | None:
    """answer/generate with evaluate.judge: a 1-5 judge score for every system's answers and the
    student's (and base's) win rate against the teacher, into each system's metrics."""
    if cfg.evaluate.judge is None or not tasktype.get(cfg.task.type).judged:
        return None
    from ..teacher import judge as judging

    jcfg = cfg.teacher if cfg.evaluate.judge == "teacher" else cfg.evaluate.judge
    log = CallLog(ctx.ws.calls_db)
    backend = Logged(open_for(ctx.executor, jcfg, ctx.threads), log, purpose="judge",
                     price=cfg.budget.prices.get(jcfg.model, Price()))
    try:
        for s, items in sets.items():
            if s == "dev":  # the loop's probe set: error rates are enough there
                continue
            by_id = {id(it): ch for it, ch in zip(items, chunks[s])}
            cited = lambda it: by_id.get(id(it), [])  # noqa: E731
            said = {w: [r["output"] for r in read_jsonl(out / f"pred-{w}-{s}.jsonl")] for w in results[s]}
            for w, r in results[s].items():
                scores = [x for x in judging.rate(backend, cfg.task, items, said[w], cited) if x is not None]
                if scores:
                    r["metrics"]["judge_score"] = sum(scores) / len(scores)
                    r["cis"]["judge_score"] = list(metrics.mean_ci(scores, seed=cfg.seed))
                if w != "teacher" and "teacher" in said:
                    wins = [x for x in judging.compare(backend, cfg.task, items, said[w], said["teacher"], cited)
                            if x is not None]
                    if wins:
                        r["metrics"]["win_rate_vs_teacher"] = sum(wins) / len(wins)
                        r["cis"]["win_rate_vs_teacher"] = list(metrics.mean_ci(wins, seed=cfg.seed))
        return {"model": jcfg.model, "new_calls": backend.stats["calls"], "cached_calls": backend.stats["cached"]}
    finally:
        backend.close()
        log.close()


def cites_source(items: list[dict], rows: list[dict]) -> float | None:
    """Among the open-book answers (not abstentions) to items whose source chunks are known, the share
    whose citation names one of them."""
    hits = [any(c["chunk"] in it["chunks"] for c in row.get("citations") or [])
            for it, row in zip(items, rows) if it.get("chunks") and not openbook.is_abstention(row["output"])]
    return sum(hits) / len(hits) if hits else None


def open_book_errors(sets: dict, retrieved: dict, results: dict, said: dict, chunks: dict) -> dict:
    """Per set and open-book system, where its wrong answers come from: the source chunk not retrieved,
    or retrieved and answered wrong (tasks.openbook.error_sources): which of retriever and reader to
    improve. The closed-book student's failures (failures.jsonl, the loop's analysis) are apart."""
    return {s: {w: openbook.error_sources(sets[s], shown, r["_scores"], said[s][w], chunks.get(s))
                for w, r in results[s].items() if w.endswith("-open")}
            for s, shown in retrieved.items()}


LABEL_MODEL = "label-model"


def prediction_rows(items: list[dict], res: list[dict]) -> list[dict]:
    """What pred-<system>-<set>.jsonl keeps of each answer."""
    return [{"id": it.get("id"), "output": r["text"], "seconds": r["latency_s"], "prompt_tokens": r["prompt_tokens"],
             "completion_tokens": r["completion_tokens"], "cost": r.get("cost", 0.0)}
            for it, r in zip(items, res)]


def label_model_system(ctx: Context, sets: dict, runs: dict, names: list[str], out: Path) -> None:
    """classify with a label model: its own answers on gold (curate's label_model.jsonl, fitted without
    gold) become a system beside the student: it is a classifier a user could deploy too."""
    path = ctx.stage_dir("curate") / "label_model.jsonl"
    if "gold" not in sets or not path.exists():
        return
    said = {r.get("id"): r for r in read_jsonl(path)}
    cur = CurateManifest.read(ctx.stage_dir("curate"))
    each = (cur.label_model.seconds_per_item if cur and cur.label_model else None) or 0.0
    rows = [{"id": it.get("id"), "output": (said.get(it.get("id")) or {}).get("output", ""), "seconds": each,
             "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0} for it in sets["gold"]]
    write_jsonl(out / f"pred-{LABEL_MODEL}-gold.jsonl", rows)
    runs["gold"].append(LABEL_MODEL)
    names.append(LABEL_MODEL)


def answer_all(ctx: Context, task, sets: dict, runs: dict, out: Path, book, retrieved: dict) -> None:
    """Every system's answers on every set it runs on, saved as each finishes (pred-<system>-<set>.jsonl);
    the open-book systems read what `book` (a data.retrieve.Retriever, or None) found for each set's
    items (`retrieved`, once for every system and for recall@k)."""
    cfg = ctx.cfg
    for model_name in ("student", "base", "teacher"):
        todo = [(w, s) for s in sets for w in runs[s] if w.split("-")[0] == model_name
                if not (out / f"pred-{w}-{s}.jsonl").exists()]
        if not todo:
            continue
        if model_name == "teacher":
            log = CallLog(ctx.ws.calls_db)
            backend = Logged(open_for(ctx.executor, cfg.teacher, ctx.threads), log, purpose="evaluate",
                             price=cfg.budget.prices.get(cfg.teacher.model, Price()))
            runner = lambda w, convs, shown=None: predict_teacher(backend, convs, task)  # noqa: E731
        else:
            model, tok = (load_trained(ctx.stage_dir("train"), cfg.student.model) if model_name == "student" else
                          load_causal_lm(resolve_hf(cfg.student.model)))
            infer.for_inference(model)
            runner = lambda w, convs, shown=None: predict_local(model, tok, w, convs, task, cfg, shown)  # noqa: E731
        try:
            for w, s in todo:
                ctx.console.print(f"evaluate: {w} on {s} ({len(sets[s])} items)")
                found = shown = None
                if w == "teacher-retrieval":
                    convs, found = retrieval_conversations(cfg, ctx, task, sets[s])
                elif w.endswith("-open"):
                    convs, shown = open_conversations(cfg, task, sets[s], book, retrieved[s])
                else:
                    convs = conversations(cfg, task, w, sets[s])
                res = runner(w, convs, shown)
                rows = prediction_rows(sets[s], res)
                if found is not None:  # the answer checked against (extract: limited to) the retrieved text
                    checked(cfg, task, rows, found)
                if shown is not None or (book is not None and w == "student"):  # citations off the answer, resolved
                    with_citations(rows, shown or [[] for _ in rows])
                write_jsonl(out / f"pred-{w}-{s}.jsonl", rows)
        finally:
            if model_name == "teacher":
                backend.close()
                log.close()


def run(ctx: Context) -> EvaluateManifest:
    cfg = ctx.cfg
    gold_path = ctx.ws.gold
    opened = open_book(cfg, ctx.ws.pile_db)  # once: with mode auto it reads the pile's size

    def body(out: Path) -> dict:
        infer.set_threads(ctx.threads)
        task = tasktype.get(cfg.task.type)
        sets = {"eval": read_jsonl(ctx.stage_dir("curate") / "eval.jsonl")[: cfg.evaluate.max_items],
                "gold": load_gold(cfg, gold_path)[: cfg.evaluate.max_items]}
        # The loop's dev set: only the student is run on it, for a later round's analysis (see probes_dev).
        sets["dev"] = read_jsonl(ctx.stage_dir("curate") / "dev.jsonl")[: cfg.evaluate.max_items] if probes_dev(cfg) else []
        sets = {k: v for k, v in sets.items() if v}
        t_start = time.perf_counter()
        trained = trained_dir(ctx.stage_dir("train"))
        base_mb = model_size_mb(cfg.student.model)
        sizes = {"student": dir_size_mb(trained / "model.safetensors") if trained.name == "model" else
                 base_mb + dir_size_mb(trained / "adapter_model.safetensors"), "base": base_mb}
        sizes["teacher"] = dir_size_mb(resolve_gguf(cfg.teacher.model)) if cfg.teacher.backend == "llamacpp" else None
        book = Retriever.open(cfg, ctx.ws.pile_db, ctx.threads) if opened else None
        names = systems(cfg, opened)
        runs = {s: [w for w in names if s != "dev" or w == "student"] for s in sets}
        if ctx.round > 0:  # eval and gold never change across rounds: base and teacher answers carry over
            prev = ctx.stage_dir("evaluate", ctx.round - 1)
            for s, ws in runs.items():
                for w in ws:
                    if not w.startswith("student") and (prev / f"pred-{w}-{s}.jsonl").exists() \
                            and not (out / f"pred-{w}-{s}.jsonl").exists():
                        shutil.copyfile(prev / f"pred-{w}-{s}.jsonl", out / f"pred-{w}-{s}.jsonl")
        retrieved = {s: [book.find(str(it["input"])) for it in items] for s, items in sets.items()
                     if s != "dev"} if book is not None else {}
        answer_all(ctx, task, sets, runs, out, book, retrieved)
        label_model_system(ctx, sets, runs, names, out)
        chunks = {s: chunks_of(ctx, items) for s, items in sets.items()}
        retrieval = None
        if book is not None:
            retrieval = {s: openbook.recall_at_k(sets[s], shown, book.k, chunks[s]) for s, shown in retrieved.items()}
            book.close()
        teacher_price = cfg.budget.prices.get(cfg.teacher.model)
        results: dict = {s: {} for s in sets}
        topics = {s: topics_of(ctx, items) for s, items in sets.items()}
        for s, items in sets.items():
            sources = [("\n".join(c.text for c in ch) or None) for ch in chunks[s]]
            for w in runs[s]:
                rows = read_jsonl(out / f"pred-{w}-{s}.jsonl")
                r = score_set(task, cfg, items, rows, sources, cfg.seed)
                r["size_mb"] = sizes.get(w.split("-")[0])
                if opened:  # "not in the documents" is an answer of its own, and the citation names a chunk
                    r["metrics"] |= openbook.abstention_metrics([tasks.output_text(it["output"]) for it in items],
                                                                [x["output"] for x in rows])
                    if w.endswith("-open"):
                        r["metrics"]["cites_source"] = cites_source(items, rows)
                r["cost_per_1k"] = (round(1000 * sum(x.get("cost", 0.0) for x in rows) / len(rows), 4)
                                    if w == "teacher" and teacher_price else None)
                results[s][w] = r
        judge_info = judged(cfg, ctx, sets, chunks, results, out)
        answered = {s: {w: [r["output"] for r in read_jsonl(out / f"pred-{w}-{s}.jsonl")] for w in runs[s]}
                    for s in sets}  # each system's answers, read once for the error sources and the failures
        for s, per in open_book_errors(sets, retrieved, results, answered, chunks).items():
            retrieval[s]["errors"] = per
        failures, rates = [], {"topic": {}, "label": {}}
        for s, items in sets.items():
            said = answered[s]
            student = results[s].get("student")
            if not student:
                continue
            rows = [{"topic": topics[s][i][1], "label": str(it["output"]) if task.labelled else None}
                    for i, it in enumerate(items)]
            wrong = []
            for i, it in enumerate(items):
                if student["_scores"][i] < 1.0:
                    wrong.append(rows[i])
                    failures.append({"set": s, "id": it.get("id"), "input": it["input"],
                                     "expected": tasks.output_text(it["output"]), **{w: said[w][i] for w in said},
                                     "score": round(student["_scores"][i], 4), **rows[i],
                                     "arm": [topics[s][i][0], rows[i]["label"]],  # what a UI boost names
                                     "source": (it.get("provenance") or [{}])[0].get("path", "gold.jsonl")})
            rates["topic"][s] = error_rates(wrong, rows, "topic")
            if task.labelled:
                rates["label"][s] = error_rates(wrong, rows, "label")
        write_jsonl(out / "failures.jsonl", failures)
        # Per-item scores (same items in every round): what the loop's paired comparisons of rounds read.
        atomic_write_json(out / "scores.json", {s: {w: [round(x, 4) for x in r["_scores"]] for w, r in per.items()}
                                                for s, per in results.items()})
        clean = rounded({s: {w: {k: v for k, v in r.items() if not k.startswith("_")} for w, r in per.items()}
                         for s, per in results.items()})
        constrained = {s: {w: {"free": per[w]["metric"], "constrained": per[f"{w}-constrained"]["metric"],
                               "metric": task.metric}
                           for w in ("student", "base") if f"{w}-constrained" in per and w in per}
                       for s, per in clean.items()}
        atomic_write_json(out / "metrics.json", {"metric": task.metric, "results": clean, "error_rates": rates,
                                                 "constrained": constrained, "retrieval": rounded(retrieval)})
        for s, per in clean.items():
            line = ", ".join(f"{w} {r['metric']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" for w, r in per.items()
                             if r["metric"] is not None)
            ctx.console.print(f"evaluate ({s}, n={len(sets[s])}, {task.metric}): {line}")
            if retrieval and s in retrieval and retrieval[s]["recall"] is not None:
                ctx.console.print(f"evaluate ({s}): recall@{retrieval[s]['k']} of the source chunk "
                                  f"{retrieval[s]['recall']:.3f} (n={retrieval[s]['n']})")
        return {"counts": {s: len(v) for s, v in sets.items()} | {"failures": len(failures)},
                "metric": task.metric, "systems": names, "results": clean, "error_rates": rates,
                "constrained": constrained, "judge": judge_info, "evaluate_seconds": round(time.perf_counter() - t_start, 1),
                "retrieval": rounded(retrieval),
                "outputs": ["metrics.json", "failures.jsonl", "scores.json"]}

    settings = {"dev": probes_dev(cfg)} | ({"retrieval": retriever_settings(cfg)} if opened else {})
    return stage.run(ctx, SPEC, body, settings=settings,
                     inputs={"gold": sha256_file(gold_path) if gold_path.exists() else None})


def probes_dev(cfg: Config) -> bool:
    """Whether the student answers the dev set too: when the loop has a round after this one to plan (in a
    single round the dev set only picked the training step)."""
    return cfg.loop.rounds > 1
