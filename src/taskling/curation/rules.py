"""Labelling rules: the keyword, regex and metadata rules of label.rules, compiled and run over examples.

Owns turning `RuleCfg`s into matchers (`compile_rules`), a rule's vote on one
example (`Rule.vote`), the votes of every rule on every example in the shape
`labelmodel.fit` takes (`votes`), and the per-rule counts the report shows
before the label model (`summary`). A rule looks at one field of an example:

  input        the example's input text
  source       the text of the chunk(s) it cites (given by the caller: chunk key -> text)
  path         its source documents' workspace-relative paths, always with `/` separators
  locator      page, sheet, section heading path, Message-ID...
  column:NAME  a column of the table row it came from (provenance[...]["row"][NAME])

An example without the field (a gold item has no provenance, so no path,
locator, source or column) gets an abstention. Keywords match as whole words or
phrases (Unicode word characters; the words of a phrase across any whitespace);
a regex is `re.search`ed. `ignore_case` applies to both and to the `map` lookup.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import unicodedata
from collections import Counter
from typing import Any, Callable, Mapping, Sequence, Union

from pydantic import ValidationError

from ..core.config import RuleCfg
from ..core.errors import TasklingError

FIELDS = ("input", "source", "path", "locator")
SourceText = Union[Mapping[str, str], Callable[[str], Union[str, None]], None]


@dataclasses.dataclass(frozen=True)
class Rule:
    """One compiled rule. With `label` it votes that label whenever `pattern` matches; with `mapping`
    it votes mapping[the first group, or the whole match if the regex has none, or the keyword],
    keys normalised by `_key`, and abstains on a value that is not in it."""

    name: str
    field: str
    pattern: re.Pattern
    label: str | None = None
    mapping: dict[str, str] = dataclasses.field(default_factory=dict)
    ignore_case: bool = True

    def vote(self, example: Mapping[str, Any], source_text: str | None = None) -> str | None:
        """This rule's label for `example`, or None to abstain. source_text: the cited chunks' text
        (only `source` rules read it; without it they abstain)."""
        return self.vote_text(field_text(example, self.field, source_text))

    def vote_text(self, text: str | None) -> str | None:
        """The vote on the field's text (as `field_text` gives it), or None to abstain."""
        if text is None:
            return None
        if self.label is not None:
            return self.label if self.pattern.search(text) else None
        # the first match whose value is in the map votes: a regex like (\w+) may match
        # words the map does not list before the one it does
        for m in self.pattern.finditer(text):
            got = m.group(1) if self.pattern.groups else m.group(0)
            if got is not None:
                lab = self.mapping.get(_key(got, self.ignore_case))
                if lab is not None:
                    return lab
        return None

    def labels(self) -> list[str]:
        """Every label this rule can vote."""
        return [self.label] if self.label is not None else list(dict.fromkeys(self.mapping.values()))


# -- compiling -------------------------------------------------------------------------------------------------------
def _nfc(text: str) -> str:
    # "café" typed with a combining accent and with a precomposed é are the same word to a reader
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def _key(text: str, ignore_case: bool) -> str:
    """A map key or matched value as compared: NFC, whitespace runs as one space, casefolded with ignore_case."""
    text = " ".join(_nfc(text).split())
    return text.casefold() if ignore_case else text


def _keyword_pattern(name: str, keywords: Sequence[str], flags: int) -> re.Pattern:
    parts = []
    for kw in keywords:
        words = _nfc(kw).split()
        if not words:
            raise TasklingError(f"rule '{name}': keyword {kw!r} is empty; remove it from label.rules")
        parts.append(r"\s+".join(re.escape(w) for w in words))
    # longest first: at one position the alternation takes the first that matches, and
    # "machine learning" must win over "machine" when both are keywords with different labels
    parts = sorted(dict.fromkeys(parts), key=len, reverse=True)
    # lookarounds rather than \b so that a keyword starting or ending in punctuation ("c++") still works
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", flags)


def _check_map(cfg: RuleCfg, pattern: re.Pattern, mapping: dict[str, str]) -> None:
    keys = list(cfg.map)
    if cfg.keywords:
        kws = {_key(k, cfg.ignore_case): k for k in cfg.keywords}
        for k in keys:
            if _key(k, cfg.ignore_case) not in kws:
                near = difflib.get_close_matches(k, list(cfg.keywords), n=1)
                raise TasklingError(
                    f"rule '{cfg.name}': map key {k!r} is not one of its keywords {list(cfg.keywords)}, so it "
                    "can never be matched; with keywords, map each keyword to a label"
                    + (f" (did you mean {near[0]!r}?)" if near else ""))
        missing = [k for n, k in kws.items() if n not in mapping]
        if missing:
            raise TasklingError(f"rule '{cfg.name}': keyword {missing[0]!r} has no entry in map, so it would "
                                "never vote; add it to map or drop it from keywords")
    elif pattern.groups == 0 and not any(pattern.fullmatch(_nfc(k)) for k in keys):
        shown = ", ".join(repr(k) for k in keys[:4]) + (", ..." if len(keys) > 4 else "")
        raise TasklingError(
            f"rule '{cfg.name}': regex {cfg.regex!r} has no group, so its vote is map[the whole match], and "
            f"no key of map ({shown}) can be a whole match; put the part to look up in parentheses, "
            r"e.g. '^docs/(\w+)/' votes map['sport'] for docs/sport/a.txt")


def compile_rules(cfg_rules: Sequence[RuleCfg | Mapping[str, Any]],
                  labels: Sequence[str] | None = None) -> list[Rule]:
    """Compile label.rules (RuleCfg objects, or dicts of their keys). With `labels`, every label a
    rule votes must be one of them (load_config already checks this for a taskling.yaml)."""
    rules: list[Rule] = []
    for i, cfg in enumerate(cfg_rules):
        if not isinstance(cfg, RuleCfg):
            if not isinstance(cfg, Mapping):
                raise TasklingError(f"label.rules[{i}]: a rule is a mapping (name, field, keywords or regex, "
                                    f"label or map), got {type(cfg).__name__}")
            try:
                cfg = RuleCfg.model_validate(dict(cfg))
            except ValidationError as e:
                why = "; ".join(f"{'.'.join(map(str, er['loc'])) or 'rule'}: "
                                f"{er['msg'].removeprefix('Value error, ')}" for er in e.errors())
                raise TasklingError(f"label.rules[{i}]: {why}") from None
        flags = re.IGNORECASE if cfg.ignore_case else 0
        if cfg.field in ("path", "locator"):
            # several cited documents are one line each: ^ and $ anchor each path, not the list
            flags |= re.MULTILINE
        if cfg.field.startswith("column:") and not cfg.field[len("column:"):]:
            raise TasklingError(f"rule '{cfg.name}': field 'column:' names no column; write column:NAME")
        if cfg.keywords:
            pattern = _keyword_pattern(cfg.name, cfg.keywords, flags)
        else:
            try:
                pattern = re.compile(_nfc(cfg.regex or ""), flags)
            except re.error as e:
                raise TasklingError(f"rule '{cfg.name}': regex {cfg.regex!r} does not compile ({e})") from None
        mapping: dict[str, str] = {}
        for k, v in cfg.map.items():
            nk = _key(k, cfg.ignore_case)
            if nk in mapping and mapping[nk] != v:
                raise TasklingError(f"rule '{cfg.name}': map keys that differ only in case or spacing vote "
                                    f"different labels ({mapping[nk]!r} and {v!r} for {k!r}); set "
                                    "ignore_case: false or keep one")
            mapping[nk] = v
        if mapping:
            _check_map(cfg, pattern, mapping)
        rule = Rule(name=cfg.name, field=cfg.field, pattern=pattern, label=cfg.label, mapping=mapping,
                    ignore_case=cfg.ignore_case)
        if labels is not None:
            for lab in rule.labels():
                if lab not in labels:
                    raise TasklingError(f"rule '{cfg.name}' votes {lab!r}, which is not one of the labels "
                                        f"{list(labels)}; fix it in label.rules")
        rules.append(rule)
    names = [r.name for r in rules]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TasklingError(f"label.rules: the name '{dup[0]}' is used twice; give each rule its own name")
    return rules


# -- reading an example's fields -------------------------------------------------------------------------------------
def _provenance(example: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    prov = example.get("provenance")
    return [p for p in prov if isinstance(p, Mapping)] if isinstance(prov, list) else []


def _lines(values) -> str | None:
    out = list(dict.fromkeys(_nfc(v) for v in values if isinstance(v, str) and v))
    return "\n".join(out) if out else None


def field_text(example: Mapping[str, Any], field: str, source_text: str | None = None) -> str | None:
    """The text a rule on `field` looks at, or None when the example does not have it."""
    if field == "input":
        text = example.get("input")
        return _nfc(text) if isinstance(text, str) else None
    if field == "source":
        return _nfc(source_text) if isinstance(source_text, str) and source_text else None
    if field == "path":
        # a path recorded on Windows matches the same `/` regex as one recorded on Linux
        return _lines(p["path"].replace("\\", "/") for p in _provenance(example) if isinstance(p.get("path"), str))
    if field == "locator":
        return _lines(p.get("locator") for p in _provenance(example))
    if field.startswith("column:"):
        col = field[len("column:"):]
        for p in _provenance(example):
            row = p.get("row")
            if isinstance(row, Mapping) and col in row and row[col] is not None:
                return _nfc(str(row[col]))
        return None
    raise TasklingError(f"field {field!r} is not one of {', '.join(FIELDS)} or column:NAME")


def chunk_text(example: Mapping[str, Any], source_text: SourceText) -> str | None:
    """The cited chunks' texts joined by blank lines, looked up in a mapping or through a callable;
    None when the example cites none that can be found."""
    keys = example.get("chunks") or []
    if source_text is None or not isinstance(keys, list):
        return None
    get = source_text.get if isinstance(source_text, Mapping) else source_text
    texts = [t for k in keys if isinstance(t := get(k), str) and t]
    return "\n\n".join(texts) if texts else None


# -- running ---------------------------------------------------------------------------------------------------------
def votes(rules: Sequence[Rule], examples: Sequence[Mapping[str, Any]],
          source_text: SourceText = None) -> list[dict[str, str | None]]:
    """votes[i][rule name] = the rule's label for examples[i], None when it looked and did not fire,
    no key when the example lacks the rule's field: the input of labelmodel.fit.

    source_text gives the text of a chunk key (a mapping, or a callable returning None for an
    unknown key); it is needed when a rule looks at `source`.
    """
    needs_source = [r.name for r in rules if r.field == "source"]
    if needs_source and source_text is None:
        raise TasklingError(f"rule '{needs_source[0]}' looks at field 'source': pass the chunk texts "
                            "(source_text: chunk key -> text) to rules.votes")
    # each field's text once per example, then each rule over a plain list: a rule is one
    # compiled search per text, which keeps 100k examples x 20 rules to a few seconds
    texts: dict[str, list[str | None]] = {}
    for f in dict.fromkeys(r.field for r in rules):
        if f == "source":
            texts[f] = [field_text(ex, f, chunk_text(ex, source_text)) for ex in examples]
        else:
            texts[f] = [field_text(ex, f) for ex in examples]
    if not rules:
        return [{} for _ in examples]
    # A rule whose field an example lacks (no source document, no table row) leaves its key out:
    # "not applicable", which the label model keeps apart from "looked and stayed silent" (None).
    out: list[dict[str, str | None]] = [{} for _ in examples]
    for r in rules:
        for row, t in zip(out, texts[r.field]):
            if t is not None:
                row[r.name] = r.vote_text(t)
    return out


def _applies(example: Mapping[str, Any], field: str) -> bool:
    if field == "source":  # without the chunk texts here: citing a chunk is what makes source apply
        return bool(example.get("chunks"))
    return field_text(example, field) is not None


def _never_applicable(rule: Rule, examples: Sequence[Mapping[str, Any]]) -> str:
    if rule.field.startswith("column:"):
        col = rule.field[len("column:"):]
        seen = sorted({str(c) for ex in examples for p in _provenance(ex)
                       if isinstance(p.get("row"), Mapping) for c in p["row"]})
        if not seen:
            return (f"rule '{rule.name}' looks at {rule.field}, but no example came from a table row; "
                    "it never votes (column rules need examples made from tables:)")
        near = difflib.get_close_matches(col, seen, n=1)
        return (f"rule '{rule.name}' looks at {rule.field}, but no example's table row has a column "
                f"{col!r} (columns seen: {', '.join(seen[:12])}{', ...' if len(seen) > 12 else ''}); it never "
                "votes" + (f"; did you mean 'column:{near[0]}'?" if near else "; fix field in label.rules"))
    what = {"input": "an input", "source": "a cited chunk", "path": "a source document path",
            "locator": "a locator"}[rule.field]
    return f"rule '{rule.name}' looks at {rule.field}, but no example has {what}; it never votes"


def summary(rules: Sequence[Rule], votes: Sequence[Mapping[str, str | None]], labels: Sequence[str],
            examples: Sequence[Mapping[str, Any]] | None = None) -> list[dict]:
    """Per rule, in order: fires (examples it voted on), coverage (fires / examples, 4 decimals) and
    votes per label (every label, zeros included). With the examples the votes came from, also
    applicable (examples that have its field) and a warning when it can never vote (a column no
    row has, a path on items without provenance) or when it matched none of the examples it could see.
    """
    labels = list(labels)
    n = len(votes)
    applicable_by_field: dict[str, int] = {}
    if examples is not None:
        if len(examples) != n:
            raise TasklingError(f"rules.summary: {len(examples)} examples but {n} rows of votes; pass the "
                                "examples the votes were computed on")
        for f in dict.fromkeys(r.field for r in rules):
            applicable_by_field[f] = sum(_applies(ex, f) for ex in examples)
    out = []
    for rule in rules:
        counts = Counter(row.get(rule.name) for row in votes)
        counts.pop(None, None)
        for v in counts:
            if v not in labels:
                i = next(i for i, row in enumerate(votes) if row.get(rule.name) == v)
                raise TasklingError(f"item {i}: rule '{rule.name}' voted {v!r}, which is not one of the labels "
                                    f"{labels}; fix it in label.rules")
        per_label = {lab: counts.get(lab, 0) for lab in labels}
        fires = sum(per_label.values())
        entry: dict[str, Any] = {"name": rule.name, "field": rule.field, "fires": fires,
                                 "coverage": round(fires / n, 4) if n else 0.0, "votes": per_label}
        if examples is not None:
            applicable = applicable_by_field[rule.field]
            entry["applicable"] = applicable
            entry["never_applicable"] = applicable == 0
            if applicable == 0:
                entry["warning"] = _never_applicable(rule, examples)
            elif fires == 0:
                entry["warning"] = (f"rule '{rule.name}' matched none of the {applicable} examples that have "
                                    f"{rule.field}; check its keywords or regex against them")
            else:
                entry["warning"] = None
        out.append(entry)
    return out
