"""Batched label scoring (student/scoring.py) gives the same log-probabilities as scoring each label
alone; a free answer that names no label falls back to it; the plain chat template puts the BOS
first for tokenizers that want one (Gemma)."""
from __future__ import annotations

import numpy as np

from taskling.core.config import TaskCfg
from taskling.student import infer, scoring
from taskling.student.models import PLAIN_TEMPLATE, PLAIN_TEMPLATE_BOS, adds_bos, ensure_chat_template, load_causal_lm

LABELS = ["sqlite", "node", "python", "sqlite-json"]
CONVS = [[{"role": "system", "content": "Route the question."}, {"role": "user", "content": q}]
         for q in ("How do I read a file?", "json_extract on a column, please", "datetime strftime")]


def test_batched_scores_match_one_label_at_a_time(tiny_model_dir):
    model, tok = load_causal_lm(tiny_model_dir)
    got = scoring.label_scores(model, tok, CONVS, LABELS, batch_size=2)
    for i, conv in enumerate(CONVS):
        one = infer.label_logprobs(model, tok, infer.chat_ids(tok, conv), LABELS)
        assert np.allclose(got[i], one, atol=2e-2), (got[i], one)
    rows = scoring.choose(model, tok, CONVS, LABELS)
    assert [r["text"] for r in rows] == [LABELS[int(np.argmax(g))] for g in got]
    assert all(abs(sum(r["label_probs"]) - 1) < 1e-3 for r in rows)


def test_the_student_of_a_labelled_task_answers_as_it_is_served_by_label_scoring(tiny_model_dir):
    """evaluate's and the playground's `student` is what `taskling serve`, predict and try give: every label
    scored as the whole answer (never the free text, which on the tiny random model is no label)."""
    from taskling.core import tasktype
    from taskling.core.config import Config
    from taskling.serving.systems import predict_local

    model, tok = load_causal_lm(tiny_model_dir)
    task = TaskCfg(name="t", description="Route.", type="classify", labels={k: k for k in LABELS})
    cfg = Config(task=task, sources=["x"])
    kind = tasktype.get("classify")
    got = scoring.label_scores(model, tok, CONVS, LABELS)
    student = predict_local(model, tok, "student", CONVS, kind, cfg)
    assert [r["text"] for r in student] == [LABELS[int(np.argmax(g))] for g in got]
    assert [r["text"] for r in predict_local(model, tok, "student-constrained", CONVS, kind, cfg)] == \
        [r["text"] for r in student]
    base = predict_local(model, tok, "base", CONVS, kind, cfg)  # the base model is asked, not scored
    assert all("label_probs" not in r for r in base) and any(r["text"] not in LABELS for r in base)


def test_plain_template_puts_the_bos_first_when_the_tokenizer_wants_one(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    tok.add_bos_token = True  # like Gemma's tokenizer: every text starts with the BOS
    tok._tokenizer.post_processor = None
    from tokenizers import processors

    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, tok.bos_token_id)])
    assert adds_bos(tok)
    ensure_chat_template(tok)
    assert tok.chat_template == PLAIN_TEMPLATE_BOS
    ids = infer.chat_ids(tok, CONVS[0])
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    plain = AutoTokenizer.from_pretrained(tiny_model_dir)  # no BOS added by this one: the template adds none
    plain.chat_template = None
    ensure_chat_template(plain)
    assert not adds_bos(plain) and plain.chat_template == PLAIN_TEMPLATE
