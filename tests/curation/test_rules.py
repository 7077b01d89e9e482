"""Labelling rules: whole-word keywords, regex maps over paths, locators, table columns and chunk text,
abstentions, votes into the label model, the per-rule summary, and errors that name the rule."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from taskling.core.config import load_config
from taskling.core.errors import TasklingError
from taskling.curation.labelmodel import fit
from taskling.curation.rules import compile_rules, summary, votes

LABELS = ["sport", "tech", "food", "art"]


def one(rule: dict):
    return compile_rules([{"name": "r", **rule}], LABELS)[0]


def doc(path="docs/sport/a.txt", locator="section 2", **extra):
    """A generated example citing one chunk of the document at `path`."""
    return {"id": "e1", "input": extra.pop("input", "hello"), "output": "sport", "label": "sport",
            "chunks": ["c1"], "provenance": [{"path": path, "locator": locator, "chunk": "c1"}], **extra}


# -- keywords --------------------------------------------------------------------------------------------------------
def test_keywords_match_whole_words_only():
    art = one({"keywords": ["art"], "label": "art"})
    assert art.vote({"input": "we went to the party"}) is None
    assert art.vote({"input": "a start, a cart, artful"}) is None
    assert art.vote({"input": "modern art."}) == "art"
    assert art.vote({"input": "(art)"}) == "art"


def test_multi_word_keyword_matches_across_line_breaks_and_spaces():
    ml = one({"keywords": ["machine learning"], "label": "tech"})
    assert ml.vote({"input": "new machine\nlearning course"}) == "tech"
    assert ml.vote({"input": "machine \t  learning"}) == "tech"
    assert ml.vote({"input": "machinelearning"}) is None
    assert ml.vote({"input": "machine learnings"}) is None


def test_keywords_ignore_case_unless_told_not_to():
    any_case = one({"keywords": ["Goal"], "label": "sport"})
    assert any_case.vote({"input": "GOAL!"}) == "sport"
    exact = one({"keywords": ["Goal"], "label": "sport", "ignore_case": False})
    assert exact.vote({"input": "GOAL!"}) is None
    assert exact.vote({"input": "what a Goal"}) == "sport"


def test_keywords_are_unicode_words():
    cafe = one({"keywords": ["café"], "label": "food"})
    assert cafe.vote({"input": "au CAFÉ ce matin"}) == "food"
    assert cafe.vote({"input": "cafés"}) is None  # é then s: still inside one word
    assert cafe.vote({"input": "cafe\u0301 noir"}) == "food"  # e + combining accent is the same word


def test_keyword_map_votes_the_matched_keyword_and_prefers_the_longer_phrase():
    r = one({"keywords": ["machine", "machine learning", "oven"],
             "map": {"machine": "art", "Machine Learning": "tech", "oven": "food"}})
    assert r.vote({"input": "about MACHINE   learning"}) == "tech"
    assert r.vote({"input": "a machine for art"}) == "art"
    assert r.vote({"input": "nothing here"}) is None


# -- regex and metadata ----------------------------------------------------------------------------------------------
def test_path_regex_maps_folder_names_also_for_windows_paths():
    folder = one({"field": "path", "regex": r"^docs/(\w+)/", "map": {"sport": "sport", "tech": "tech"}})
    assert folder.vote(doc("docs/sport/a.txt")) == "sport"
    assert folder.vote(doc("docs\\tech\\notes\\b.md")) == "tech"
    assert folder.vote(doc("docs/Tech/b.md")) == "tech"  # ignore_case covers the map lookup
    assert folder.vote(doc("docs/gardening/c.txt")) is None  # not in the map: abstain
    assert folder.vote(doc("old/docs/sport/a.txt")) is None  # ^ anchors at the path's start
    # an example citing two documents: ^ anchors each path
    two = doc("misc/x.txt")
    two["provenance"].append({"path": "docs/tech/y.txt", "locator": "p. 1"})
    assert folder.vote(two) == "tech"


def test_regex_map_is_case_sensitive_when_asked():
    folder = one({"field": "path", "regex": r"^docs/(\w+)/", "map": {"sport": "sport"}, "ignore_case": False})
    assert folder.vote(doc("docs/sport/a.txt")) == "sport"
    assert folder.vote(doc("docs/Sport/a.txt")) is None


def test_locator_rule():
    r = one({"field": "locator", "regex": r"^Results\b", "label": "sport"})
    assert r.vote(doc(locator="Results > Cup final")) == "sport"
    assert r.vote(doc(locator="Intro > Results")) is None


def test_column_rule_on_a_table_row_example():
    row = {"id": "t1", "input": "What does error E42 mean?", "output": "Disk full",
           "provenance": [{"path": "data/errors.csv", "locator": "row 7",
                           "row": {"code": "E42", "team": "Infra", "severity": 3}}]}
    team = one({"field": "column:team", "regex": r"(\w+)", "map": {"infra": "tech", "kitchen": "food"}})
    assert team.vote(row) == "tech"
    severe = one({"field": "column:severity", "regex": r"^[3-5]$", "label": "tech"})
    assert severe.vote(row) == "tech"  # non-string cells are matched as their text
    assert one({"field": "column:owner", "keywords": ["infra"], "label": "tech"}).vote(row) is None
    assert team.vote(doc()) is None  # not from a table


def test_source_rule_reads_the_chunk_text_given_by_the_caller():
    r = one({"field": "source", "keywords": ["penalty kick"], "label": "sport"})
    ex = doc(input="what happened?")
    ex["chunks"] = ["c1", "c2"]
    chunks = {"c1": "The match was close.", "c2": "A late penalty\nkick decided it."}
    assert votes([r], [ex], chunks) == [{"r": "sport"}]
    assert votes([r], [ex], lambda key: chunks["c1"] if key == "c1" else None) == [{"r": None}]
    assert r.vote(ex, source_text="a penalty kick") == "sport"
    with pytest.raises(TasklingError, match="rule 'r' looks at field 'source'"):
        votes([r], [ex])


def test_metadata_rules_do_not_apply_to_gold_items_and_input_rules_do():
    rules = compile_rules([
        {"name": "folder", "field": "path", "regex": r"^docs/(\w+)/", "map": {"sport": "sport"}},
        {"name": "loc", "field": "locator", "regex": "section", "label": "art"},
        {"name": "src", "field": "source", "keywords": ["goal"], "label": "sport"},
        {"name": "team", "field": "column:team", "regex": ".", "label": "tech"},
        {"name": "words", "keywords": ["goal"], "label": "sport"},
    ], LABELS)
    gold = {"input": "a goal in the last minute", "output": "sport"}
    got = votes(rules, [gold, doc(input="goal")], {"c1": "goal"})
    # a gold item has no source document: the metadata rules do not apply (no key), the input rule does
    assert got[0] == {"words": "sport"}
    # no table row: the column rule does not apply either
    assert got[1] == {"folder": "sport", "loc": "art", "src": "sport", "words": "sport"}
    assert votes(rules, [doc(input="no match here")], {"c1": "nothing"})[0]["words"] is None  # looked, silent


# -- into the label model --------------------------------------------------------------------------------------------
WORDS = {"sport": ["goal", "referee"], "tech": ["server", "compiler"], "food": ["recipe", "oven"]}
FILLER = "the a of report weekly notes about some things people said today".split()
SYNTH_RULES = [
    {"name": "folder", "field": "path", "regex": r"^docs/(\w+)/", "map": {lab: lab for lab in WORDS}},
    {"name": "desk", "field": "locator", "regex": r"(\w+) desk", "map": {lab: lab for lab in WORDS}},
    {"name": "words", "keywords": [w for ws in WORDS.values() for w in ws],
     "map": {w: lab for lab, ws in WORDS.items() for w in ws}},
]


def synthetic(seed: int, n: int = 600):
    """Examples whose folder (75% right), section heading (70% right) and words (a telling word 60% of
    the time, a misleading one 15%) each hint at the true label; returns examples and true labels."""
    rng = random.Random(seed)
    labels = list(WORDS)
    examples, truth = [], []
    for i in range(n):
        y = rng.choice(labels)
        def other():
            return rng.choice([lab for lab in labels if lab != y])
        words = rng.sample(FILLER, 6)
        if rng.random() < 0.6:
            words.append(rng.choice(WORDS[y]))
        if rng.random() < 0.15:
            words.append(rng.choice(WORDS[other()]))
        rng.shuffle(words)
        folder = y if rng.random() < 0.75 else other()
        desk = y if rng.random() < 0.7 else other()
        examples.append({"input": " ".join(words), "provenance": [
            {"path": f"docs/{folder}/{i}.txt", "locator": f"Notes > {desk.title()} desk"}]})
        truth.append(y)
    return examples, truth


@pytest.mark.parametrize("seed", [0, 1])
def test_rules_through_the_label_model_beat_every_single_rule(seed):
    examples, truth = synthetic(seed)
    rules = compile_rules(SYNTH_RULES, list(WORDS))
    got = votes(rules, examples)
    model = fit(got, list(WORDS))
    assert model.sources == ["folder", "desk", "words"]
    combined = sum(model.label(i) == t for i, t in enumerate(truth)) / len(truth)
    singles = {r.name: sum(row[r.name] == t for row, t in zip(got, truth)) / len(truth) for r in rules}
    assert max(singles.values()) < 0.8  # no rule alone gets there
    assert combined > max(singles.values()) + 0.04, (combined, singles)


# -- summary ---------------------------------------------------------------------------------------------------------
def test_summary_counts_by_hand():
    rules = compile_rules([
        {"name": "kw", "keywords": ["goal", "server"], "map": {"goal": "sport", "server": "tech"}},
        {"name": "folder", "field": "path", "regex": r"^docs/(\w+)/", "map": {"food": "food"}},
    ], LABELS)
    examples = [
        {"input": "goal!", "output": "sport"},                 # gold: kw sport, folder abstains
        doc("docs/food/a.txt", input="the server"),            # kw tech, folder food
        doc("docs/food/b.txt", input="nothing"),               # folder food
        doc("docs/sport/c.txt", input="another goal"),         # kw sport; sport is not in folder's map
    ]
    got = votes(rules, examples)
    assert [row["kw"] for row in got] == ["sport", "tech", None, "sport"]
    s = summary(rules, got, LABELS, examples)
    assert s[0] == {"name": "kw", "field": "input", "fires": 3, "coverage": 0.75,
                    "votes": {"sport": 2, "tech": 1, "food": 0, "art": 0},
                    "applicable": 4, "never_applicable": False, "warning": None}
    assert s[1]["fires"] == 2 and s[1]["coverage"] == 0.5 and s[1]["applicable"] == 3
    assert s[1]["votes"] == {"sport": 0, "tech": 0, "food": 2, "art": 0}
    plain = summary(rules, got, LABELS)  # without the examples: counts only
    assert plain[0]["fires"] == 3 and "applicable" not in plain[0]


def test_summary_warns_about_a_column_no_row_has():
    rows = [{"input": f"q{i}", "provenance": [{"path": "t.csv", "row": {"team": "infra", "code": i}}]}
            for i in range(3)]
    rules = compile_rules([{"name": "by_team", "field": "column:teams", "keywords": ["infra"], "label": "tech"},
                           {"name": "never", "field": "column:team", "keywords": ["kitchen"], "label": "food"}],
                          LABELS)
    s = summary(rules, votes(rules, rows), LABELS, rows)
    assert s[0]["never_applicable"] is True and s[0]["fires"] == 0
    assert "by_team" in s[0]["warning"] and "'teams'" in s[0]["warning"] and "column:team" in s[0]["warning"]
    assert s[1]["never_applicable"] is False and "matched none of the 3" in s[1]["warning"]


def test_summary_rejects_a_vote_outside_the_labels():
    rules = compile_rules([{"name": "kw", "keywords": ["x"], "label": "sport"}])
    with pytest.raises(TasklingError, match="rule 'kw' voted 'opera'"):
        summary(rules, [{"kw": None}, {"kw": "opera"}], LABELS)


# -- errors ----------------------------------------------------------------------------------------------------------
def test_regex_without_group_but_map_explains_the_group():
    with pytest.raises(TasklingError) as e:
        compile_rules([{"name": "folder", "field": "path", "regex": r"^docs/\w+/", "map": {"sport": "sport"}}])
    assert "rule 'folder'" in str(e.value) and "no group" in str(e.value) and "parentheses" in str(e.value)
    # a whole match can be a key: then no group is needed
    r = compile_rules([{"name": "w", "regex": r"sport|tech", "map": {"sport": "sport", "tech": "tech"}}])[0]
    assert r.vote({"input": "tech news"}) == "tech"


@pytest.mark.parametrize("rule, words", [
    ({"keywords": ["goal"], "map": {"goal": "sport", "gaol": "sport"}}, ["'gaol'", "not one of its keywords"]),
    ({"keywords": ["goal", "oven"], "map": {"goal": "sport"}}, ["'oven'", "no entry in map"]),
    ({"keywords": ["goal", "  "], "label": "sport"}, ["is empty"]),
    ({"keywords": ["goal"], "label": "opera"}, ["'opera'", "not one of the labels"]),
    ({"regex": "(unclosed", "label": "sport"}, ["does not compile"]),
])
def test_compile_errors_name_the_rule(rule, words):
    with pytest.raises(TasklingError) as e:
        compile_rules([{"name": "myrule", **rule}], LABELS)
    assert "rule 'myrule'" in str(e.value)
    for w in words:
        assert w in str(e.value)


def write_config(tmp_path: Path, rule: dict) -> Path:
    p = tmp_path / "taskling.yaml"
    p.write_text(yaml.safe_dump({
        "task": {"name": "t", "description": "sort documents", "type": "classify", "labels": LABELS},
        "sources": ["docs/*"],
        "label": {"rules": [{"name": "folder_rule", **rule}]},
    }), encoding="utf-8")
    return p


def test_a_good_rule_loads_and_compiles(tmp_path):
    cfg = load_config(write_config(tmp_path, {"field": "path", "regex": r"^docs/(\w+)/",
                                              "map": {"sport": "sport", "tech": "tech"}}))
    rules = compile_rules(cfg.label.rules, list(cfg.task.labels))
    assert rules[0].vote(doc("docs\\tech\\x.txt")) == "tech"


@pytest.mark.parametrize("rule, words", [
    ({"keywords": ["goal"], "label": "sports"}, ["'sports'", "not one of the labels", "did you mean 'sport'"]),
    ({"regex": "docs/(", "label": "sport"}, ["does not compile"]),
    ({"keywords": ["goal"], "regex": "goal", "label": "sport"}, ["exactly one of keywords or regex"]),
])
def test_config_errors_name_the_rule(tmp_path, rule, words):
    path = write_config(tmp_path, rule)
    with pytest.raises(TasklingError) as e:
        load_config(path)
    msg = str(e.value)
    assert "folder_rule" in msg and str(path) in msg
    for w in words:
        assert w in msg
