"""What the student learns from, and how much it got wrong: examples to token ids, batches, the loss.

`encode` writes an example through the student's chat template with labels only on the
completion; `batch_order` fixes every step's examples up front from the seed (so a checkpoint
plus a step number is enough to resume exactly); `collate` pads a batch; `completion_loss` is the
mean cross-entropy over the completion tokens only, each example weighted by its label weight
where it has one (`token_mass` is what that mean is over); `eval_loss` measures the held-out set.
"""
from __future__ import annotations

import random

import torch

from .. import tasks
from . import infer

MIN_SHARED = 8  # shared prefix tokens below which one more decoder call costs more than it saves


def encode(tok, system: str, ex: dict, max_len: int | None, messages: list[dict] | None = None) -> dict | None:
    """Prompt and completion ids through the chat template; labels mask the prompt. None when longer
    than `max_len` (None: no bound). `messages` replaces the closed-book prompt (an open-book example,
    student/openbook.py)."""
    msgs = messages or tasks.student_messages(system, ex["input"])
    prompt = infer.chat_ids(tok, msgs)
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": tasks.output_text(ex["output"])}],
                                   tokenize=True)
    full = list(full if isinstance(full, list) else full["input_ids"])
    if full[:len(prompt)] != prompt:
        # Templates that render the prompt differently once an answer follows:
        # fall back to prompt + answer tokens + end-of-turn.
        full = prompt + tok(tasks.output_text(ex["output"]), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    if max_len is not None and len(full) > max_len:
        return None
    out = {"input_ids": full, "labels": [-100] * len(prompt) + full[len(prompt):]}
    if ex.get("weight") is not None and float(ex["weight"]) != 1.0:  # the label model's confidence (label.weight)
        out["weight"] = float(ex["weight"])
    return out


def batch_order(n: int, batch_size: int, steps: int, lengths: list[int], seed: int) -> list[list[int]]:
    """Every step's example indices, decided up front: shuffled epochs, with
    batches drawn from runs of similar length so little compute goes to padding."""
    rng = random.Random(seed)
    order: list[list[int]] = []
    while len(order) < steps:
        idx = list(range(n))
        rng.shuffle(idx)
        window = batch_size * 8
        for w in range(0, n, window):
            part = sorted(idx[w:w + window], key=lambda i: lengths[i])
            batches = [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
            rng.shuffle(batches)
            order.extend(batches)
    return order[:steps]


def collate(items: list[dict], pad_id: int) -> dict:
    width = max(len(x["input_ids"]) for x in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, x in enumerate(items):
        n = len(x["input_ids"])
        ids[i, :n] = torch.tensor(x["input_ids"])
        labels[i, :n] = torch.tensor(x["labels"])
        mask[i, :n] = 1
    out = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    if any("weight" in x for x in items):  # only then: unweighted batches stay exactly as they were
        out["weights"] = torch.tensor([x.get("weight", 1.0) for x in items], dtype=torch.float32)
    return out


def token_mass(batch: dict) -> float:
    """What a batch's loss is a mean over: its completion tokens, each counted with its example's weight."""
    per_row = (batch["labels"][:, 1:] != -100).sum(dim=1).float()
    return float((per_row * batch["weights"]).sum()) if "weights" in batch else float(per_row.sum())


def _mean(losses: torch.Tensor, batch: dict, keep: torch.Tensor) -> torch.Tensor:
    """Per-token losses at the `keep` positions to one number: the plain mean, or weighted by example."""
    if "weights" not in batch:
        return losses.mean()
    w = batch["weights"].to(losses.device)[:, None].expand_as(keep)[keep]
    return (losses * w).sum() / w.sum().clamp_min(1e-8)


def unwrap(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def shared_prefix(batch: dict, decoder) -> int:
    """How many leading tokens to run once for the whole batch: the tokens every row has in common
    (the system prompt, few-shot turns), up to the position before the first completion token, so
    that every position whose output the loss reads is computed per row. 0 when not worth it: a
    single row, a short prefix, or a compiled decoder being trained (a second call shape would
    recompile it)."""
    ids = batch["input_ids"]
    if ids.size(0) < 2 or (torch.is_grad_enabled() and getattr(decoder, "_compiled_call_impl", None) is not None):
        return 0
    same = ((ids == ids[:1]).all(dim=0) & batch["attention_mask"].bool().all(dim=0)).int()
    common = int(same.cumprod(0).sum())
    has = (batch["labels"] != -100)
    first = int(torch.where(has.any(dim=1), has.int().argmax(dim=1), ids.size(1)).min())
    p = min(common, first - 1)
    return p if p >= MIN_SHARED else 0


def decode(decoder, batch: dict, p: int) -> torch.Tensor:
    """The decoder's last hidden states at positions p.. of every row: the first p tokens (the same
    in every row) run once and their keys and values are repeated per row, then each row's own
    tokens attend to them. The same sums as running every row whole (gradients into the shared part
    add up over the rows, as they would), for fewer tokens' compute."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if not p:
        return decoder(input_ids=ids, attention_mask=mask).last_hidden_state
    cache = decoder(input_ids=ids[:1, :p], use_cache=True).past_key_values
    cache.batch_repeat_interleave(ids.size(0))
    pos = torch.arange(p, ids.size(1), device=ids.device)[None].expand(ids.size(0), -1)
    return decoder(input_ids=ids[:, p:], attention_mask=mask, position_ids=pos, past_key_values=cache,
                   use_cache=True).last_hidden_state


def completion_loss(model, batch: dict, exact: list | None = None) -> torch.Tensor:
    """Mean cross-entropy over the completion tokens only. The output head runs
    on just those positions (a few per example for classify), not on every
    position of the vocabulary-wide logits: the same loss for a fraction of the
    head's compute and memory. Models without a separate decoder fall back to
    full logits. With `exact` (a list), appends per example whether every
    completion token is the model's top choice: greedy decoding's exact answer."""
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    base = unwrap(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings()
    if decoder is None or head is None:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        if exact is not None:
            hit = (logits[:, :-1].argmax(-1) == targets) | ~keep
            exact.extend(bool(h) for h in hit.all(dim=1))
        flat = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)),
                                                 targets.reshape(-1), ignore_index=-100, reduction="none")
        return _mean(flat.view_as(targets)[keep], batch, keep)
    p = shared_prefix(batch, decoder)
    hidden = decode(decoder, batch, p)  # positions p.. (nothing before p is ever a target's predecessor)
    logits = head(hidden[:, :-1][keep[:, p:]]).float()
    cap = getattr(base.config, "final_logit_softcapping", None)
    if cap:
        logits = cap * torch.tanh(logits / cap)
    if exact is not None:
        hit = torch.ones_like(targets, dtype=torch.bool)
        hit[keep] = logits.argmax(-1) == targets[keep]
        exact.extend(bool(h) for h in hit.all(dim=1))
    return _mean(torch.nn.functional.cross_entropy(logits, targets[keep], reduction="none"), batch, keep)


@torch.no_grad()
def eval_loss(model, data: list[dict], pad_id: int, batch_size: int) -> tuple[float, float] | None:
    """Mean completion-token loss over `data` (the held-out set), and the share
    of its examples greedy decoding would answer exactly."""
    if not data:
        return None
    device = next(model.parameters()).device
    model.eval()
    total, count, exact = 0.0, 0.0, []
    data = sorted(data, key=lambda e: len(e["input_ids"]))  # similar lengths together: little padding
    for b in range(0, len(data), batch_size):
        batch = {k: v.to(device) for k, v in collate(data[b:b + batch_size], pad_id).items()}
        # A compiled decoder would compile a second, inference-only graph for this: not worth it.
        with infer.autocast(), torch.compiler.set_stance("force_eager"):
            loss = completion_loss(model, batch, exact)
        n = token_mass(batch)
        total += float(loss) * n
        count += n
    model.train()
    return total / max(count, 1), sum(exact) / len(exact)
