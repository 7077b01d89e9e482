"""export: how an artefact's answers on held-out items are judged against the
trained student's (the files themselves are checked in test_pipeline on the
tiny model and in test_e2e_smollm2 on the real one, GGUF included)."""
from __future__ import annotations

from taskling.stages.export import judge_artifact

WANT = ["sqlite", "node", "python", "sqlite"]


def test_lossless_artifacts_must_give_the_same_answers():
    assert judge_artifact("lossless", WANT, WANT, 0.75, 0.75, 0.05)["status"] == "match"
    flipped = ["sqlite", "node", "python", "node"]  # a near-tie flipped, to a right answer
    assert judge_artifact("lossless", flipped, WANT, 1.0, 0.75, 0.05) == \
        {"matches": "3/4", "metric_drop": -0.25, "status": "near-ties flipped"}
    # one changed answer that costs accuracy is a failure, however small the tolerance for quantized types
    assert judge_artifact("lossless", ["node", "node", "python", "sqlite"], WANT, 0.5, 0.75, 0.5)["status"] == "failed"


def test_quantized_artifacts_keep_the_metric_within_the_tolerance():
    worse = ["node", "node", "python", "sqlite"]
    assert judge_artifact("quantized", worse, WANT, 0.72, 0.75, 0.05)["status"] == "within tolerance"
    r = judge_artifact("quantized", worse, WANT, 0.5, 0.75, 0.05)
    assert r["status"] == "failed" and r["metric_drop"] == 0.25
