"""The curation filters on their own (curation/filters.py): language, grounding (each task
type's), dedup kinds, decontamination by n-gram and by paraphrase, balanced selection."""
from __future__ import annotations

import numpy as np

from taskling.core import tasktype
from taskling.core.tasktype import TaskCfg
from taskling.curation import filters as curation
from taskling.data.embed import Embedder


def test_language_vote_is_confident_or_silent():
    assert curation.language_of("How do I read the value of a key that is in the JSON column?") == "en"
    assert curation.language_of("Wie kann ich den Wert aus der Spalte mit dem Schlüssel lesen, ist das nicht ein Fehler?") == "de"
    assert curation.language_of("json_extract bm25") is None


def grounding(kind: str, ex: dict, source: str, similarity: float | None = None) -> float:
    task = TaskCfg(name="t", description="d", type=kind, labels=["a", "b"], output_schema={"type": "object"})
    return tasktype.get(kind).grounding(task, ex, source, similarity)


def test_grounding_by_task_type():
    src = "The json_extract function reads a value at a path. Invoice INV-204 is due on 2026-12-01."
    assert grounding("extract", {"output": {"invoice": "INV-204", "due": "2026-12-01"}}, src) == 1.0
    assert grounding("extract", {"output": {"invoice": "INV-999", "due": "2026-12-01"}}, src) == 0.5
    assert grounding("classify", {"input": "How does json_extract read a path?"}, src) > 0.5
    assert grounding("classify", {"input": "How do Kubernetes operators reconcile?"}, src) == 0.0
    assert grounding("answer", {"input": "q", "output": "It reads a value at a path."}, src, 0.8) > 0.6
    # the claim is the output for free text, the input for a label: an off-topic input does not count
    off = {"input": "How do Kubernetes operators reconcile?", "output": "It reads a value at a path."}
    assert grounding("generate", off, src) == grounding("answer", off, src) > 0.5
    assert grounding("classify", off, src) == 0.0
    # similarity weighs half for text claims; values are found or not
    assert grounding("answer", off, src, 0.0) == round(grounding("answer", off, src) / 2, 4)
    assert grounding("extract", {"output": {"invoice": "INV-204"}}, src, 0.0) == 1.0


def test_dedup_kinds_keep_the_first_in_order():
    texts = ["How do I read a file with readFile in node?", "how do i read a file with readfile in node",
             "How do I read a file with readFile in node.js?", "How can a node program load a file's contents?",
             "Which function ranks FTS5 results?"]
    vecs = Embedder().encode(texts)
    dups = curation.dedup([0, 1, 2, 3, 4], texts, vecs, near=0.7, semantic=0.8)
    assert dups[1] == ("exact duplicate", 0) and dups[2][0] == "near duplicate"
    assert 4 not in dups
    order_best_last = curation.dedup([4, 3, 2, 1, 0], texts, None, near=0.7, semantic=0.8)
    assert 2 not in order_best_last and order_best_last[1] == ("near duplicate", 2)  # the earlier in `order` stays


def test_decontamination_finds_copies_and_paraphrases():
    blocked = ["How do I read a file with readFile in node?"]
    texts = ["so, how do I read a file with readFile in node? thanks",  # shares a 6-gram
             "With node, how can I read a file using readFile?",        # paraphrase
             "How do I rank FTS5 MATCH results with bm25?"]             # unrelated
    emb = Embedder()
    out = curation.contaminated(texts, emb.encode(texts), blocked, emb.encode(blocked), cosine=0.85)
    assert out == {0: "overlaps eval or gold (n-gram)", 1: "overlaps eval or gold (paraphrase)"}
    assert curation.contaminated(texts, None, blocked, None, 0.85) == {0: "overlaps eval or gold (n-gram)"}


def test_selection_balances_labels_and_spreads_within():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(40, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = ["a"] * 30 + ["b"] * 6 + ["c"] * 4
    got = curation.select(list(range(40)), 15, lambda i: labels[i], vecs, lambda i: 0.0)
    counts = {lab: sum(labels[i] == lab for i in got) for lab in "abc"}
    assert len(got) == 15 and counts["c"] == 4 and counts["b"] == 5 and counts["a"] == 6
    twins = np.vstack([vecs[:1], vecs[:1], vecs[1:3]])
    assert sorted(curation.k_center(twins, 3)) in ([0, 2, 3], [1, 2, 3])  # never both twins


def test_shingles_are_word_6_grams_or_the_whole_short_text():
    assert curation.shingles("one two three four five six seven") == {
        ("one", "two", "three", "four", "five", "six"), ("two", "three", "four", "five", "six", "seven")}
    assert curation.shingles("Only Three words") == {("only", "three", "words")}
    assert curation.shingles("a b c", n=2) == {("a", "b"), ("b", "c")}
    assert len(curation.shingles(" ".join(f"w{i}" for i in range(20)))) == 15


def test_language_needs_enough_stop_words_and_a_clear_lead():
    # English stop words: "and", "the" (2) is too few; "the", "and", "the" (3) is just enough
    assert curation.language_of("cat and the dog") is None
    assert curation.language_of("the cat and the dog") == "en"
    # a clear lead: English 3 against Dutch 2 ("is", "in") is a near tie (2 x 1.5 >= 3); 4 against 2 is not
    assert curation.language_of("the cat is in") is None
    assert curation.language_of("the cat is in the box") == "en"
    assert curation.language_of("the cat is in the house and the dog") == "en"
    assert curation.language_of("der Hund und die Katze in dem Haus") == "de"
    assert curation.language_of("the dog is in the house", min_hits=10) is None
    # German and Dutch share "de"/"in"/"van"-like words: a near tie is no call
    assert curation.language_of("de het een en in is") in ("nl", None)
    assert curation.language_of("in de een het van en is dat op") == "nl"
    assert curation.language_of("") is None


def test_semantic_duplicates_are_looked_for_within_a_group_only():
    vecs = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0]], dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    texts = ["alpha beta gamma", "delta epsilon zeta", "eta theta iota"]
    assert curation.dedup([0, 1, 2], texts, vecs, near=0.9, semantic=0.95) == {1: ("semantic duplicate", 0)}
    assert curation.dedup([0, 1, 2], texts, vecs, near=0.9, semantic=0.95, groups=["a", "b", "a"]) == {}
    assert curation.dedup([1, 0, 2], texts, vecs, near=0.9, semantic=0.95) == {0: ("semantic duplicate", 1)}
    assert curation.dedup([0, 1, 2], texts, vecs, near=0.9, semantic=0.999) == {}
    assert curation.dedup([0, 1], ["Same text!", "same   TEXT"], None, 0.9, 0.9) == {1: ("exact duplicate", 0)}


def test_paraphrase_check_needs_vectors_on_both_sides_and_respects_the_threshold():
    vecs = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    blocked = np.array([[0.8, 0.6]], dtype=np.float32)
    texts = ["first unrelated text here", "second unrelated text here"]
    assert curation.contaminated(texts, vecs, ["blocked words only"], blocked, 0.8) == {
        0: "overlaps eval or gold (paraphrase)"}
    assert curation.contaminated(texts, vecs, ["blocked words only"], blocked, 0.81) == {}
    assert curation.contaminated(texts, vecs, ["blocked words only"], blocked, 0.6) == {
        0: "overlaps eval or gold (paraphrase)", 1: "overlaps eval or gold (paraphrase)"}
    assert curation.contaminated(texts, vecs, [], np.zeros((0, 2), dtype=np.float32), 0.5) == {}


def test_selection_without_vectors_keeps_the_best_grounded_and_small_sets_whole():
    labels = ["a"] * 6 + ["b"] * 2
    quality = [0.1, 0.9, 0.5, 0.7, 0.2, 0.3, 0.4, 0.8]
    got = curation.select(list(range(8)), 4, lambda i: labels[i], None, lambda i: quality[i])
    assert got == [1, 3, 6, 7]  # b: both; a: its two best
    assert curation.select([5, 1, 3], 3, lambda i: "a", None, lambda i: 0.0) == [5, 1, 3]
    # an odd leftover goes to the biggest label
    got = curation.select(list(range(8)), 5, lambda i: labels[i], None, lambda i: quality[i])
    assert got == [1, 2, 3, 6, 7]
    assert curation.k_center(np.eye(3, dtype=np.float32), 5) == [0, 1, 2]
    assert curation.k_center(np.eye(3, dtype=np.float32), 2, first=2)[0] == 2


# -- by hand, at the edges (what mutation testing showed the tests above let through) -----------------------------
def _unit(rows) -> np.ndarray:
    v = np.array(rows, dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_dedup_points_at_the_kept_item_and_counts_the_threshold_itself():
    texts = ["alpha beta gamma", "delta epsilon zeta", "eta theta iota", "kappa lambda mu", "Alpha  BETA gamma!"]
    vecs = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.1, 0.99, 0], [0, 0, 1]])
    # item 3 is nearest to item 1 of the three kept; item 4 is item 0's text (its vector does not matter)
    assert curation.dedup([0, 1, 2, 3, 4], texts, vecs, near=0.9, semantic=0.95) == {
        3: ("semantic duplicate", 1), 4: ("exact duplicate", 0)}
    same = _unit([[1, 0], [1, 0]])  # cosine exactly 1.0: at the threshold is a duplicate
    assert curation.dedup([0, 1], texts[:2], same, near=0.9, semantic=1.0) == {1: ("semantic duplicate", 0)}
    # a dropped item is nobody's original: the third copy points at the first, not at the second
    assert curation.dedup([0, 1, 2], ["a b c", "A B C", "a  b c"], None, 0.9, 0.9) == {
        1: ("exact duplicate", 0), 2: ("exact duplicate", 0)}


def test_k_center_takes_the_farthest_each_time():
    deg = np.radians([0, 10, 90, 180])
    vecs = np.stack([np.cos(deg), np.sin(deg)], axis=1).astype(np.float32)
    # from 0 deg: 180 is farthest; then 90 (cosine distance 1 from both) before 10 (0.015 from 0 deg)
    assert curation.k_center(vecs, 3) == [0, 3, 2]
    assert curation.k_center(vecs, 2, first=3) == [3, 0]
    assert curation.k_center(np.eye(3, dtype=np.float32), 3, first=2) == [0, 1, 2]  # all of them: in order


def test_decontamination_over_more_than_one_batch():
    n = 4200  # more than two blocks of 2048 for the paraphrase check
    texts = ["one item of many"] * n  # naming no identifier, as the blocked text does not
    texts[5] = "blocked words only"
    vecs = np.tile(np.array([[0.0, 1.0]], dtype=np.float32), (n, 1))
    vecs[[0, 5, 2048, 2049, 4150]] = [1.0, 0.0]
    out = curation.contaminated(texts, vecs, ["blocked words only"], np.array([[1.0, 0.0]], dtype=np.float32), 0.9)
    assert out == {0: "overlaps eval or gold (paraphrase)", 5: "overlaps eval or gold (n-gram)",
                   2048: "overlaps eval or gold (paraphrase)", 2049: "overlaps eval or gold (paraphrase)",
                   4150: "overlaps eval or gold (paraphrase)"}
    # the paraphrase check needs vectors on the eval side too
    assert curation.contaminated(texts[:6], vecs[:6], ["blocked words only"], None, 0.9) == {
        5: "overlaps eval or gold (n-gram)"}


def test_selection_quota_by_hand():
    labels = ["a"] * 5 + ["b"] * 3 + ["c"]
    quality = [0.5, 0.9, 0.1, 0.7, 0.3, 0.2, 0.8, 0.6, 0.4]
    # target 6: a share of 2 each, small labels first (c has 1: 1, b 2, a 2), then the single leftover to a
    assert curation.select(list(range(9)), 6, lambda i: labels[i], None, lambda i: quality[i]) == [0, 1, 3, 6, 7, 8]
    # target 4: 1 each, then the leftover to the biggest (a)
    assert curation.select(list(range(9)), 4, lambda i: labels[i], None, lambda i: quality[i]) == [1, 3, 6, 8]
    # target 8: shares of 2 (c 1, b 2, a 2), then 3 left over two open labels: 1 each, then a again
    assert curation.select(list(range(9)), 8, lambda i: labels[i], None, lambda i: quality[i]) == [0, 1, 3, 4, 5, 6, 7, 8]
    # with vectors: k-center within a label starts from its best-grounded item
    vecs = _unit([[1, 0], [0.99, 0.1], [-1, 0], [0, 1], [1, 0.05], [0, -1], [-1, 0.1], [0.5, 0.5], [1, 1]])
    got = curation.select(list(range(9)), 6, lambda i: labels[i], vecs, lambda i: quality[i])
    assert [i for i in got if labels[i] == "a"] == [1, 2, 3]  # 1 (best), then 2 (opposite), then 3 (across)


def test_selection_leftovers_and_second_passes_by_hand():
    quality = lambda i: -i  # noqa: E731  the lower the index, the better grounded
    # the single leftover goes to the biggest label even when it is not the first one seen
    labels = ["c"] + ["b"] * 3 + ["a"] * 5
    assert curation.select(list(range(9)), 4, lambda i: labels[i], None, quality) == [0, 1, 4, 5]
    labels = ["a"] + ["b"] * 3 + ["c"] * 5  # nor the first by name
    assert curation.select(list(range(9)), 4, lambda i: labels[i], None, quality) == [0, 1, 4, 5]
    # two labels of 4, two items: one each (the pass stops when nothing is left, not one before)
    labels = ["a"] * 4 + ["b"] * 4
    assert curation.select(list(range(8)), 2, lambda i: labels[i], None, quality) == [0, 4]
    # 9, 5 and 1 for 13: shares of 4 (c 1, b 4, a 4), then 4 left over a and b: 2 each but b has 1 more room
    # (b full at 5), then a takes the last: a 7, b 5, c 1
    labels = ["a"] * 9 + ["b"] * 5 + ["c"]
    got = curation.select(list(range(15)), 13, lambda i: labels[i], None, quality)
    assert [sum(labels[i] == lab for i in got) for lab in "abc"] == [7, 5, 1]


def test_k_center_measures_from_every_chosen_item_and_decontamination_from_every_blocked_text():
    deg = np.radians([0, 170, 180, 90])
    vecs = np.stack([np.cos(deg), np.sin(deg)], axis=1).astype(np.float32)
    # after 0 and 180: 170 is close to 180 (0.015 away), so 90 (1 away from both) is the farthest
    assert curation.k_center(vecs, 3) == [0, 2, 3]
    blocked = ["first blocked question about node files", "second blocked question about sqlite"]
    texts = ["first blocked question about node files today", "nothing to see", "second blocked question about sqlite"]
    assert curation.contaminated(texts, None, blocked, None, 0.9) == {0: "overlaps eval or gold (n-gram)",
                                                                     2: "overlaps eval or gold (n-gram)"}


def test_dedup_goes_on_after_a_near_duplicate():
    texts = ["how do i read a file with readfile in node", "how do i read a file with readfile in node js",
             "other text entirely here", "OTHER text  entirely here"]
    assert curation.dedup([0, 1, 2, 3], texts, None, near=0.7, semantic=0.9) == {
        1: ("near duplicate", 0), 3: ("exact duplicate", 2)}


def test_inputs_naming_other_identifiers_are_never_near_or_semantic_duplicates():
    """Questions over a table of error codes differ in the code alone: MinHash finds the first two near
    (Jaccard over 0.8) and the embedder the short ones alike (cosine over 0.95), yet each asks something
    else. Inputs that name the same identifiers (any case) are still compared, and copies still go."""
    texts = ["What does the PostgreSQL error code 23505 mean when an INSERT fails?",
             "What does the PostgreSQL error code 23503 mean when an INSERT fails?",
             "What does the PostgreSQL error code 23505 mean when my INSERT fails?",   # 0 again, reworded
             "What does error code 23505 mean?",
             "What does error code 23503 mean?",
             "What does error code 23514 mean?",
             "How do I raise max_connections in postgresql.conf?",
             "How do I raise MAX_CONNECTIONS in postgresql.conf, please?",             # 6 again
             "How do I raise max connections in postgresql.conf?",                     # names no identifier
             "what does the postgresql error code 23503 mean when an insert fails"]    # a copy of 1
    vecs = Embedder().encode(texts)
    assert curation.dedup(list(range(len(texts))), texts, None, near=0.8, semantic=0.95) == {
        2: ("near duplicate", 0), 7: ("near duplicate", 6), 9: ("exact duplicate", 1)}
    got = curation.dedup(list(range(len(texts))), texts, vecs, near=0.8, semantic=0.95)
    assert {i: d for i, d in got.items() if d[0] != "semantic duplicate" or i in (2, 7)} == {
        2: ("near duplicate", 0), 7: ("near duplicate", 6), 9: ("exact duplicate", 1)}
    assert not {3, 4, 5, 8} & set(got)


def test_inputs_naming_other_identifiers_are_never_contamination_of_each_other():
    """The same rule as dedup's: a question about error code 23503 shares all but the code with a gold question
    about 23505 (a 6-gram, and cosine 0.96 to the embedder), yet it is another question, with another answer.
    A paraphrase that names the same identifiers (or none) is still contamination, by either check."""
    blocked = ["What does error code 23505 mean?",
               "What does the PostgreSQL error code 23505 mean when an INSERT fails?",
               "How do I raise max_connections in postgresql.conf?",
               "How can I make a Node program read a whole file?"]
    texts = ["What does error code 23503 mean?",
             "What is the meaning of error code 23505?",                                   # 0, reworded
             "What does the PostgreSQL error code 23503 mean when an INSERT fails?",
             "How can I increase MAX_CONNECTIONS in postgresql.conf?",                     # 2, reworded
             "How do I raise shared_buffers in postgresql.conf?",
             "How do I read a whole file in a Node program?",                              # 3, reworded
             "What does error code 23514 mean?",
             "so what does the PostgreSQL error code 23505 mean when an INSERT fails, then?"]  # 1, with more
    emb = Embedder()
    vecs, bvecs = emb.encode(texts), emb.encode(blocked)
    assert curation.contaminated(texts, vecs, blocked, bvecs, cosine=0.9) == {
        1: "overlaps eval or gold (paraphrase)", 3: "overlaps eval or gold (paraphrase)",
        5: "overlaps eval or gold (paraphrase)", 7: "overlaps eval or gold (n-gram)"}
    assert curation.contaminated(texts, None, blocked, None, 0.9) == {7: "overlaps eval or gold (n-gram)"}
