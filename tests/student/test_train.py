"""train: the one training loop (student/train.py) through the train stage: early stopping on
held-out loss, the best checkpoint kept, resume after an early stop and after a kill, full
fine-tuning, checkpoints that load as data only, and the device check; on the tiny random Llama."""
from __future__ import annotations

import json
import shutil

import pytest
import safetensors.torch as st
from rich.console import Console

from taskling.core.config import load_config
from taskling.core.errors import TasklingError
from taskling.core.manifests import CurateCounts, CurateManifest
from taskling.core.workspace import Context, atomic_write_json, fingerprint, write_jsonl
from taskling.stages import train
from taskling.student.batches import collate, completion_loss, encode, token_mass
from taskling.student.train import Stopper, default_eval_every, default_steps
from taskling.student.trained import load_trained, trained_dir

QUIET = dict(console=Console(stderr=True, quiet=True))


def fake_curate(ctx: Context, train_rows: list[dict], eval_rows: list[dict]) -> None:
    out = ctx.stage_dir("curate")
    write_jsonl(out / "train.jsonl", train_rows)
    write_jsonl(out / "eval.jsonl", eval_rows)
    m = CurateManifest(run_id=ctx.run_id, round=ctx.round, fingerprint=fingerprint([train_rows, eval_rows]),
                       settings={}, inputs={}, outputs=["train.jsonl", "eval.jsonl"], digest="x", started="",
                       seconds=0.0, versions={}, counts=dict.fromkeys(CurateCounts.model_fields, 0), review=None,
                       kept_by_arm={}, rejections={}, rejected_samples={}, funnel=[],
                       split={"unit": "document", "held_out": 0, "groups": 0, "label_coverage": None,
                              "held_out_units": []},
                       labels={}, topics={}, language=None, grounding={}, pii=None, judge=None)
    atomic_write_json(out / "manifest.json", m.on_disk())


def rows(label: str, n: int) -> list[dict]:
    return [{"id": f"{label}-{i}", "input": f"question number {i} about {label} things", "output": label}
            for i in range(n)]


def diverging(workspace, **sets):
    """Train says every question is 'sqlite', held-out says 'node': the more it
    learns, the worse the held-out loss, so early stopping must fire."""
    cfg = load_config(workspace, [f"{k}={v}" for k, v in sets.items()])
    ctx = Context(cfg, **QUIET)
    fake_curate(ctx, rows("sqlite", 16), rows("node", 8))
    return cfg, ctx


def test_early_stopping_keeps_the_best_step(workspace):
    cfg, ctx = diverging(workspace, **{"train.steps": 40, "train.lr": 0.01, "train.eval_every": 2,
                                       "train.patience": 2, "train.checkpoint_every": 4})
    m = train.run(ctx)
    out = ctx.stage_dir("train")
    assert m.stopped_early is True and "did not improve for 2 evaluations" in m.stop_reason
    assert m.counts.steps < m.counts.planned_steps == 40
    losses = json.loads((out / "loss.json").read_text())
    evals = dict(map(tuple, losses["eval_loss"]))
    assert m.best_step == min(evals, key=evals.get) == losses["best_step"]
    assert m.counts.steps == max(evals)  # stopped at the evaluation that ran out of patience
    # a classify student is judged as it will be served: every label scored (scoring.held_out)
    assert "best-scored label" in m.selection["rule"]
    kept = st.load_file(out / "adapter" / "adapter_model.safetensors")
    best = st.load_file(out / "checkpoints" / "best" / "adapter_model.safetensors")
    assert kept.keys() == best.keys() and all((kept[k] == best[k]).all() for k in kept)
    # A re-run after the manifest is lost resumes from the last checkpoint and trains no further.
    (out / "manifest.json").unlink()
    again = train.run(Context(cfg, **QUIET))
    assert again.counts.steps == m.counts.steps and again.best_step == m.best_step
    assert json.loads((out / "loss.json").read_text()) == losses


def test_without_patience_it_trains_every_step_and_keeps_the_last(workspace):
    cfg, ctx = diverging(workspace, **{"train.steps": 8, "train.lr": 0.01, "train.eval_every": 2,
                                       "train.patience": "null", "train.best_checkpoint": "false"})
    m = train.run(ctx)
    assert m.stopped_early is False and m.counts.steps == 8 and m.best_step == 8
    assert len(json.loads((ctx.stage_dir("train") / "loss.json").read_text())["eval_loss"]) == 4


def test_nothing_needing_a_curve_means_one_held_out_loss_at_the_end(workspace):
    cfg, ctx = diverging(workspace, **{"train.steps": 6, "train.lr": 0.01,
                                       "train.patience": "null", "train.best_checkpoint": "false"})
    m = train.run(ctx)
    assert json.loads((ctx.stage_dir("train") / "loss.json").read_text())["eval_loss"] == [[6, m.eval_loss]]
    assert m.compiled is False  # 6 steps: compiling would cost more than it saves


def test_compiled_decoder_trains_the_same_curve_as_eager(workspace):
    sets = {"train.steps": 4, "train.lr": 0.01, "train.patience": "null", "train.best_checkpoint": "false"}
    cfg, ctx = diverging(workspace, **sets)
    eager = train.run(ctx)
    eager_loss = json.loads((ctx.stage_dir("train") / "loss.json").read_text())
    cfg, ctx = diverging(workspace, **sets, **{"train.compile": "true"})
    compiled = train.run(ctx)
    assert compiled.compiled is True and compiled.compile_seconds > 0
    got = json.loads((ctx.stage_dir("train") / "loss.json").read_text())
    assert [s for s, _ in got["loss"]] == [1, 2, 3, 4]
    assert [v for _, v in got["loss"]] == pytest.approx([v for _, v in eager_loss["loss"]], rel=0.05)
    assert compiled.eval_loss == pytest.approx(eager.eval_loss, rel=0.05)


def test_a_failing_compile_falls_back_to_eager(workspace, monkeypatch):
    import torch

    def broken(fn, *a, **k):
        def call(*args, **kwargs):
            raise RuntimeError("inductor: no working C++ compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    cfg, ctx = diverging(workspace, **{"train.steps": 2, "train.compile": "true", "train.patience": "null"})
    m = train.run(ctx)
    assert m.compiled is False and m.counts.steps == 2 and m.final_loss is not None


def test_default_budget_follows_the_data_size():
    assert default_steps(10, 8) == 30            # a floor: small sets are not under-trained
    assert default_steps(200, 8) == 100          # about four passes
    assert default_steps(100_000, 8) == 300      # a ceiling: early stopping decides the rest
    assert default_eval_every(30) == 4 and default_eval_every(4) == 1


def test_full_finetune_trains_every_weight_and_loads_as_one_model(workspace):
    cfg, ctx = diverging(workspace, **{"train.steps": 4, "train.full_finetune": "true", "train.eval_every": 2})
    m = train.run(ctx)
    out = ctx.stage_dir("train")
    assert m.mode == "full" and m.lr == 5e-5 and (out / "model" / "model.safetensors").exists()
    assert not (out / "adapter").exists() and trained_dir(out) == out / "model"
    model, tok = load_trained(out, cfg.student.model)
    assert m.counts.trainable_params == sum(p.numel() for p in model.parameters())


def test_cuda_asked_for_without_a_gpu_says_so(workspace):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg, ctx = diverging(workspace, **{"train.device": "cuda"})
    with pytest.raises(TasklingError, match="no CUDA GPU"):
        train.run(ctx)


def test_a_student_without_a_chat_template_gets_one_used_everywhere(tmp_path, tiny_model_dir):
    import shutil

    from taskling.student import infer
    from taskling.student.models import load_causal_lm

    plain = tmp_path / "plain-model"
    shutil.copytree(tiny_model_dir, plain)
    cfg_path = plain / "tokenizer_config.json"
    tc = json.loads(cfg_path.read_text())
    tc.pop("chat_template", None)
    cfg_path.write_text(json.dumps(tc))
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    model, tok = load_causal_lm(plain)
    msgs = [{"role": "system", "content": "Route it."}, {"role": "user", "content": "How do I hash?"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "System: Route it.\nUser: How do I hash?\nAssistant:" and infer.chat_ids(tok, msgs)
    enc = encode(tok, "Route it.", {"input": "How do I hash?", "output": "node"}, 128)
    completion = [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != -100]
    assert tok.decode(completion).strip().startswith("node") and tok.eos_token_id in completion[-2:]


def test_completion_loss_equals_the_full_logits_loss(tiny_model_dir):
    import torch

    from taskling.student.models import load_causal_lm

    model, tok = load_causal_lm(tiny_model_dir)
    data = [encode(tok, "Route it.", {"input": f"question {i} about hashing", "output": ["sqlite", "node"][i % 2]},
                         128) for i in range(4)]
    batch = collate(data, tok.pad_token_id)
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        ours = completion_loss(model, batch)
    assert abs(float(full) - float(ours)) < 1e-5


def test_example_weights_scale_each_examples_share_of_the_loss(tiny_model_dir):
    import torch

    from taskling.student.models import load_causal_lm

    model, tok = load_causal_lm(tiny_model_dir)
    exs = [{"input": f"question {i} about hashing", "output": ["sqlite", "node"][i % 2]} for i in range(4)]
    plain = [encode(tok, "Route it.", ex, 128) for ex in exs]
    assert all("weight" not in e for e in plain) and "weights" not in collate(plain, tok.pad_token_id)
    weighted = [encode(tok, "Route it.", {**ex, "weight": w}, 128) for ex, w in zip(exs, (1.0, 0.5, 0.0, 2.0))]
    with torch.no_grad():
        per = [float(completion_loss(model, collate([e], tok.pad_token_id))) for e in plain]
        n = [token_mass(collate([e], tok.pad_token_id)) for e in plain]
        batch = collate(weighted, tok.pad_token_id)
        got = float(completion_loss(model, batch))
    w = (1.0, 0.5, 0.0, 2.0)
    want = sum(wi * ni * li for wi, ni, li in zip(w, n, per)) / sum(wi * ni for wi, ni in zip(w, n))
    assert abs(got - want) < 1e-5
    assert token_mass(batch) == sum(wi * ni for wi, ni in zip(w, n))
    # a weight of 0 removes the example: the same loss as without it
    without = [weighted[i] for i in (0, 1, 3)]
    with torch.no_grad():
        assert abs(float(completion_loss(model, collate(without, tok.pad_token_id))) - got) < 1e-5


def test_exact_answers_from_the_loss_pass_are_what_greedy_decoding_writes(tiny_model_dir):
    import torch

    from taskling.student import infer
    from taskling import tasks
    from taskling.student.models import load_causal_lm

    model, tok = load_causal_lm(tiny_model_dir)
    rows = [{"input": f"question {i} about hashing", "output": "sqlite"} for i in range(3)]
    data = [encode(tok, "Route it.", r, 128) for r in rows]
    # Random weights never end an answer: teach the tiny model these three, so greedy decoding writes and ends them.
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(80):
        completion_loss(model, collate(data, tok.pad_token_id)).backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    greedy = infer.generate(model, tok, [tasks.student_messages("Route it.", r["input"]) for r in rows],
                            max_new_tokens=8)
    assert [(g["text"].strip(), g["finish_reason"]) for g in greedy] == [("sqlite", "stop")] * 3
    wrong = [encode(tok, "Route it.", {**r, "output": "node"}, 128) for r in rows]
    for batch, want in ((data, [True] * 3), (wrong, [False] * 3), ([data[0], wrong[1]], [True, False])):
        exact: list = []
        with torch.no_grad():
            completion_loss(model, collate(batch, tok.pad_token_id), exact)
        assert exact == want


def test_the_best_step_is_chosen_by_exact_answers_then_loss():
    s = Stopper(patience=2)
    assert s.update(4, 0.30, 0.5) and s.best_step == 4
    assert s.update(8, 0.45, 0.7) and s.best_step == 8      # more answers right, though the loss rose
    assert not s.update(12, 0.20, 0.6) and s.since == 1     # lower loss, fewer answers right: not better
    assert s.update(16, 0.40, 0.7) and s.best_step == 16    # as many right, lower loss
    restored = Stopper(2, s.state())
    assert (restored.best_step, restored.best_exact, restored.best_loss) == (16, 0.7, 0.40)


def test_a_run_cut_short_resumes_to_the_same_steps_and_weights(workspace):
    import torch

    cfg, ctx = diverging(workspace, **{"train.steps": 8, "train.lr": 0.01, "train.checkpoint_every": 3,
                                       "train.patience": "null", "train.best_checkpoint": "false",
                                       "train.lora.dropout": 0.1})
    whole = train.run(ctx)
    out = ctx.stage_dir("train")
    losses = json.loads((out / "loss.json").read_text())
    weights = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    kept = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert kept == ["step-000006", "step-000008"]  # the newest two
    for ck in kept:  # a checkpoint's state is data only: it loads without running any code
        state = torch.load(out / "checkpoints" / ck / "state.pt", weights_only=True)
        assert set(state) == {"step", "optimizer", "scheduler", "torch_rng", "python_rng", "history"}
    # as if killed after step 6: the last checkpoint, the result and the manifest never written
    (out / "manifest.json").unlink()
    shutil.rmtree(out / "checkpoints" / "step-000008")
    shutil.rmtree(out / "adapter")
    again = train.run(Context(cfg, **QUIET))
    assert again.counts.steps == whole.counts.steps == 8
    assert json.loads((out / "loss.json").read_text()) == losses  # dropout and order: the same draws
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == weights


def test_a_planted_checkpoint_state_is_refused_not_run(workspace, tmp_path):
    import torch

    cfg, ctx = diverging(workspace, **{"train.steps": 4, "train.checkpoint_every": 2, "train.patience": "null"})
    train.run(ctx)
    out = ctx.stage_dir("train")
    (out / "manifest.json").unlink()
    shutil.rmtree(out / "checkpoints" / "step-000004")
    marker = tmp_path / "ran"

    class Planted:
        def __reduce__(self):  # what unpickling would call: makes the marker file
            return (marker.touch, ())

    torch.save({"step": 2, "history": Planted()}, out / "checkpoints" / "step-000002" / "state.pt")
    with pytest.raises(TasklingError, match=r"step-000002/state.pt: not a checkpoint taskling wrote"):
        train.run(Context(cfg, **QUIET))
    assert not marker.exists()


def test_the_batchs_shared_prefix_runs_once_for_the_same_loss_and_gradients(tiny_model_dir):
    """completion_loss runs the leading tokens every row shares (the system prompt) once and repeats their
    keys and values per row: the loss and every gradient are those of the model's own loss over whole rows."""
    import torch

    from taskling.student.batches import shared_prefix, unwrap
    from taskling.student.models import load_causal_lm

    model, tok = load_causal_lm(tiny_model_dir)
    system = "Route the developer's question to the manual that answers it. Answer with the label only."
    data = [encode(tok, system, {"input": f"question {i} about hashing" + " and more" * i,
                                 "output": ["sqlite", "node"][i % 2]}, 256) for i in range(4)]
    batch = collate(data, tok.pad_token_id)
    decoder = unwrap(model).get_decoder()
    p = shared_prefix(batch, decoder)
    ids = batch["input_ids"]
    common = next(j for j in range(ids.size(1)) if len(set(ids[:, j].tolist())) > 1)
    assert 8 <= p == common  # the prompts part before the first word that differs
    shapes: list = []
    hook = decoder.register_forward_pre_hook(lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                             with_kwargs=True)
    ours = completion_loss(model, batch)
    ours.backward()
    hook.remove()
    assert shapes == [(1, p), (4, ids.size(1) - p)]
    mine = {n: w.grad.clone() for n, w in model.named_parameters() if w.grad is not None}
    model.zero_grad()
    full = model(input_ids=ids, attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    full.backward()
    assert abs(float(full) - float(ours)) < 1e-5
    assert mine and all(torch.allclose(mine[n], w.grad, atol=1e-6) for n, w in model.named_parameters()
                        if w.grad is not None)
    # rows identical up to their answers: the prefix stops before the last prompt token, whose output the loss reads
    twins = collate([data[0], {**data[0]}], tok.pad_token_id)
    first = data[0]["labels"].index(next(x for x in data[0]["labels"] if x != -100))
    assert shared_prefix(twins, decoder) == first - 1
    assert shared_prefix(collate(data[:1], tok.pad_token_id), decoder) == 0  # one row: nothing to share


def test_frozen_weights_stored_as_autocast_reads_them_give_the_same_loss_and_gradients(tiny_model_dir, monkeypatch):
    """infer.cast_weights keeps the frozen Linear weights in bf16, which autocast would cast them to on every
    call: the loss and every LoRA gradient are bit for bit the same; the trained weights and the embedding stay
    fp32, and a head tied to it gets a bf16 copy of its own; with TASKLING_FP32=1 (no autocast) nothing is cast."""
    import torch
    from peft import LoraConfig, get_peft_model

    from taskling.student import infer
    from taskling.student.models import load_causal_lm

    if not infer.bf16_supported():
        pytest.fail("this test needs a CPU with bf16 (the suite's machine has one)")
    model, tok = load_causal_lm(tiny_model_dir)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    for n, w in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(w, std=0.02)
    batch = collate([encode(tok, "Route it.", {"input": f"question {i} about hashing", "output": "node"}, 128)
                     for i in range(4)], tok.pad_token_id)

    def step():
        model.zero_grad()
        with infer.autocast():
            loss = completion_loss(model, batch)
        loss.backward()
        return float(loss), {n: w.grad.clone() for n, w in model.named_parameters() if w.grad is not None}

    monkeypatch.setenv("TASKLING_FP32", "1")
    assert infer.cast_weights(model, frozen_only=True) == 0
    monkeypatch.delenv("TASKLING_FP32")
    before = step()
    frozen = sum(isinstance(m, torch.nn.Linear) and not m.weight.requires_grad for m in model.modules())
    cast = infer.cast_weights(model, frozen_only=True)
    head, emb = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert cast >= 1 and all(w.dtype == torch.float32 for w in model.parameters() if w.requires_grad)
    assert cast == frozen and model.config.tie_word_embeddings  # the tiny model's head is tied: copied, not cast
    assert head.dtype == torch.bfloat16 and emb.dtype == torch.float32 and head.data_ptr() != emb.data_ptr()
    assert not head.requires_grad and torch.equal(head, emb.detach().to(torch.bfloat16))
    after = step()
    assert after[0] == before[0] and all(torch.equal(after[1][n], g) for n, g in before[1].items())


def test_a_model_for_inference_answers_bit_for_bit_as_before_with_its_tied_head_copied(tiny_model_dir):
    """infer.for_inference: the logits under autocast are the same bits as the untouched fp32 model's; the
    tied head is a bf16 copy of its own and the embedding (its input lookup) is the fp32 tensor it was."""
    import torch

    from taskling.student import infer
    from taskling.student.models import load_causal_lm

    if not infer.bf16_supported():
        pytest.fail("this test needs a CPU with bf16 (the suite's machine has one)")
    model, tok = load_causal_lm(tiny_model_dir)
    emb = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is emb
    ids = torch.tensor([tok.encode("How do I hash data with createHash?")] * 2)
    with torch.inference_mode(), infer.autocast():
        before = model(input_ids=ids).logits
    infer.for_inference(model)
    head = model.get_output_embeddings().weight
    assert head.dtype == torch.bfloat16 and model.get_input_embeddings().weight is emb and emb.dtype == torch.float32
    with torch.inference_mode(), infer.autocast():
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)
