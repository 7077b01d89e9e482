"""Keyword rules mined per label, a file a person can read and edit, and promoting them into
taskling.yaml's label.rules (where they become hand-written rules like any other).

    taskling rules show; taskling rules promote [FILE] [--only mined-sport]

`mine` finds each label's discriminative words by the log-odds ratio with an informative Dirichlet
prior (Monroe, Colaresi & Quinn 2008): counts are per text (a word counts once in a text, times the
text's weight) over each label's texts (its name and description, the task's examples of it, the
inputs the teacher wrote for it and the pile chunks its search pool holds) against every other
label's, with the pile's own word counts as the prior. A word belongs to the label where its
z-score is highest and is kept when that z-score is at least `min_z`; each label's rule is its
`per_label` best words, voting that label when one occurs in an input (rules.py). The label
model weighs these rules like the others, and their estimated accuracy goes into the file and
the report.

`write` puts the rules in a YAML file shaped like label.rules, with their estimated accuracy as
comments; `promote` copies the rules (as they are in the file, edits included) into the label:
section of taskling.yaml, keeping the rest of the file as it was, and checks the result loads.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import yaml

from ..core.errors import TasklingError

PREFIX = "mined-"
WORD = re.compile(r"[^\W\d_][\w'-]*[^\W_]|[^\W\d_]{2,}")
# Function words that say nothing about a topic (English; a word in every label's texts scores low anyway).
STOP = set("""a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each either else ever every few for from further get gets
had has have having he her here hers him his how i if in into is it its itself just let like made make many may me
might more most much must my no nor not now of off often on once one only or other our out over own per same she
should so some such than that the their them then there these they this those through to too under until up upon us
use used uses using very was we were what when where whether which while who whom whose why will with within without
would yes yet you your new way want know need one two three first last next get got take put see say says said""".split())


def tokens(text: str) -> set[str]:
    """The distinct candidate words of a text: lowercase, at least 3 letters, no stop word or number."""
    return {w for w in (m.group(0).lower().strip("'-") for m in WORD.finditer(text))
            if len(w) >= 3 and w not in STOP and not w.isdigit()}


def document_counts(texts: Iterable[str]) -> Counter:
    """In how many of `texts` each candidate word occurs (the pile's background for `mine`, and the
    vocabulary the teacher's typical words are checked against): the pile tokenised once."""
    bg: Counter = Counter()
    for t in texts:
        bg.update(tokens(t))
    return bg


def mine(labels: list[str], texts: dict[str, list[tuple[str, float]]], background: Sequence[str] | Counter,
         per_label: int = 12, min_z: float = 2.0, min_count: float = 2.0, prior_mass: float = 200.0,
         min_share: float = 0.5) -> dict[str, list[dict]]:
    """Per label, its best words as [{word, z, count}], best first (see the module docstring); a word
    must also have at least `min_share` of its labelled occurrences in that label's texts. `background`:
    the pile's texts, or their `document_counts`."""
    bg = background if isinstance(background, Counter) else document_counts(background)
    counts = {lab: Counter() for lab in labels}
    for lab in labels:
        for text, w in texts.get(lab, []):
            for tok in tokens(text):
                counts[lab][tok] += w
    n = {lab: sum(c.values()) for lab, c in counts.items()}
    total = sum(n.values())
    vocab = set().union(*counts.values())
    bg_total = sum(bg[w] for w in vocab) or 1
    alpha = {w: prior_mass * (bg[w] + 1) / (bg_total + len(vocab)) for w in vocab}
    a0 = sum(alpha.values())
    z: dict[str, dict[str, float]] = {lab: {} for lab in labels}
    for w in vocab:
        a = alpha[w]
        y_all = sum(counts[lab][w] for lab in labels)
        for lab in labels:
            yi, yr = counts[lab][w], y_all - counts[lab][w]
            ni, nr = n[lab], total - n[lab]
            if yi <= 0 or ni <= 0 or nr <= 0:
                continue
            d = (math.log((yi + a) / max(ni + a0 - yi - a, 1e-9)) - math.log((yr + a) / max(nr + a0 - yr - a, 1e-9)))
            z[lab][w] = d / math.sqrt(1 / (yi + a) + 1 / (yr + a))
    out: dict[str, list[dict]] = {}
    for lab in labels:
        mine_ = [(w, s) for w, s in z[lab].items() if s >= min_z and counts[lab][w] >= min_count
                 and counts[lab][w] >= min_share * sum(counts[o][w] for o in labels)
                 and all(s > z[o].get(w, -math.inf) for o in labels if o != lab)]
        mine_.sort(key=lambda ws: (-ws[1], ws[0]))
        out[lab] = [{"word": w, "z": round(s, 2), "count": round(counts[lab][w], 2)} for w, s in mine_[:per_label]]
    return out


def rule_name(label: str, prefix: str = PREFIX) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9_.-]", "-", label)


WORDS_PREFIX = "words-"


def words_prompt(label: str, description: str, noun: str) -> list[dict]:
    """Asking the teacher for the words typical of a label (one call per label)."""
    return [{"role": "user", "content": f"List 15 single words that often appear in a {noun} whose label is "
                                        f"\"{label}\" ({description}). Reply with the words only, separated by commas."}]


def teacher_words(replies: dict[str, str], vocabulary: Counter, per_label: int = 12, min_docs: int = 2) -> dict[str, list[dict]]:
    """The words each label's reply lists, kept when the pile uses them (in at least `min_docs` chunks) and
    no other label's reply lists them too; in the shape `mine` returns."""
    said = {lab: [w for w in dict.fromkeys(m.group(0).lower().strip("'-") for m in WORD.finditer(text or ""))
                  if len(w) >= 3 and w not in STOP and not w.isdigit()] for lab, text in replies.items()}
    seen = Counter(w for ws in said.values() for w in set(ws))
    return {lab: [{"word": w, "z": None, "count": vocabulary[w]} for w in ws
                  if seen[w] == 1 and vocabulary[w] >= min_docs][:per_label] for lab, ws in said.items()}


def as_rules(words: dict[str, list[dict]], taken: set[str] = frozenset(), prefix: str = PREFIX) -> list[dict]:
    """label.rules entries, one keyword rule per label with words (a name already in label.rules is skipped:
    a promoted rule is the user's now)."""
    return [{"name": rule_name(lab, prefix), "keywords": [w["word"] for w in ws], "label": lab}
            for lab, ws in words.items() if ws and rule_name(lab, prefix) not in taken]


def write(path: Path, rules: list[dict], stats: dict[str, dict] | None = None) -> Path:
    """The mined rules as a YAML list shaped like label.rules, each with its estimated accuracy,
    coverage and accuracy on gold as a comment."""
    stats = stats or {}
    lines = ["# Keyword rules taskling mined from the label set, the examples, the teacher's inputs and the pile.",
             "# Edit freely (drop a word, add one), then copy them into taskling.yaml's label: rules: with",
             "#   taskling rules promote [--only NAME,...]      (taskling rules show lists them)",
             "# Estimated accuracy is the label model's (no gold); measured is on gold.jsonl where the rule fired.",
             "rules:"]
    for r in rules:
        st = stats.get(r["name"], {})
        notes = [f"{k} {v}" for k, v in (("estimated accuracy", st.get("estimated")), ("coverage", st.get("coverage")),
                                         ("measured on gold", st.get("measured")), ("gold n", st.get("measured_n")))
                 if v is not None]
        if notes:
            lines.append(f"  # {r['name']}: " + ", ".join(notes))
        lines.append(f"  - {json.dumps({'name': r['name'], 'keywords': r['keywords'], 'label': r['label']})}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read(path: Path) -> list[dict]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise TasklingError(f"{path}: cannot read the rules file ({e}); it is written by curate as mined_rules.yaml")
    rules = data.get("rules") if isinstance(data, dict) else data
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise TasklingError(f"{path}: expected 'rules:' followed by a list of rules ({{name, keywords, label}})")
    return rules


def promote(config: Path, rules_file: Path, only: Sequence[str] | None = None) -> list[str]:
    """Copy rules from `rules_file` into `config`'s label.rules (a rule of the same name is replaced);
    the rest of taskling.yaml, comments included, stays as it was. The new file must load, or it is
    left unchanged and the error names the rule. Returns the names promoted."""
    from ..core.config import load_config

    rules = read(rules_file)
    if only:
        missing = sorted(set(only) - {r.get("name") for r in rules})
        if missing:
            raise TasklingError(f"{rules_file}: no rule named {missing[0]!r}; the file has "
                                f"{', '.join(str(r.get('name')) for r in rules)}")
        rules = [r for r in rules if r.get("name") in set(only)]
    if not rules:
        raise TasklingError(f"{rules_file}: no rule to promote")
    original = config.read_text(encoding="utf-8")
    data = yaml.safe_load(original) or {}
    names = [r["name"] for r in rules]
    label = data.get("label") or {}
    kept = [r for r in (label.get("rules") or []) if r.get("name") not in names]
    new_label = {**label, "rules": kept + [dict(r) for r in rules]}
    config.write_text(replace_section(original, "label", new_label), encoding="utf-8")
    try:
        load_config(config)
    except TasklingError as e:
        config.write_text(original, encoding="utf-8")
        raise TasklingError(f"promoting {', '.join(names)} into {config} would make it invalid, so it was left as it "
                            f"was: {e}") from None
    return names


def replace_section(text: str, key: str, value: dict) -> str:
    """`text` (YAML) with its top-level `key:` block replaced by `value` (or appended when absent);
    every other line kept exactly."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if re.match(rf"^{re.escape(key)}\s*:", ln)), None)
    block = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=None, width=120)
    if start is None:
        sep = "" if not text or text.endswith("\n") else "\n"
        return text + sep + "\n" + block
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():  # blank lines after the block stay
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])
