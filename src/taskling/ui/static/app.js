// taskling ui: a small single-page app. Every piece of data is put in the page with
// textContent (never innerHTML), so a document that contains HTML or script shows as text.
"use strict";

const TOKEN = document.querySelector('meta[name="taskling-token"]').content;
const main = document.getElementById("main");
const statusEl = document.getElementById("status");

function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") n.className = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined) continue;
    n.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return n;
}

async function api(path, body) {
  // the token goes with every call: a client on another machine (ui --allow-remote) needs it for reads too
  const opts = body === undefined ? {headers: {"X-Taskling-Token": TOKEN}} : {
    method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", "X-Taskling-Token": TOKEN}};
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || (typeof data.detail === "string" ? data.detail : res.statusText));
  return data;
}

function say(text, bad) {
  statusEl.textContent = text;
  statusEl.className = bad ? "err" : "";
}

function text(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

// ---- pile ---------------------------------------------------------------------------------
async function pilePage() {
  const left = el("div", {class: "panel"});
  const right = el("div", {class: "panel", id: "detail"}, el("p", {class: "meta"}, "Search the pile, or pick a topic."));
  const q = el("input", {id: "q", type: "search", placeholder: "search the pile", size: "40"});
  const mode = el("select", {id: "mode"}, el("option", {value: "fts"}, "words (FTS5)"),
                  el("option", {value: "semantic"}, "meaning (embeddings)"));
  const hits = el("div", {id: "hits"});
  const go = async () => {
    hits.replaceChildren(el("p", {class: "meta"}, "searching..."));
    try {
      const r = await api(`/api/search?q=${encodeURIComponent(q.value)}&mode=${mode.value}&limit=30`);
      hits.replaceChildren(...(r.hits.length ? r.hits.map(hitRow) : [el("p", {class: "meta"}, "no match")]));
    } catch (e) { hits.replaceChildren(el("p", {class: "err"}, e.message)); }
  };
  q.addEventListener("keydown", e => { if (e.key === "Enter") go(); });
  const hitRow = h => el("div", {class: "hit", onclick: () => showChunk(h.key, right)},
    el("div", {class: "meta"}, `${h.path} · ${h.locator || ""} · topic ${h.topic ?? "-"}`), h.text);
  left.append(el("div", {class: "bar"}, q, mode, el("button", {id: "go", onclick: go}, "Search")), hits);
  const topics = el("div", {class: "treemap", id: "topics"});
  main.replaceChildren(el("h3", {}, "Topics"), topics, el("h3", {}, "Chunks"), el("div", {class: "cols"}, left, right));
  const t = await api("/api/topics");
  const total = t.topics.reduce((s, x) => s + x.size, 0) || 1;
  topics.replaceChildren(...t.topics.map(x => {
    const tile = el("div", {class: "tile", title: x.terms.join(", "),
      onclick: () => { q.value = x.terms.slice(0, 3).join(" "); go(); }}, `${x.label} (${x.size})`);
    tile.style.flexBasis = `${Math.max(80, 600 * x.size / total)}px`;  // CSSOM: allowed by the CSP
    return tile;
  }));
}

async function showChunk(key, into) {
  const c = await api(`/api/chunk/${encodeURIComponent(key)}`);
  const d = c.document;
  const mark = el("mark", {id: "chunk"}, d.chunk || c.text);
  into.replaceChildren(el("div", {class: "meta"}, `${c.path} · ${c.locator || ""} · ${c.format}`),
    el("div", {class: "doc"}, d.cut_before ? "…" : "", d.before, mark, d.after, d.cut_after ? "…" : ""));
  mark.scrollIntoView({block: "center"});
}

// ---- examples and review ------------------------------------------------------------------
const ex = {rows: [], sel: 0, filters: {status: "", decision: "", q: ""}};

async function examplesPage() {
  const status = el("select", {id: "f-status"}, el("option", {value: ""}, "kept and dropped"),
                    el("option", {value: "kept"}, "kept"), el("option", {value: "dropped"}, "dropped"));
  const decision = el("select", {id: "f-decision"}, el("option", {value: ""}, "any decision"),
                      el("option", {value: "none"}, "undecided"), el("option", {value: "accept"}, "accepted"),
                      el("option", {value: "reject"}, "rejected"), el("option", {value: "fix"}, "fixed"));
  const round = el("select", {id: "f-round"}, el("option", {value: ""}, "any round"));
  const arm = el("select", {id: "f-arm"}, el("option", {value: ""}, "any arm (topic / label)"));
  const reason = el("select", {id: "f-reason"}, el("option", {value: ""}, "any verdict"));
  const grounding = el("input", {id: "f-grounding", type: "number", min: "0", max: "1", step: "0.05",
                                 placeholder: "min grounding", title: "lowest grounding score (0-1)"});
  const judge = el("input", {id: "f-judge", type: "number", min: "0", max: "1", step: "0.05",
                             placeholder: "min judge", title: "lowest judge score (0-1; examples the judge saw)"});
  const q = el("input", {id: "f-q", type: "search", placeholder: "filter text"});
  q.value = sessionStorage.getItem("q") || "";  // set by the failures page's "find similar examples"
  sessionStorage.removeItem("q");
  const list = el("div", {class: "panel", id: "examples"});
  const detail = el("div", {class: "panel", id: "ex-detail"});
  const load = async () => {
    ex.filters = {status: status.value, decision: decision.value, q: q.value, round: round.value, arm: arm.value,
                  reason: reason.value};
    if (grounding.value !== "") ex.filters.min_grounding = grounding.value;
    if (judge.value !== "") ex.filters.min_judge = judge.value;
    const p = new URLSearchParams({...ex.filters, limit: "200"});
    const r = await api(`/api/examples?${p}`);
    ex.rows = r.examples;
    list.dataset.query = p.toString();  // what the list shows now (tests and the benchmark wait on it)
    fillFacet(round, r.facets.round.map(([k, n]) => [k, `round ${k} (${n})`]));
    fillFacet(arm, r.facets.arm.map(([k, name, n]) => [k, `${name} (${n})`]));
    fillFacet(reason, r.facets.reason.map(([k, n]) => [k, `${k} (${n})`]));
    ex.sel = Math.min(ex.sel, Math.max(0, ex.rows.length - 1));
    say(`${r.total} examples`);
    draw();
  };
  for (const f of [status, decision, round, arm, reason, grounding, judge]) f.addEventListener("change", load);
  q.addEventListener("keydown", e => { if (e.key === "Enter") load(); });
  const draw = () => {
    list.replaceChildren(...ex.rows.map((r, i) => el("div", {
      class: "ex" + (i === ex.sel ? " sel" : ""), "data-id": r.id, onclick: () => { ex.sel = i; draw(); }},
      el("div", {class: "meta"}, el("span", {class: "tag"}, r.status), r.decision ? el("span", {class: `tag ${r.decision}`}, r.decision) : null,
         r.id, r.reason ? ` · ${r.reason}` : ""),
      text(r.input), el("div", {}, el("b", {}, "→ "), text(r.output)))));
    const r = ex.rows[ex.sel];
    detail.replaceChildren(...(r ? (ex.editing === r.id ? exampleEditor(r) : exampleDetail(r))
                                 : [el("p", {class: "meta"}, "no example")]));
    const s = list.querySelector(".sel");
    if (s) s.scrollIntoView({block: "nearest"});
  };
  ex.redraw = draw;
  main.replaceChildren(el("div", {class: "bar"}, status, decision, round, arm, reason, grounding, judge, q,
    el("span", {class: "keys"}, "keys: j/k next/previous · a accept · r reject · e edit · g gold")),
    el("div", {class: "cols"}, list, detail));
  await load();
}

function fillFacet(select, options) {
  const keep = select.value;
  select.replaceChildren(select.options[0], ...options.map(([v, label]) => el("option", {value: v}, label)));
  select.value = keep;
}

function exampleDetail(r) {
  const scores = [r.grounding !== null && r.grounding !== undefined ? `grounding ${fmt(r.grounding, 2)}` : null,
                  r.judge !== null && r.judge !== undefined ? `judge ${fmt(r.judge, 2)}` : null].filter(Boolean);
  const out = [el("div", {class: "meta"}, `${r.id} · round ${r.round ?? 0} · ${r.arm_name} · ${r.status}`,
                  r.reason ? ` (${r.reason})` : "", scores.length ? ` · ${scores.join(" · ")}` : ""),
               el("h4", {}, "Input"), el("div", {class: "doc"}, text(r.input)),
               el("h4", {}, "Output"), el("div", {class: "doc"}, text(r.output))];
  for (const p of r.provenance || []) {
    out.push(el("div", {class: "meta"}, `source: ${p.path} · ${p.locator || ""}`));
  }
  for (const s of r.spans || []) {
    out.push(el("div", {class: "doc"}, el("mark", {}, s.text || "")));
  }
  return out;
}

function exampleEditor(r) {
  // a fix: the corrected input and output are saved as the review's "fix" (the next curate uses them)
  const input = el("textarea", {id: "edit-input", rows: "6"});
  input.value = text(r.input);
  const output = el("textarea", {id: "edit-output", rows: "4"});
  output.value = typeof r.output === "string" ? r.output : JSON.stringify(r.output, null, 2);
  const save = async () => {
    const fix = {input: input.value !== text(r.input) ? input.value : undefined,
                 output: output.value !== (typeof r.output === "string" ? r.output : JSON.stringify(r.output, null, 2))
                   ? output.value : undefined};
    if (fix.input === undefined && fix.output === undefined) { say("nothing changed", true); return; }
    ex.editing = null;
    await decide("fix", false, fix);
  };
  const cancel = () => { ex.editing = null; ex.redraw(); };
  input.addEventListener("keydown", e => { if (e.key === "Escape") cancel(); });
  output.addEventListener("keydown", e => { if (e.key === "Escape") cancel(); if (e.key === "Enter" && e.ctrlKey) save(); });
  setTimeout(() => input.focus(), 0);
  return [el("div", {class: "meta"}, `editing ${r.id} · Ctrl+Enter saves · Esc cancels`),
          el("h4", {}, "Input"), input, el("h4", {}, "Output"), output,
          el("div", {class: "bar"}, el("button", {id: "edit-save", onclick: save}, "Save fix"),
             el("button", {onclick: cancel}, "Cancel"))];
}

async function decide(decision, gold, fix) {
  const r = ex.rows[ex.sel];
  if (!r) return;
  try {
    await api("/api/review", {id: r.id, decision, gold: !!gold, ...(fix || {})});
    if (decision) r.decision = decision;
    if (fix) { if (fix.input !== undefined) r.input = fix.input; if (fix.output !== undefined) r.output = fix.output; }
    say(`${r.id}: ${decision || "gold"} saved`);
    ex.sel = Math.min(ex.sel + 1, ex.rows.length - 1);
    ex.redraw();
  } catch (e) { say(e.message, true); }
}

document.addEventListener("keydown", e => {
  if (location.hash !== "#/examples" || e.target.matches("input, select, textarea")) return;
  const keys = {j: () => { ex.sel = Math.min(ex.sel + 1, ex.rows.length - 1); ex.redraw(); },
                k: () => { ex.sel = Math.max(ex.sel - 1, 0); ex.redraw(); },
                a: () => decide("accept"), r: () => decide("reject"), g: () => decide(null, true),
                e: () => { if (ex.rows[ex.sel]) { ex.editing = ex.rows[ex.sel].id; ex.redraw(); } }};
  if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
});

// ---- runs ---------------------------------------------------------------------------------
const fmt = (v, nd = 3) => (typeof v === "number" && isFinite(v)) ? v.toFixed(nd) : "–";

function table(head, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, head.map(h => el("th", {}, h)))),
            el("tbody", {}, rows.map(r => el("tr", {}, r.map(c => el("td", {}, c))))));
}

function lossChart(series) {
  // an SVG polyline per series, built with DOM calls (no markup strings)
  const NS = "http://www.w3.org/2000/svg", W = 520, H = 160, P = 28;
  const pts = series.flatMap(s => s.points);
  if (!pts.length) return el("p", {class: "meta"}, "no loss recorded");
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = x => P + (W - 2 * P) * (x - x0) / ((x1 - x0) || 1), sy = y => H - P - (H - 2 * P) * (y - y0) / ((y1 - y0) || 1);
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("width", W);
  svg.setAttribute("class", "chart");
  for (const s of series) {
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", s.points.map(p => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", s.colour);
    line.setAttribute("stroke-width", "2");
    svg.append(line);
  }
  for (const [y, label] of [[y0, fmt(y0)], [y1, fmt(y1)]]) {
    const t = document.createElementNS(NS, "text");
    t.setAttribute("x", 2);
    t.setAttribute("y", sy(y) + 4);
    t.setAttribute("font-size", "10");
    t.textContent = label;
    svg.append(t);
  }
  return svg;
}

async function runsPage() {
  const {runs} = await api("/api/runs");
  if (!runs.length) { main.replaceChildren(el("p", {class: "meta"}, "No run has a report yet: run 'taskling run'.")); return; }
  const pick = el("select", {id: "run"}, runs.map(r => el("option", {value: r.id}, r.id)));
  const body = el("div", {id: "run-body"});
  const show = async () => {
    const r = await api(`/api/run/${encodeURIComponent(pick.value)}`);
    const parts = [el("p", {}, r.summary || "")];
    const res = r.results || {};
    for (const [set, per] of Object.entries(res)) {
      parts.push(el("h4", {}, `${set}`), table(["system", r.task?.metric || "metric", "95% CI", "n"],
        Object.entries(per).map(([w, x]) => [w, fmt(x.metric), `${fmt(x.ci_low)} – ${fmt(x.ci_high)}`, String(x.n ?? "–")])));
    }
    const rounds = (r.loop || {}).rounds || [];
    if (rounds.length) {
      const withCI = m => m ? `${fmt(m.metric)} [${fmt(m.ci_low, 2)}, ${fmt(m.ci_high, 2)}]` : "–";
      parts.push(el("h4", {}, "Rounds"), table(["round", "examples", "train size", "student on eval (95% CI)",
                                                "student on gold (95% CI)", "teacher cost"],
        rounds.map(x => [String(x.round), String(x.examples ?? "–"), String(x.train_size ?? "–"),
                         withCI(((x.results || {}).eval || {}).student), withCI(((x.results || {}).gold || {}).student),
                         fmt(x.cost, 4)])));
    }
    if ((r.funnel || []).length) {
      parts.push(el("h4", {}, "Curation funnel"), table(["step", "count"], r.funnel.map(f => [f.step, String(f.count)])));
    }
    const ls = r.label_sources;
    if (ls && (ls.sources || []).length) {
      const labels = [...new Set(ls.sources.flatMap(x => Object.keys(x.per_label || {})))].sort();
      const ci = x => Array.isArray(x.estimated_ci) ? `${fmt(x.estimated_ci[0], 2)} – ${fmt(x.estimated_ci[1], 2)}` : "–";
      parts.push(el("h4", {}, `Label sources (${ls.model}: ${ls.relabelled} relabelled, ${ls.dropped_unsure} dropped as unsure)`),
        table(["source", "coverage", "estimated accuracy", "95% CI", "measured on gold", "gold n", "agreement", "conflict",
               ...labels.map(l => `est. ${l}`)],
              ls.sources.map(x => [x.source, fmt(x.coverage, 2), fmt(x.estimated), ci(x), fmt(x.measured), String(x.measured_n ?? "–"),
                                   fmt(x.agreement, 2), fmt(x.conflict, 2), ...labels.map(l => fmt((x.per_label || {})[l], 2))])));
      const onGold = Object.entries(ls.on_gold || {});
      if (onGold.length) parts.push(el("p", {class: "meta"}, "on gold after training: ",
        onGold.map(([w, v]) => `${w} ${fmt(v)}`).join(" · "),
        ls.label_model_on_gold && ls.label_model_on_gold.accuracy !== null ? ` · the label model itself ${fmt(ls.label_model_on_gold.accuracy)}` : ""));
    }
    const t = r.training || {};
    parts.push(el("h4", {}, "Training loss"), lossChart([{points: t.loss || [], colour: "#2f6fdb"},
                                                         {points: t.eval_loss || [], colour: "#c0392b"}]));
    const spend = (r.generation || {}).spend_by_arm || [];
    if (spend.length) {
      parts.push(el("h4", {}, "Teacher spend per arm (this round)"),
        table(["arm", "jobs", "examples", "kept", "tokens", "cost"],
              spend.map(a => [a.name, String(a.jobs), String(a.examples), String(a.kept), String(a.tokens ?? "–"), fmt(a.cost, 4)])));
    }
    for (const x of rounds.filter(x => (x.arms || []).length > 0 && rounds.length > 1)) {
      // folded: a long loop has rounds x arms rows; each table is built when it is opened
      const fold = el("details", {class: "round-spend"}, el("summary", {},
        `Round ${x.round}: spend per arm (${x.arms.length} arms, ${x.arms.reduce((n, a) => n + (a.tokens || 0), 0)} tokens)`));
      fold.addEventListener("toggle", () => {
        if (!fold.open || fold.querySelector("table")) return;
        fold.append(table(["arm", "jobs", "seeded", "examples", "kept", "tokens", "cost"],
          x.arms.map(a => [a.name, String(a.jobs), String(a.seeded_jobs ?? 0), String(a.examples), String(a.kept),
                           String(a.tokens ?? "–"), fmt(a.cost, 4)])));
      });
      parts.push(fold);
    }
    body.replaceChildren(...parts);
  };
  pick.addEventListener("change", show);
  main.replaceChildren(el("div", {class: "bar"}, "Run ", pick), body);
  await show();
}

// ---- failures -----------------------------------------------------------------------------
async function failuresPage() {
  const {runs} = await api("/api/runs");
  const fails = [];
  for (const run of runs) {
    const r = await api(`/api/run/${encodeURIComponent(run.id)}`);
    for (const f of r.failures || []) fails.push({...f, run: run.id});
  }
  if (!fails.length) { main.replaceChildren(el("p", {class: "meta"}, "No failures recorded (or no evaluation yet).")); return; }
  const groups = {};
  for (const f of fails) (groups[`${f.topic ?? "no topic"} · expected ${text(f.expected)}`] ||= []).push(f);
  const out = [];
  for (const [g, fs] of Object.entries(groups).sort((a, b) => b[1].length - a[1].length)) {
    out.push(el("h4", {}, `${g} (${fs.length})`));
    for (const f of fs) {
      out.push(el("div", {class: "ex failure"},
        el("div", {class: "meta"}, `${f.run} · ${f.set} · ${f.id} · ${f.source || ""}`),
        text(f.input),
        el("div", {}, el("b", {}, "expected "), text(f.expected), el("b", {}, "  student "), text(f.student)),
        el("div", {class: "bar"},
          el("button", {onclick: () => { location.hash = "#/examples"; sessionStorage.setItem("q", String(f.input).slice(0, 40)); }},
             "find similar examples to review"),
          f.arm ? el("button", {class: "boost", onclick: e => boostArm(f, e.target)}, "more budget for this arm") : null)));
    }
  }
  main.replaceChildren(...out);
}

async function boostArm(f, button) {
  try {
    const r = await api("/api/boost", {arm: f.arm, run: f.run, note: `failure ${f.id}`});
    button.disabled = true;
    button.textContent = `boosted ×${r.boost.factor} in round ${r.applies_to_round}`;
    say(`${r.arm_name}: more budget in round ${r.applies_to_round} of ${f.run}`);
  } catch (e) { say(e.message, true); }
}

// ---- playground ---------------------------------------------------------------------------
async function playPage() {
  const {systems, task} = await api("/api/play");
  const input = el("textarea", {id: "play-input", rows: "5", placeholder: "type an input, as a user of the task would"});
  const cols = {};
  const grid = el("div", {class: "play"}, Object.entries(systems).map(([who, info]) => {
    cols[who] = el("div", {class: "answer", id: `play-${who}`},
                   el("p", {class: "meta"}, info.ready ? "" : info.why));
    const title = (who === "student" ? `student (round ${info.round ?? "–"})` : `${who} · ${info.model}`) +
                  (task.open_book && who !== "teacher" ? " · open book" : "");
    return el("div", {class: "panel"}, el("h4", {}, title), cols[who]);
  }));
  const ask = async () => {
    // one system at a time: the server answers them in turn, each column fills as its answer comes
    for (const [who, info] of Object.entries(systems)) {
      if (!info.ready) continue;
      cols[who].replaceChildren(el("p", {class: "meta"}, "thinking…"));
    }
    for (const [who, info] of Object.entries(systems)) {
      if (!info.ready) continue;
      try {
        const r = await api("/api/play", {input: input.value, system: who});
        cols[who].replaceChildren(...[  // (replaceChildren would show a null as the text "null")
          el("div", {class: "doc out"}, r.output),
          r.parsed !== null && r.parsed !== r.output ? el("div", {class: "meta"}, "answer: ", el("b", {}, r.parsed)) : null,
          r.open_book ? citationList(r) : null,
          el("div", {class: "meta latency"}, `${fmt(r.seconds, 2)} s`, r.completion_tokens ? ` · ${r.completion_tokens} tokens` : "",
             r.cached ? " · from the call cache" : "")].filter(Boolean));
      } catch (e) { cols[who].replaceChildren(el("p", {class: "err"}, e.message)); }
    }
  };
  input.addEventListener("keydown", e => { if (e.key === "Enter" && e.ctrlKey) ask(); });
  main.replaceChildren(el("div", {class: "bar"}, input, el("button", {id: "play-go", onclick: ask}, "Ask all three"),
                          el("span", {class: "keys"}, "Ctrl+Enter asks")), grid);
}

// An open-book answer's sources: each passage its [n] names (document, locator, and the span of it the answer
// rests on), or, without a citation, the passages it read.
function citationList(r) {
  const where = d => `[${d.n}] ${d.path} · ${d.locator}`;
  if (!r.citations.length)
    return el("div", {class: "citations meta"}, r.documents.length ? `no citation; it read ${r.documents.map(where).join(", ")}`
                                                                    : "no citation; no passage matched the input");
  return el("ol", {class: "citations"}, r.citations.map(c => el("li", {class: "citation"},
    el("span", {class: "meta"}, where(c)),
    c.span ? el("blockquote", {class: "doc span"}, c.span.text)
           : el("span", {class: "meta"}, " (the answer is not in this passage)"))));
}

// ---- task: the task file, saved with the command line's checks; runs started from the page ----
// The fields (task, labels, examples, sources) and the whole file beside them: either is saved only when
// the file then loads as the command line loads it, and both show the file as saved.
function rowsEditor(id, rows, makeRow, addText) {
  const body = el("div", {id, class: "rows"});
  const push = values => {
    const r = makeRow(values);
    r.append(el("button", {class: "remove", title: "remove this row", onclick: () => r.remove()}, "×"));
    body.append(r);
  };
  for (const v of rows) push(v);
  return [body, el("button", {id: `${id}-add`, class: "add", onclick: () => push()}, addText)];
}

function taskForm(f, types, onSaved) {
  const line = (id, label, value, attrs) => el("label", {class: "field"}, el("span", {}, label),
    Object.assign(el("input", {id, size: "40", spellcheck: "false", ...(attrs || {})}), {value: value || ""}));
  const desc = Object.assign(el("textarea", {id: "t-description", rows: "3"}), {value: f.description || ""});
  const [labels, addLabel] = rowsEditor("t-labels", f.labels, (v = ["", ""]) => el("div", {class: "row label-row"},
    Object.assign(el("input", {class: "label-name", placeholder: "label"}), {value: v[0]}),
    Object.assign(el("input", {class: "label-desc", placeholder: "what belongs there"}), {value: v[1]})),
    "Add a label");
  const [examples, addExample] = rowsEditor("t-examples", f.examples, (v = {input: "", output: ""}) =>
    el("div", {class: "row example-row"},
       Object.assign(el("input", {class: "ex-input", placeholder: "an input, as a user would write it"}),
                     {value: v.input}),
       Object.assign(el("input", {class: "ex-output", placeholder: "its output", list: "label-names"}),
                     {value: v.output})), "Add an example");
  const sources = Object.assign(el("textarea", {id: "t-sources", rows: "3", spellcheck: "false",
                                                placeholder: "docs/**/*"}), {value: f.sources.join("\n")});
  const note = el("p", {id: "form-note", class: "meta"}, "Saved into the file beside, its comments kept");
  const values = () => ({
    name: document.getElementById("t-name").value, type: document.getElementById("t-type").value,
    description: desc.value, input_noun: document.getElementById("t-noun").value,
    labels: [...labels.querySelectorAll(".label-row")].map(r => [r.querySelector(".label-name").value,
                                                                r.querySelector(".label-desc").value]),
    examples: [...examples.querySelectorAll(".example-row")].map(r => ({input: r.querySelector(".ex-input").value,
                                                                       output: r.querySelector(".ex-output").value})),
    sources: sources.value.split("\n")});
  const save = async () => {
    note.className = "meta";
    note.textContent = "saving…";
    try {
      const r = await api("/api/task/form", {form: values()});
      await onSaved(`saved ${r.saved} (${r.task}, ${r.type})`);
    } catch (e) { note.className = "err"; note.textContent = e.message; }
  };
  return el("section", {class: "panel task-form"},
    el("datalist", {id: "task-types"}, types.map(t => el("option", {value: t}))),
    el("datalist", {id: "label-names"}, f.labels.map(([name]) => el("option", {value: name}))),
    el("h3", {}, "Task"), line("t-name", "name", f.name), line("t-type", "type", f.type, {list: "task-types"}),
    el("label", {class: "field"}, el("span", {}, "description"), desc),
    line("t-noun", "one input is a", f.input_noun),
    el("h3", {}, "Labels ", el("span", {class: "meta"}, "classify: each label and what belongs there")), labels, addLabel,
    el("h3", {}, "Examples ", el("span", {class: "meta"}, "a few inputs you wrote, with their output")), examples,
    addExample,
    el("h3", {}, "Sources ", el("span", {class: "meta"}, "one file, folder or glob a line, relative to the task file")),
    sources, el("div", {class: "bar"}, el("button", {id: "form-save", onclick: save}, "Save the task"), note));
}

async function taskPage(saved) {
  const t = await api("/api/task");
  const area = el("textarea", {id: "task-yaml", rows: "34", cols: "100", spellcheck: "false"});
  area.value = t.yaml;
  const note = el("p", {id: "task-note", class: "meta"}, `${t.path}: saved only when it passes the checks the command line makes`);
  const reload = message => taskPage(message);  // both sides show the file as saved
  const save = async () => {
    note.className = "meta";
    note.textContent = "saving…";
    try {
      const r = await api("/api/task", {yaml: area.value});
      await reload(`saved ${r.saved} (${r.task}, ${r.type})`);
    } catch (e) { note.className = "err"; note.textContent = e.message; }
  };
  const job = el("pre", {id: "job"});
  const showJob = j => {
    job.textContent = j.stage ? `taskling ${j.stage}: ${j.running ? "running" : `finished (exit ${j.exit_code})`}\n`
      + j.log.join("\n") : "no run started from this page yet";
    return j;
  };
  const poll = async () => {
    const j = showJob(await api("/api/job"));
    if (j.running && location.hash === "#/task") setTimeout(poll, 700);
  };
  const buttons = t.runnable.map(s => el("button", {"data-stage": s, onclick: async () => {
    try { showJob(await api("/api/job", {stage: s})); poll(); } catch (e) { say(e.message, true); }
  }}, s === "run" ? "Run all" : s));
  const form = t.form ? taskForm(t.form, t.types, reload)
    : el("section", {class: "panel task-form"}, el("p", {class: "err"}, `${t.path} has no task: section to show as fields; fix the file`));
  if (saved) for (const n of [note, form.querySelector("#form-note")].filter(Boolean)) n.textContent = saved;
  main.replaceChildren(el("div", {class: "bar"}, el("span", {class: "meta"}, "run: "), ...buttons),
                       el("div", {class: "task-cols"}, form,
                          el("section", {class: "panel"}, el("h3", {}, `The whole file: ${t.path}`),
                             el("div", {class: "bar"}, el("button", {id: "task-save", onclick: save}, "Save the file"), note),
                             area)), job);
  await poll();
}

// ---- routing ------------------------------------------------------------------------------
const PAGES = {"#/task": taskPage, "#/pile": pilePage, "#/examples": examplesPage, "#/runs": runsPage, "#/failures": failuresPage,
               "#/play": playPage};

async function route() {
  const page = PAGES[location.hash] ? location.hash : "#/pile";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.getAttribute("href") === page);
  try { await PAGES[page](); } catch (e) { say(e.message, true); }
}

// ---- live progress of a running stage (server-sent events) ----------------------------------
function clock(s) {
  if (s === null || s === undefined) return "–";
  const m = Math.floor(s / 60), r = Math.round(s % 60);
  return `${m}:${String(r).padStart(2, "0")}`;
}
const progressEl = document.getElementById("progress");
new EventSource(`/api/progress?token=${encodeURIComponent(TOKEN)}`).onmessage = e => {
  const p = JSON.parse(e.data);
  const t = (p.tasks || []).filter(x => x.total && x.done < x.total).pop() || (p.tasks || []).slice(-1)[0];
  if (!t) { progressEl.textContent = ""; return; }
  progressEl.textContent = p.running
    ? `${t.name} ${Math.round(t.done)}/${Math.round(t.total)} · ETA ${clock(t.eta_s)} · ${t.info}`
    : `last: ${t.name} ${Math.round(t.done)}/${Math.round(t.total)} in ${clock(t.elapsed_s)}`;
};

window.addEventListener("hashchange", route);
api("/api/state").then(s => {
  document.getElementById("task").textContent = `taskling · ${s.task.name}`;
  say(`${s.pile.documents} documents, ${s.pile.chunks} chunks`);
}).catch(e => say(e.message, true));
route();
