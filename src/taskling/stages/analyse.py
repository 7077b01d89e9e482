"""analyse: where the student still fails, and how the next round's teacher budget is split.

Runs first in every later round k of the loop (after ingest, so new documents
bring their arms), reading what round k-1 left:

  error        the student's answers on the dev set, per arm (topic x label);
               the dev set is held out like eval but is the loop's own: eval
               and gold.jsonl stay untouched by every decision made here
  uncertainty  the round k-1 student on unlabelled pile chunks of each arm:
               normalised entropy of its label distribution (classify), or
               1 - the mean token probability of its own greedy answer
  reliability  how many of the examples the teacher was asked for per arm
               survived curation, over all earlier rounds

The policy (loop.policy, allocate.py) weighs the arms; jobs are dealt out with
unbiased rounding; loop.failure_share of them are failure-seeded: the teacher
writes a new example like a dev failure, grounded in a chunk near it that is
not held out. Everything it weighed is in analysis.json and the manifest, so
the report can say why the budget went where it went.
"""
from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from pathlib import Path

from .. import tasks
from ..core import tasktype
from ..core import stage
from ..core.config import Config
from ..core.manifests import AnalyseManifest, CurateManifest, GenerateManifest
from ..core.progress import bar
from ..core.stage import StageSpec
from ..core.workspace import Context, atomic_write_json, read_jsonl, write_jsonl
from ..data.pile import Chunk, Pile
from ..student import infer
from ..student.trained import load_trained
from ..teacher import allocate
from ..teacher.allocate import arm_label
from ..teacher.budget import limits, per_call

PROBE_WORDS = 80  # an unlabelled chunk is shown to the student as an input of about this many words
SEEDS_PER_FAILURE = 3  # one failure seeds at most this many jobs (each on other chunks near it)


# The loop's stop rules and how later rounds train are not what the analysis weighs: not read.
SPEC = StageSpec("analyse", manifest=AnalyseManifest, needs=("ingest",),
                 earlier=("evaluate", "curate", "generate", "train"),
                 reads=("task", "seed", "budget", "loop.rounds", "loop.policy", "loop.round_examples",
                        "loop.failure_share", "loop.floor", "loop.uncertainty_weight", "loop.probe_chunks",
                        "loop.dev_fraction", "generate.pool_per_label", "generate.max_calls_factor",
                        "generate.examples_per_call", "generate.chunks_per_example"))


def held_units(ctx: Context) -> tuple[str, set[str]]:
    """Round 0's held-out unit kind and units (eval and dev): never a grounding for new examples."""
    first = CurateManifest.read(ctx.stage_dir("curate", 0))
    return (first.split.unit, set(first.split.held_out_units)) if first else ("document", set())


def unit_of(chunk: Chunk, unit: str) -> str:
    return chunk.path if unit == "document" else chunk.key


def dev_errors(ctx: Context, prev: int) -> tuple[list[dict], dict]:
    """Dev items of round `prev` with the student's score and answer, and per-arm items/errors."""
    dev = read_jsonl(ctx.stage_dir("curate", prev) / "dev.jsonl")
    ev = ctx.stage_dir("evaluate", prev)
    scores = json.loads((ev / "scores.json").read_text()).get("dev", {}).get("student", []) \
        if (ev / "scores.json").exists() else []
    said = [r["output"] for r in read_jsonl(ev / "pred-student-dev.jsonl")]
    rows, per_arm = [], defaultdict(lambda: {"items": 0, "errors": 0.0})
    for i, (it, sc) in enumerate(zip(dev, scores)):
        arm = tuple(it.get("arm") or (None, it.get("label")))
        per_arm[arm]["items"] += 1
        per_arm[arm]["errors"] += 1.0 - sc
        rows.append({**it, "score": sc, "said": said[i] if i < len(said) else None, "arm": list(arm)})
    return rows, dict(per_arm)


def reliability(ctx: Context) -> dict:
    """Per arm, over all earlier rounds: examples asked of the teacher and kept by curation."""
    out: dict = defaultdict(lambda: {"tried": 0, "kept": 0})
    for r in range(ctx.round):
        g = GenerateManifest.read(ctx.stage_dir("generate", r))
        c = CurateManifest.read(ctx.stage_dir("curate", r))
        for row in g.jobs_by_arm if g else []:
            out[tuple(row.arm)]["tried"] += row.asked
        for key, n in (c.kept_by_arm if c else {}).items():
            out[tuple(json.loads(key))]["kept"] += n
    return dict(out)


def probe(cfg: Config, ctx: Context, pools: dict, unit: str, held: set[str], prev: int) -> dict:
    """Mean uncertainty of the round `prev` student per arm on up to loop.probe_chunks unlabelled chunks."""
    n = cfg.loop.probe_chunks
    arms = [a for a in sorted(pools, key=str) if pools[a]]
    if n <= 0 or not arms:
        return {}
    rng = random.Random(f"{cfg.seed}:probe:{ctx.round}")
    per_arm = max(1, n // len(arms))
    picks: list[tuple] = []
    for a in arms:
        free = [c for c in pools[a] if unit_of(c, unit) not in held]
        rng.shuffle(free)
        picks += [(a, c) for c in free[:per_arm]]
    rng.shuffle(picks)
    picks = picks[:max(n, len(arms))]
    if not picks:
        return {}
    task = tasktype.get(cfg.task.type)
    system = task.system_prompt(cfg.task)
    infer.set_threads(ctx.threads)
    model, tok = load_trained(ctx.stage_dir("train", prev), cfg.student.model)
    infer.for_inference(model)
    labels = list(cfg.task.labels)
    values: dict = defaultdict(list)
    with bar(ctx.console) as progress:
        pt = progress.add_task(f"analyse: probing the round {prev} student", total=len(picks), info="")
        for b in range(0, len(picks), cfg.evaluate.batch_size):
            part = picks[b:b + cfg.evaluate.batch_size]
            convs = [tasks.student_messages(system, " ".join(c.text.split()[:PROBE_WORDS])) for _, c in part]
            if task.labelled:
                for (a, _), conv in zip(part, convs):
                    lp = infer.label_logprobs(model, tok, infer.chat_ids(tok, conv), labels, cfg.evaluate.batch_size)
                    values[a].append(normalised_entropy(lp))
            else:
                outs = infer.generate(model, tok, convs, max_new_tokens=min(task.max_new_tokens, 64),
                                      batch_size=cfg.evaluate.batch_size)
                for (a, _), conv, o in zip(part, convs, outs):
                    if not o["text"]:
                        values[a].append(1.0)
                        continue
                    lp = infer.label_logprobs(model, tok, infer.chat_ids(tok, conv), [o["text"]])[0]
                    ntok = len(tok(o["text"], add_special_tokens=False)["input_ids"]) + 1
                    values[a].append(1.0 - math.exp(lp / ntok))
            progress.advance(pt, len(part))
    return {a: (sum(v) / len(v), len(v)) for a, v in values.items()}


def self_labels(cfg: Config, ctx: Context, unit: str, held: set[str], prev: int, out: Path) -> dict | None:
    """label.auto.self_training: the round `prev` student labels up to self_training_chunks pile chunks no
    round has used (never a held-out eval or dev unit, never one an example came from, so never an eval
    or gold item) with its label distribution; self_labels.jsonl holds each chunk's label and confidence.
    The next generate takes them as inputs and curate weighs the student as one more source ("self")."""
    from ..curation import auto
    from ..student import scoring

    n = cfg.label.auto.self_training_chunks
    if not (auto.active(cfg) and cfg.label.auto.self_training and n):
        return None
    used = {k for r in range(ctx.round) for ex in read_jsonl(ctx.stage_dir("generate", r) / "examples.jsonl")
            for k in ex.get("chunks", [])}
    rng = random.Random(f"{cfg.seed}:self:{ctx.round}")
    least = tasks.chunk_floor(cfg.task)
    with Pile(ctx.ws.pile_db) as pile:
        free = [c for c in pile.chunks(unique=True) if c.key not in used and unit_of(c, unit) not in held
                and len(c.text.split()) >= least]
    rng.shuffle(free)
    picks = free[:n]
    if not picks:
        return {"chunks": 0, "mean_confidence": None}
    words = auto.pile_input_words(cfg)
    system = tasktype.get(cfg.task.type).system_prompt(cfg.task)
    model, tok = load_trained(ctx.stage_dir("train", prev), cfg.student.model)
    infer.for_inference(model)
    labels = list(cfg.task.labels)
    convs = [tasks.student_messages(system, " ".join(c.text.split()[:words])) for c in picks]
    probs = scoring.label_probs(scoring.label_scores(model, tok, convs, labels, cfg.evaluate.batch_size))
    rows = [{"chunk": c.key, "label": labels[int(p.argmax())], "confidence": round(float(p.max()), 4)}
            for c, p in zip(picks, probs)]
    write_jsonl(out / "self_labels.jsonl", rows)
    return {"chunks": len(rows), "mean_confidence": round(float(probs.max(axis=1).mean()), 4),
            "labels": dict(sorted(Counter(r["label"] for r in rows).items()))}


def normalised_entropy(logprobs: list[float]) -> float:
    """Entropy of the distribution the log-probabilities give (renormalised), over log(k): 0 sure, 1 clueless."""
    top = max(logprobs)
    ps = [math.exp(x - top) for x in logprobs]
    z = sum(ps)
    h = -sum(p / z * math.log(p / z) for p in ps if p > 0)
    return h / math.log(len(ps)) if len(ps) > 1 else 0.0


def seeds_for(failures: list[dict], n: int, pools: dict, pile: Pile, unit: str, held: set[str],
              width: int, rng: random.Random) -> list[dict]:
    """n failure-seeded jobs: each dev failure (cycled, worst arms first) with `width` chunks near it
    (the pile's search for its input, in its arm's pool first) that are not held out."""
    out = []
    if not failures or n <= 0:
        return out
    near: dict[int, list[Chunk]] = {}  # per failure, searched once however often it is seeded
    for i in range(n):
        j = i % len(failures)
        f = failures[j]
        arm = tuple(f["arm"])
        pool = pools.get(arm) or []
        if j not in near:
            in_pool = {c.key for c in pool}
            near[j] = [c for c, _ in pile.search(str(f["input"]), limit=40) if unit_of(c, unit) not in held]
            near[j].sort(key=lambda c: c.key not in in_pool)  # stable: the arm's own chunks first, by relevance
        hits = near[j]
        skip = (i // len(failures)) * width  # a failure seeded twice gets the next chunks near it
        chosen = hits[skip:skip + width]
        if len(chosen) < width:
            spare = [c for c in pool if unit_of(c, unit) not in held and c not in chosen]
            rng.shuffle(spare)
            chosen += spare[:width - len(chosen)]
        if not chosen:
            continue
        out.append({"arm": list(arm), "chunks": [c.key for c in chosen], "like": str(f["input"]),
                    "of": f.get("id")})
    return out


def run(ctx: Context) -> AnalyseManifest:
    cfg = ctx.cfg
    boosts = allocate.boosts_for(ctx.ws.boosts, ctx.round, ctx.run_id)
    # only when there are some, so a workspace without boosts keeps its fingerprints
    inputs = {"boosts": sorted([list(a), f] for a, f in boosts.items())} if boosts else {}

    def body(out: Path) -> dict:
        prev = ctx.round - 1
        task = tasktype.get(cfg.task.type)
        unit, held = held_units(ctx)
        dev, errors = dev_errors(ctx, prev)
        kept = reliability(ctx)
        with Pile(ctx.ws.pile_db) as pile:
            pools = {a: cs for a, cs in task.pools(cfg.task, pile, cfg.generate.pool_per_label).items() if cs}
            names = {t["id"]: t["label"] for t in pile.topics()}
            unc = probe(cfg, ctx, pools, unit, held, prev)
            feedback = {a: {**errors.get(a, {}), **kept.get(a, {}),
                            **({"uncertainty": unc[a][0]} if a in unc else {})} for a in pools}
            policy = allocate.get_policy(cfg.loop.policy, "loop.policy", seed=cfg.seed * 1_000 + ctx.round, floor=cfg.loop.floor,
                                         uncertainty_weight=cfg.loop.uncertainty_weight)
            sizes = {a: len(cs) for a, cs in pools.items()}
            weights = policy.weights(sizes, feedback)
            if boosts:  # a person's "more budget for this arm"; shares still sum to one
                weights = {a: w * boosts.get(a, 1.0) for a, w in weights.items()}
                total = sum(weights.values()) or 1.0
                weights = {a: w / total for a, w in weights.items()}
            k = per_call(cfg)
            n_jobs = math.ceil(limits(ctx)["examples"] * cfg.generate.max_calls_factor / k)
            failures = [d for d in dev if d["score"] < 1.0]
            failures.sort(key=lambda d: (-weights.get(tuple(d["arm"]), 0.0), str(d.get("id"))))
            rng = random.Random(f"{cfg.seed}:analyse:{ctx.round}")
            n_seeded = min(round(cfg.loop.failure_share * n_jobs), SEEDS_PER_FAILURE * len(failures))
            width = k if task.one_input_per_chunk else cfg.generate.chunks_per_example
            seeded = seeds_for(failures, n_seeded, pools, pile, unit, held, width, rng)
        selfs = self_labels(cfg, ctx, unit, held, prev, out)
        counts = allocate.split_random(n_jobs - len(seeded), weights, rng)
        seeded_per_arm: dict = defaultdict(int)
        for s in seeded:
            seeded_per_arm[tuple(s["arm"])] += 1
        before = AnalyseManifest.read(ctx.stage_dir("analyse", prev)) if prev > 0 else None
        first = GenerateManifest.read(ctx.stage_dir("generate", 0))
        known = ({tuple(a.arm) for a in before.arms} if before else
                 {tuple(a) for a in (first.pool_arms if first else [])})
        post = allocate.posteriors(sizes, feedback)
        rows = []
        for a in sorted(pools, key=str):
            e, kp = errors.get(a, {}), kept.get(a, {})
            ea, eb = post[a]["err"]
            rows.append({"arm": list(a), "name": arm_label(a, names),
                         "topic": names.get(a[0], f"topic {a[0]}") if a[0] is not None else None, "label": a[1],
                         "chunks": sizes[a], "dev_items": e.get("items", 0), "dev_errors": round(e.get("errors", 0.0), 3),
                         "error_mean": round(ea / (ea + eb), 4),
                         "uncertainty": round(unc[a][0], 4) if a in unc else None, "probed": unc[a][1] if a in unc else 0,
                         "asked": kp.get("tried", 0), "kept": kp.get("kept", 0),
                         "keep_rate": round((1 + kp.get("kept", 0)) / (2 + kp.get("tried", 0)), 4),
                         "weight": round(weights.get(a, 0.0), 4), "jobs": counts.get(a, 0),
                         "seeded_jobs": seeded_per_arm.get(a, 0), "new": bool(known) and a not in known,
                         "boost": boosts.get(a)})
        for r in rows:
            r["jobs_total"] = r["jobs"] + r["seeded_jobs"]
        n_err = sum(1 for d in dev if d["score"] < 1.0)
        why = explain(rows)
        analysis = {"round": ctx.round, "from_round": prev, "policy": cfg.loop.policy, "arms": rows,
                    "allocation": {"policy": cfg.loop.policy, "jobs": n_jobs, "policy_jobs": n_jobs - len(seeded),
                                   "seeded_jobs": len(seeded), "seeded": seeded},
                    "dev": {"items": len(dev), "errors": n_err,
                            "error_rate": round(n_err / len(dev), 4) if dev else None},
                    "uncertainty": {"probed": sum(v[1] for v in unc.values()),
                                    "mean": round(sum(v[0] * v[1] for v in unc.values()) /
                                                  max(1, sum(v[1] for v in unc.values())), 4) if unc else None},
                    "new_arms": [r["name"] for r in rows if r["new"]], "why": why, "self_training": selfs,
                    "failures": [{k: d.get(k) for k in ("id", "input", "output", "said", "score", "arm")}
                                 for d in dev if d["score"] < 1.0][:100]}
        atomic_write_json(out / "analysis.json", analysis)
        ctx.console.print(f"analyse (round {ctx.round}): dev {n_err}/{len(dev)} wrong; {len(pools)} arms; "
                          f"{n_jobs} jobs by {cfg.loop.policy}, {len(seeded)} of them seeded by failures"
                          + (f"; new arms: {', '.join(analysis['new_arms'][:5])}" if analysis["new_arms"] else "")
                          + (f"; {why[0]}" if why else ""))
        return {"counts": {"arms": len(pools), "jobs": n_jobs, "seeded_jobs": len(seeded), "dev": len(dev),
                           "dev_errors": n_err, "probed": analysis["uncertainty"]["probed"],
                           "new_arms": len(analysis["new_arms"])},
                **{k: analysis[k] for k in ("arms", "allocation", "dev", "uncertainty", "new_arms", "why",
                                            "self_training")},
                "outputs": ["analysis.json"] + (["self_labels.jsonl"] if selfs and selfs["chunks"] else [])}

    return stage.run(ctx, SPEC, body, inputs=inputs)


def explain(rows: list[dict], top: int = 3) -> list[str]:
    """The arms that gained most against an equal-per-task-share split, in words."""
    total_jobs = sum(r["jobs_total"] for r in rows) or 1
    out = []
    for r in sorted(rows, key=lambda r: -r["jobs_total"])[:top]:
        bits = [f"dev {r['dev_errors']:g}/{r['dev_items']} wrong" if r["dev_items"] else "no dev items yet",
                f"posterior error {r['error_mean']:.2f}"]
        if r["uncertainty"] is not None:
            bits.append(f"uncertainty {r['uncertainty']:.2f}")
        if r["asked"]:
            bits.append(f"teacher kept {r['kept']}/{r['asked']}")
        if r["new"]:
            bits.append("new in the pile")
        if r.get("boost"):
            bits.append(f"boosted x{r['boost']:g} by a person")
        out.append(f"{r['name']}: {r['jobs_total']} of {total_jobs} planned jobs ({', '.join(bits)})")
    return out
