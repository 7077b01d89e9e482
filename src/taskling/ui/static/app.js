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
  const opts = body === undefined ? {} : {
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
  const q = el("input", {id: "f-q", type: "search", placeholder: "filter text"});
  const list = el("div", {class: "panel", id: "examples"});
  const detail = el("div", {class: "panel", id: "ex-detail"});
  const load = async () => {
    ex.filters = {status: status.value, decision: decision.value, q: q.value};
    const p = new URLSearchParams({...ex.filters, limit: "200"});
    const r = await api(`/api/examples?${p}`);
    ex.rows = r.examples;
    ex.sel = Math.min(ex.sel, Math.max(0, ex.rows.length - 1));
    say(`${r.total} examples`);
    draw();
  };
  for (const f of [status, decision]) f.addEventListener("change", load);
  q.addEventListener("keydown", e => { if (e.key === "Enter") load(); });
  const draw = () => {
    list.replaceChildren(...ex.rows.map((r, i) => el("div", {
      class: "ex" + (i === ex.sel ? " sel" : ""), "data-id": r.id, onclick: () => { ex.sel = i; draw(); }},
      el("div", {class: "meta"}, el("span", {class: "tag"}, r.status), r.decision ? el("span", {class: `tag ${r.decision}`}, r.decision) : null,
         r.id, r.reason ? ` · ${r.reason}` : ""),
      text(r.input), el("div", {}, el("b", {}, "→ "), text(r.output)))));
    const r = ex.rows[ex.sel];
    detail.replaceChildren(...(r ? exampleDetail(r) : [el("p", {class: "meta"}, "no example")]));
    const s = list.querySelector(".sel");
    if (s) s.scrollIntoView({block: "nearest"});
  };
  ex.redraw = draw;
  main.replaceChildren(el("div", {class: "bar"}, status, decision, q,
    el("span", {class: "keys"}, "keys: j/k next/previous · a accept · r reject · g gold")),
    el("div", {class: "cols"}, list, detail));
  await load();
}

function exampleDetail(r) {
  const out = [el("div", {class: "meta"}, `${r.id} · round ${r.round ?? 0} · arm ${text(r.arm)}`),
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

async function decide(decision, gold) {
  const r = ex.rows[ex.sel];
  if (!r) return;
  try {
    await api("/api/review", {id: r.id, decision, gold: !!gold});
    if (decision) r.decision = decision;
    say(`${r.id}: ${decision || "gold"} saved`);
    ex.sel = Math.min(ex.sel + 1, ex.rows.length - 1);
    ex.redraw();
  } catch (e) { say(e.message, true); }
}

document.addEventListener("keydown", e => {
  if (location.hash !== "#/examples" || e.target.matches("input, select, textarea")) return;
  const keys = {j: () => { ex.sel = Math.min(ex.sel + 1, ex.rows.length - 1); ex.redraw(); },
                k: () => { ex.sel = Math.max(ex.sel - 1, 0); ex.redraw(); },
                a: () => decide("accept"), r: () => decide("reject"), g: () => decide(null, true)};
  if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
});

// ---- routing ------------------------------------------------------------------------------
const PAGES = {"#/pile": pilePage, "#/examples": examplesPage};

async function route() {
  const page = PAGES[location.hash] ? location.hash : "#/pile";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.getAttribute("href") === page);
  try { await PAGES[page](); } catch (e) { say(e.message, true); }
}

window.addEventListener("hashchange", route);
api("/api/state").then(s => {
  document.getElementById("task").textContent = `taskling · ${s.task.name}`;
  say(`${s.pile.documents} documents, ${s.pile.chunks} chunks`);
}).catch(e => say(e.message, true));
route();
