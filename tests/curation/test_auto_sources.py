"""The automatic label sources (label.auto) on synthetic piles where each source's accuracy is known,
the label model learning those accuracies without gold, and mined keyword rules that a person reads,
edits and promotes into taskling.yaml, where they act as hand-written rules."""
from __future__ import annotations

import numpy as np
import pytest

from taskling.core.config import load_config
from taskling.curation import autolabel as al
from taskling.curation import labelmodel, mined
from taskling.curation import rules as rulemod

LABELS = ["alpha", "beta", "gamma"]


def synthetic(seed: int = 0, n_per_label: int = 120, dim: int = 48, noise: float = 0.45, docs_per_label: int = 4):
    """A pile of three labels: each chunk is its label's direction plus noise, each document holds one
    label's chunks; inputs drawn the same way with their true labels."""
    rng = np.random.default_rng(seed)
    dirs = al.unit(rng.normal(size=(len(LABELS), dim)))

    def draw(j, n):
        return al.unit(dirs[j] + noise * rng.normal(size=(n, dim)) / np.sqrt(dim) * 4)
    V, truth, docs, keys = [], [], [], []
    for j in range(len(LABELS)):
        V.append(draw(j, n_per_label))
        truth += [j] * n_per_label
        docs += [f"doc-{j}-{i % docs_per_label}" for i in range(n_per_label)]
        keys += [f"c{j}-{i}" for i in range(n_per_label)]
    space = al.PileSpace(keys, docs, [None] * len(keys), np.vstack(V))
    X = np.vstack([draw(j, 60) for j in range(len(LABELS))])
    y = np.repeat(np.arange(len(LABELS)), 60)
    return rng, dirs, space, np.array(truth), X, y


def accuracy(votes, y, src):
    said = [(v.get(src), LABELS[t]) for v, t in zip(votes, y) if v.get(src)]
    return sum(a == b for a, b in said) / len(said), len(said) / len(y)


def test_prototypes_refined_on_the_pile_beat_their_seeds():
    rng, dirs, space, truth, X, y = synthetic()
    # seeds that only half point at their label (a terse label name): refinement on the pile fixes them
    shared = al.unit(rng.normal(size=dirs.shape[1]))
    seeds = [al.unit(0.45 * dirs[j] + 0.55 * shared + 0.3 * al.unit(rng.normal(size=dirs.shape[1])))[None]
             for j in range(len(LABELS))]
    raw = al.prototypes(seeds)
    raw_acc = float(((X @ raw.T).argmax(1) == y).mean())
    fitted = al.Space.fit(LABELS, space, seeds, None, pools={}, abstain=0.0)
    votes = fitted.votes(X, which=[al.EMBEDDING])
    acc, cov = accuracy(votes, y, al.EMBEDDING)
    assert cov == 1.0 and acc >= 0.95 and acc > raw_acc + 0.05
    assert float((fitted.chunk_labels == truth).mean()) >= 0.95  # the pile's own labels under the prototypes


def test_calibrated_abstain_keeps_the_surer_votes():
    _, dirs, space, _, X, y = synthetic(seed=1, noise=1.6)
    seeds = [dirs[j][None] for j in range(len(LABELS))]
    every = al.Space.fit(LABELS, space, seeds, None, {}, abstain=0.0).votes(X, which=[al.EMBEDDING])
    sure = al.Space.fit(LABELS, space, seeds, None, {}, abstain=0.3)
    votes = sure.votes(X, which=[al.EMBEDDING])
    acc_all, _ = accuracy(every, y, al.EMBEDDING)
    acc_sure, cov = accuracy(votes, y, al.EMBEDDING)
    # it abstains on about the share of the pile's margins it was calibrated to, and is right more often
    assert 0.45 <= cov <= 0.85 and acc_sure > acc_all
    assert sure.threshold > 0


def test_knn_and_retrieval_vote_with_their_neighbours_labels():
    _, dirs, space, truth, X, y = synthetic(seed=2)
    seeds = [dirs[j][None] for j in range(len(LABELS))]
    # each label's search pool: 12 chunks, 9 of its own documents, 3 of another label's: documents still lean right
    pools = {j: [k for k in space.keys if k.startswith(f"c{j}-")][:9] + [k for k in space.keys
                                                                        if k.startswith(f"c{(j + 1) % 3}-")][-3:]
             for j in range(len(LABELS))}
    fitted = al.Space.fit(LABELS, space, seeds, None, pools)
    assert float((fitted.assoc_labels[fitted.assoc_labels >= 0] == truth[fitted.assoc_labels >= 0]).mean()) == 1.0
    votes = fitted.votes(X, which=[al.KNN, al.RETRIEVAL])
    for src in (al.KNN, al.RETRIEVAL):
        acc, cov = accuracy(votes, y, src)
        assert acc >= 0.95 and cov >= 0.9, (src, acc, cov)
    # a pile input never counts itself among its neighbours
    own = list(range(5))
    alone = al.knn_scores(space.vectors[:5], space.vectors, fitted.chunk_labels, 3, 1, own)
    nearest_other = [int(np.argsort(-(space.vectors @ space.vectors[i]))[1]) for i in range(5)]
    assert [int(alone[i].argmax()) for i in range(5)] == [int(fitted.chunk_labels[j]) for j in nearest_other]


def test_retrieval_abstains_without_association():
    _, dirs, space, _, X, _ = synthetic(seed=3)
    fitted = al.Space.fit(LABELS, space, [dirs[j][None] for j in range(3)], None, pools={})
    assert (fitted.assoc_labels == -1).all()
    assert not any(al.RETRIEVAL in v for v in fitted.votes(X, which=[al.RETRIEVAL]))


def test_label_model_learns_each_automatic_source_accuracy_without_gold():
    """Three sources of known accuracy (90%, 80%, 70%, errors spread evenly) over 900 items: the label
    model's estimates, learned without a single gold label, land near the truth."""
    rng = np.random.default_rng(4)
    n, truth = 900, rng.integers(0, 3, size=900)
    rates = {"embedding": 0.9, "knn": 0.8, "retrieval": 0.7}
    votes = [{} for _ in range(n)]
    for src, p in rates.items():
        for i in range(n):
            right = rng.random() < p
            votes[i][src] = LABELS[truth[i]] if right else LABELS[(truth[i] + rng.integers(1, 3)) % 3]
    fit = labelmodel.fit(votes, LABELS, sources=list(rates))
    for src, p in rates.items():
        assert abs(fit.source(src).accuracy - p) < 0.06, (src, fit.source(src).accuracy)
    # and applied to new items it answers like the weighted vote of the best sources
    assert fit.predict([{"embedding": "beta", "knn": "alpha", "retrieval": "alpha"}])[0][0] == "alpha"
    assert fit.predict([{"embedding": "beta", "retrieval": "alpha"}])[0][0] == "beta"
    assert fit.predict([{}]) == [(None, 0.0)]


# -- mined keyword rules ---------------------------------------------------------------------------------------------
TEXTS = {
    "alpha": [("the harbour ship sailed with cargo", 1.0)] * 6 + [("ship cargo port crane dock", 1.0)] * 4,
    "beta": [("the violin concert had a soloist", 1.0)] * 6 + [("orchestra violin soloist", 1.0)] * 4,
    "gamma": [("the glacier moved over granite rock", 1.0)] * 6 + [("granite glacier moraine", 1.0)] * 4,
}
BACKGROUND = ["the ship and the violin and the glacier", "words about everything else entirely",
              "cargo concert rock"] * 5


def test_mined_words_are_each_labels_own():
    words = mined.mine(LABELS, TEXTS, BACKGROUND, per_label=4, min_z=1.0)
    got = {lab: [w["word"] for w in ws] for lab, ws in words.items()}
    assert set(got["alpha"]) <= {"ship", "cargo", "harbour", "sailed", "port", "crane", "dock"} and "ship" in got["alpha"]
    assert "violin" in got["beta"] and "glacier" in got["gamma"] and "granite" in got["gamma"]
    assert not set(got["alpha"]) & set(got["beta"])  # a word goes to one label only
    assert all(w not in mined.STOP for ws in got.values() for w in ws)
    # the pile tokenised once (curate counts it for the mined words and the teacher's words alike)
    counts = mined.document_counts(BACKGROUND)
    assert counts["violin"] == 5 and counts["the"] == 0 and counts["cargo"] == 5
    assert mined.mine(LABELS, TEXTS, counts, per_label=4, min_z=1.0) == words


TASK_YAML = """# my task, with comments that must survive
task:
  name: t
  description: Sort notes.
  type: classify
  labels: {alpha: ships, beta: music, gamma: geology}
sources: [docs/*.txt]   # where the notes are

label:
  rules:
    - {name: by-hand, keywords: [ferry], label: alpha}

# seed below
seed: 3
"""


def test_mined_rules_are_readable_editable_and_promoted_as_hand_written(tmp_path):
    words = mined.mine(LABELS, TEXTS, BACKGROUND, per_label=4, min_z=1.0)
    rules = mined.as_rules(words)
    assert [r["name"] for r in rules] == ["mined-alpha", "mined-beta", "mined-gamma"]
    path = mined.write(tmp_path / "mined_rules.yaml", rules, {"mined-beta": {"estimated": 0.91, "coverage": 0.2}})
    text = path.read_text()
    assert "# mined-beta: estimated accuracy 0.91, coverage 0.2" in text and "promote" in text
    # a person edits the file: drops a word, adds one
    edited = text.replace('"violin", ', "").replace('"soloist"', '"soloist", "cello"')
    path.write_text(edited)
    (tmp_path / "taskling.yaml").write_text(TASK_YAML)
    assert mined.promote(tmp_path / "taskling.yaml", path, ["mined-beta"]) == ["mined-beta"]
    after = (tmp_path / "taskling.yaml").read_text()
    assert after.startswith("# my task, with comments that must survive\n") and "# seed below\nseed: 3" in after
    assert "sources: [docs/*.txt]   # where the notes are" in after
    cfg = load_config(tmp_path / "taskling.yaml")
    promoted = [r for r in cfg.label.rules if r.name == "mined-beta"][0]
    assert [r.name for r in cfg.label.rules] == ["by-hand", "mined-beta"]
    assert "cello" in promoted.keywords and "violin" not in promoted.keywords
    # it votes exactly as the same rule written by hand
    items = [{"input": "a cello solo"}, {"input": "a violin solo"}, {"input": "the ferry left"}]
    by_hand = rulemod.compile_rules([{"name": "mined-beta", "keywords": list(promoted.keywords), "label": "beta"}])
    assert rulemod.votes(rulemod.compile_rules([promoted]), items) == rulemod.votes(by_hand, items)
    assert rulemod.votes(rulemod.compile_rules([promoted]), items)[0] == {"mined-beta": "beta"}
    # once promoted, mining leaves that label's rule to the user
    assert [r["name"] for r in mined.as_rules(words, {"mined-beta"})] == ["mined-alpha", "mined-gamma"]
    # promoting again replaces it rather than adding a second rule of that name
    mined.promote(tmp_path / "taskling.yaml", path)
    assert [r.name for r in load_config(tmp_path / "taskling.yaml").label.rules] == [
        "by-hand", "mined-alpha", "mined-beta", "mined-gamma"]


def test_promote_refuses_a_rule_that_breaks_the_task_file(tmp_path):
    (tmp_path / "taskling.yaml").write_text(TASK_YAML)
    bad = tmp_path / "bad.yaml"
    bad.write_text('rules:\n  - {"name": "mined-x", "keywords": ["x"], "label": "delta"}\n')
    from taskling.core.errors import TasklingError

    with pytest.raises(TasklingError, match="delta"):
        mined.promote(tmp_path / "taskling.yaml", bad)
    assert (tmp_path / "taskling.yaml").read_text() == TASK_YAML  # left as it was
    with pytest.raises(TasklingError, match="no rule named 'nope'"):
        mined.promote(tmp_path / "taskling.yaml", bad, ["nope"])


def test_promote_appends_a_label_section_when_there_is_none(tmp_path):
    text = TASK_YAML.split("label:")[0] + "seed: 1\n"
    (tmp_path / "taskling.yaml").write_text(text)
    src = mined.write(tmp_path / "r.yaml", [{"name": "mined-alpha", "keywords": ["ship"], "label": "alpha"}])
    mined.promote(tmp_path / "taskling.yaml", src)
    assert [r.name for r in load_config(tmp_path / "taskling.yaml").label.rules] == ["mined-alpha"]


def test_label_auto_false_turns_every_source_off(tmp_path):
    (tmp_path / "taskling.yaml").write_text(TASK_YAML.replace("label:\n  rules:", "label:\n  auto: false\n  rules:"))
    cfg = load_config(tmp_path / "taskling.yaml")
    assert not cfg.label.auto.any and not cfg.label.auto.self_training and cfg.label.auto.dev_items == 0
    (tmp_path / "taskling.yaml").write_text(TASK_YAML)
    assert load_config(tmp_path / "taskling.yaml").label.auto.any  # on by default
    cfg = load_config(tmp_path / "taskling.yaml", ["label.auto.knn=false"])
    assert cfg.label.auto.embedding and not cfg.label.auto.knn


def test_teacher_words_keep_what_the_pile_uses_and_no_other_label_claims():
    from collections import Counter

    vocab = Counter({"ship": 5, "cargo": 3, "violin": 4, "music": 9, "glacier": 2, "unicorn": 0, "sea": 1})
    replies = {"alpha": "Ship, cargo, sea, music, the, 2024, unicorn", "beta": "violin, Music, orchestra",
               "gamma": "glacier; granite"}
    got = mined.teacher_words(replies, vocab)
    assert [w["word"] for w in got["alpha"]] == ["ship", "cargo"]  # 'sea' is in one chunk only, 'music' in two replies
    assert [w["word"] for w in got["beta"]] == ["violin"] and [w["word"] for w in got["gamma"]] == ["glacier"]
    rules = mined.as_rules(got, prefix=mined.WORDS_PREFIX)
    assert [r["name"] for r in rules] == ["words-alpha", "words-beta", "words-gamma"]
    assert "alpha" in mined.words_prompt("alpha", "ships", "note")[0]["content"]
