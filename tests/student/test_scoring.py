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


SYSTEM = ("Route the developer's question to the manual that answers it: the SQLite manual, the Node.js API "
          "docs or the Python library reference. Answer with one label.")
LONG = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
        for q in ("How do I read a file?", "json_extract on a column of a table I made yesterday, please",
                  "datetime strftime", "How do I hash a password with a salt in node?", "fts5")]


def decoder_calls(model) -> list[tuple]:
    """The (rows, tokens) of every call the model's decoder stack runs from now on."""
    calls: list[tuple] = []
    model.get_decoder().register_forward_pre_hook(
        lambda mod, args, kw: calls.append(tuple((kw.get("input_ids") if "input_ids" in kw else args[0]).shape)),
        with_kwargs=True)
    return calls


def test_the_prompts_common_prefix_runs_once_and_every_prompt_scores_as_if_run_whole(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("TASKLING_FP32", "1")  # exact sums: bf16 would round each way differently
    model, tok = load_causal_lm(tiny_model_dir)
    prompts = [infer.chat_ids(tok, c) for c in LONG]
    p = next(j for j in range(min(map(len, prompts))) if len({x[j] for x in prompts}) > 1)
    assert p >= 20  # the system turn and the user turn's opening
    calls = decoder_calls(model)
    got = scoring.label_scores(model, tok, LONG, LABELS, batch_size=2)
    assert calls[0] == (1, p) and all(rows > 1 or n < p for rows, n in calls[1:])  # the prefix once, then none of it
    for i, conv in enumerate(LONG):  # the independent path: each label appended to the whole prompt
        assert np.allclose(got[i], infer.label_logprobs(model, tok, prompts[i], LABELS), atol=1e-4)


def test_the_held_out_check_of_a_classify_student_scores_labels_as_served(tiny_model_dir, monkeypatch):
    from taskling.student.batches import encode

    monkeypatch.setenv("TASKLING_FP32", "1")
    model, tok = load_causal_lm(tiny_model_dir)
    truth = [0, 1, 2, 3, 1]
    rows = [encode(tok, SYSTEM, {"input": c[1]["content"], "output": LABELS[t], "weight": w}, 256)
            for c, t, w in zip(LONG, truth, (1.0, 0.5, 1.0, 2.0, 1.0))]
    tails = scoring.label_tails(tok, LABELS)
    loss, right = scoring.held_out(model, rows, tails, tok.pad_token_id, batch_size=2)
    each = [infer.label_logprobs(model, tok, infer.chat_ids(tok, c), LABELS) for c in LONG]
    assert right == np.mean([int(np.argmax(e)) == t for e, t in zip(each, truth)])
    w = [r.get("weight", 1.0) for r in rows]
    want = -sum(wi * e[t] for wi, e, t in zip(w, each, truth)) / sum(wi * len(tails[t]) for wi, t in zip(w, truth))
    assert abs(loss - want) < 1e-4
    # an answer that is not a label: no scored check (training measures its completion tokens instead)
    other = encode(tok, SYSTEM, {"input": "anything", "output": "not-a-label"}, 256)
    assert scoring.held_out(model, rows + [other], tails, tok.pad_token_id, batch_size=2) is None
