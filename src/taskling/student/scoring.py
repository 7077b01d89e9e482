"""Label scoring for classify, batched: log P(label, then the end of the turn | prompt) for every
label of every conversation, with each prompt run once and its key/value cache shared by the
labels' continuations (a label is a few tokens; the prompt is most of the work).

`label_scores` gives the (items x labels) log-probabilities, `choose` the best label per item in
the row shape evaluate writes (the answer is always a label), `label_probs` the distribution over
the labels (a confidence: self-training and the loop's uncertainty read it).
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch

from . import infer
from .batches import MIN_SHARED


def end_token(tok) -> int:
    """The token that ends an assistant turn in the tokenizer's chat template."""
    template = getattr(tok, "chat_template", None) or ""
    vocab = tok.get_vocab()
    for t in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>"):
        if t in template and t in vocab:
            return vocab[t]
    return tok.eos_token_id if tok.eos_token_id is not None else infer.stop_token_ids(tok)[0]


def label_tails(tok, labels: list[str]) -> list[list[int]]:
    """Each label's tokens as the answer's, then the end of the turn."""
    end = end_token(tok)
    return [tok(lab, add_special_tokens=False)["input_ids"] + [end] for lab in labels]


def label_scores(model, tok, convs: list[list[dict]], labels: list[str], batch_size: int = 8) -> np.ndarray:
    """log P(label + end of turn | the conversation's prompt), items x labels."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else end_token(tok)
    return tail_scores(model, [infer.chat_ids(tok, c) for c in convs], label_tails(tok, labels), pad, batch_size)


@torch.inference_mode()
def tail_scores(model, prompts: list[list[int]], tails: list[list[int]], pad: int, batch_size: int = 8) -> np.ndarray:
    """log P(tail | prompt) for every tail after every prompt (token ids), prompts x tails."""
    device = next(model.parameters()).device
    k, width_t = len(tails), max(len(t) for t in tails)
    shared, prompts = common_prefix(model, prompts, device)
    out = np.zeros((len(prompts), k))
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths: little padding
    # tails as inputs: every tail token but the last is fed after the prompt; right-padded
    t_ids = torch.full((k, max(width_t - 1, 1)), pad, dtype=torch.long)
    t_mask = torch.zeros_like(t_ids)
    for j, t in enumerate(tails):
        if len(t) > 1:
            t_ids[j, :len(t) - 1] = torch.tensor(t[:-1])
            t_mask[j, :len(t) - 1] = 1
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        n, width = len(idx), max(len(prompts[i]) for i in idx)
        ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for r, i in enumerate(idx):  # left padding: every prompt ends at the same column
            ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[r, width - len(prompts[i]):] = 1
        past = None
        if shared is not None:  # [shared prefix][padding][the prompt's own tokens], positions counted past the pads
            past, p = copy.deepcopy(shared[0]), shared[1]
            past.batch_repeat_interleave(n)
            mask = torch.cat([torch.ones((n, p), dtype=torch.long), mask], dim=1)
        pos = (mask.cumsum(1) - 1).clamp(min=0)[:, mask.shape[1] - width:]
        with infer.autocast():
            first = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                          past_key_values=past, use_cache=True, logits_to_keep=1)  # only the last column is read
        logp0 = torch.log_softmax(first.logits[:, -1].float(), dim=-1)  # n x V: each tail's first token
        score = torch.stack([logp0[:, t[0]] for t in tails], dim=1)  # n x k
        if width_t > 1:
            cache = first.past_key_values
            cache.batch_repeat_interleave(k)
            lens = mask.sum(1).repeat_interleave(k)[:, None]
            tin, tm = t_ids.repeat(n, 1), t_mask.repeat(n, 1)
            full_mask = torch.cat([mask.repeat_interleave(k, 0), tm], dim=1)
            tpos = lens + torch.arange(tin.shape[1])[None, :]
            with infer.autocast():
                rest = model(input_ids=tin.to(device), attention_mask=full_mask.to(device),
                             position_ids=tpos.to(device), past_key_values=cache, use_cache=True)
            logp = torch.log_softmax(rest.logits.float(), dim=-1)  # (n*k) x (T-1) x V
            extra = torch.zeros(n * k)
            for row in range(n * k):
                t = tails[row % k]
                for p, token in enumerate(t[1:]):
                    extra[row] += logp[row, p, token]
            score = score + extra.view(n, k)
        out[idx] = score.cpu().numpy()
    return out


def held_out(model, rows: list[dict], tails: list[list[int]], pad: int, batch_size: int) -> tuple[float, float] | None:
    """Training's held-out check for a classify student, as it will be served: each row's prompt scored
    against every label (tail_scores). (the mean loss over the true labels' tokens, each row weighted as
    batches.token_mass weighs it; the share of rows whose best-scored label is theirs), or None when a
    row's answer is not one of the labels (the caller measures it by its completion tokens then)."""
    prompts, truth = [], []
    for r in rows:
        f = next(i for i, lab in enumerate(r["labels"]) if lab != -100)
        j = next((j for j, t in enumerate(tails) if r["input_ids"][f:f + len(t)] == t), None)
        if j is None:
            return None
        prompts.append(r["input_ids"][:f])
        truth.append(j)
    if not rows:
        return None
    was = model.training
    model.eval()
    try:
        with torch.compiler.set_stance("force_eager"):  # as batches.eval_loss: no inference-only graph
            sc = tail_scores(model, prompts, tails, pad, batch_size)
    finally:
        model.train(was)
    w = np.array([r.get("weight", 1.0) for r in rows])
    mine = sc[np.arange(len(rows)), truth]
    loss = float(-(w * mine).sum() / (w * np.array([len(tails[j]) for j in truth])).sum())
    return loss, float(np.mean(sc.argmax(axis=1) == np.array(truth)))


def common_prefix(model, prompts: list[list[int]], device) -> tuple[tuple | None, list[list[int]]]:
    """The prompts' common leading tokens (the system prompt, few-shot turns) run once: ((their key/value
    cache, their length), each prompt's own tokens after them), or (None, the prompts) when they share
    fewer than batches.MIN_SHARED tokens or there is one prompt. Each prompt keeps a token of its own."""
    if len(prompts) < 2:
        return None, prompts
    p = min(len(x) for x in prompts) - 1
    first = prompts[0]
    for x in prompts[1:]:
        p = next((j for j in range(p) if x[j] != first[j]), p)
    if p < MIN_SHARED:
        return None, prompts
    with infer.autocast():
        cache = model(input_ids=torch.tensor([first[:p]], device=device), use_cache=True,
                      logits_to_keep=1).past_key_values
    return (cache, p), [x[p:] for x in prompts]


def label_probs(scores: np.ndarray) -> np.ndarray:
    """The scores as a distribution over the labels (softmax per row)."""
    z = scores - scores.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def choose(model, tok, convs: list[list[dict]], labels: list[str], batch_size: int = 8) -> list[dict]:
    """Each conversation's answer constrained to the labels: the most likely one (rows as infer.generate's)."""
    t0 = time.perf_counter()
    scores = label_scores(model, tok, convs, labels, batch_size)
    each = (time.perf_counter() - t0) / max(len(convs), 1)
    rows = []
    for conv, sc in zip(convs, scores):
        best = int(np.argmax(sc))
        rows.append({"text": labels[best], "prompt_tokens": len(infer.chat_ids(tok, conv)),
                     "completion_tokens": len(tok(labels[best], add_special_tokens=False)["input_ids"]) + 1,
                     "latency_s": each, "finish_reason": "stop",
                     "label_probs": [round(float(x), 4) for x in label_probs(sc[None])[0]]})
    return rows
