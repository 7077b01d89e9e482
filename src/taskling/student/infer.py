"""Batched chat generation with a Hugging Face model: one code path for the
transformers backend, evaluation and the server, so the student is prompted
the same way everywhere (its tokenizer's chat template, greedy by default).
"""
from __future__ import annotations

import contextlib
import os
import time

import torch

from ..core.executor import cpu_threads


def set_threads(threads: int | None) -> None:
    torch.set_num_threads(cpu_threads(threads))


def bf16_supported() -> bool:
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # older builds: no probe, stay in fp32
        return False


def autocast(enabled: bool | None = None):
    """bf16 autocast where the hardware has it (measured ~5x faster here), else nothing."""
    if enabled is None:
        enabled = bf16_supported() and os.environ.get("TASKLING_FP32") != "1"
    if not enabled:
        return contextlib.nullcontext()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16)


def cast_weights(model, frozen_only: bool = False) -> int:
    """Store the model's Linear weights in bf16 when autocast runs it in bf16 (else leave them): autocast casts
    each one on every call anyway (a third of a small batch's forward here), to the same values, so every
    result is bit for bit what it was. An output head tied to the embedding gets a bf16 copy of its own (the
    embedding, read as it is, stays fp32): cast on every call, it cost about a quarter of each decoded token
    of SmolLM2-135M (its 49,152 x 576 head) and more with Gemma 3's 262,144-row head. `frozen_only`
    leaves the ones being trained (and a tied head whose embedding trains). Returns how many were cast."""
    if not bf16_supported() or os.environ.get("TASKLING_FP32") == "1":
        return 0
    shared = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    n = 0
    for m in model.modules():
        w = getattr(m, "weight", None)
        if not isinstance(m, torch.nn.Linear) or w is None or w.dtype != torch.float32 \
                or (frozen_only and w.requires_grad):
            continue
        if id(w) in shared:  # a copy: the embedding keeps its tensor
            m.weight = torch.nn.Parameter(w.detach().to(torch.bfloat16), requires_grad=False)
        else:
            m.weight.data = w.data.to(torch.bfloat16)
        n += 1
    return n


def for_inference(model):
    """The model in eval mode with its weights as autocast reads them (cast_weights): for answering, never
    for saving (a merge or an export wants the weights as they were)."""
    model.eval()
    cast_weights(model)
    return model


def chat_ids(tok, messages: list[dict], completion: str | None = None) -> list[int]:
    """Token ids of the prompt (with the generation prompt) for `messages`."""
    out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if not isinstance(out, list):
        out = out["input_ids"]
    return list(out)


def stop_token_ids(tok) -> list[int]:
    ids = {tok.eos_token_id}
    for t in ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>"):
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i != tok.unk_token_id and i is not None and i >= 0:
            ids.add(i)
    return sorted(i for i in ids if i is not None)


def _ll_tokenizer(tok, stops: list[int]):
    """llguidance's view of a fast HF tokenizer (about 1 s to build: cached on the tokenizer)."""
    cached = getattr(tok, "_taskling_ll", None)
    if cached is None:
        import llguidance.hf

        cached = llguidance.hf.from_tokenizer(tok, eos_token=stops)
        tok._taskling_ll = cached
    return cached


def schema_grammar(schema: dict) -> str:
    """llguidance's grammar for JSON valid against `schema`, with compact separators as the student
    was trained (json.dumps: ", " and ": ", keys sorted)."""
    import llguidance

    opts = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}
    return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=opts)


def lark_grammar(text: str) -> str:
    """llguidance's grammar for a Lark grammar text (tasks.openbook.span_lark)."""
    import llguidance

    return llguidance.LLMatcher.grammar_from_lark(text)


class Constraint:
    """A logits processor for transformers' generate that lets each row emit only tokens that keep its
    text a prefix of a sentence of its grammar (one llguidance grammar per row: `grammars`), and the end
    of the turn once the sentence is complete (llguidance, the engine behind llama.cpp's and vLLM's
    structured output)."""

    def __init__(self, tok, grammars: list[str], prompt_width: int, stops: list[int], what: str = "grammar"):
        import llguidance

        lltok = _ll_tokenizer(tok, stops)
        self.matchers = [llguidance.LLMatcher(lltok, g, log_level=0) for g in grammars]
        bad = next((m for m in self.matchers if m.is_error()), None)
        if bad is not None:
            from ..core.errors import TasklingError

            raise TasklingError(f"constrained decoding: the {what} is not usable: {bad.get_error()}")
        self.width = prompt_width
        self.words = (lltok.vocab_size + 31) // 32
        self.bits = torch.arange(32, dtype=torch.int32)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import llguidance.torch

        if input_ids.shape[1] > self.width:  # the token each row just emitted
            for i, m in enumerate(self.matchers):
                if not m.is_stopped() and not m.is_error():
                    m.consume_token(int(input_ids[i, -1]))
        mask = torch.full((len(self.matchers), self.words), -1, dtype=torch.int32)
        for i, m in enumerate(self.matchers):
            if not m.is_error():  # a row in error (cannot happen with its own mask) goes unconstrained
                llguidance.torch.fill_next_token_bitmask(m, mask, i)
        allowed = ((mask.unsqueeze(-1) >> self.bits) & 1).bool().reshape(len(self.matchers), -1)
        width = scores.shape[1]
        if allowed.shape[1] < width:
            allowed = torch.cat([allowed, allowed.new_zeros(allowed.shape[0], width - allowed.shape[1])], dim=1)
        return scores.masked_fill(~allowed[:, :width].to(scores.device), float("-inf"))


def schema_constraint(tok, schema: dict, rows: int, prompt_width: int, stops: list[int]) -> Constraint:
    """The Constraint of JSON valid against `schema`, for `rows` rows."""
    return Constraint(tok, [schema_grammar(schema)] * rows, prompt_width, stops, "JSON schema")


@torch.inference_mode()
def generate(model, tok, conversations: list[list[dict]], max_new_tokens: int = 64,
             temperature: float = 0.0, seed: int = 0, batch_size: int = 8,
             json_schema: dict | None = None, grammars: list[str] | None = None) -> list[dict]:
    """Answers for each conversation: text, token counts and latency per item.
    With `json_schema`, decoding is constrained to JSON valid against it; with `grammars` (one Lark
    grammar text per conversation: tasks.openbook.span_lark), each answer to its own grammar."""
    device = next(model.parameters()).device
    results: list[dict] = []
    stops = stop_token_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    for b in range(0, len(conversations), batch_size):
        batch = [chat_ids(tok, conv) for conv in conversations[b:b + batch_size]]
        width = max(len(x) for x in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, x in enumerate(batch):  # left padding: every row ends at the prompt's end
            ids[i, width - len(x):] = torch.tensor(x)
            mask[i, width - len(x):] = 1
        kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=stops)
        if json_schema is not None or grammars is not None:
            from transformers import LogitsProcessorList

            proc = schema_constraint(tok, json_schema, len(batch), width, stops) if grammars is None else \
                Constraint(tok, [lark_grammar(g) for g in grammars[b:b + batch_size]], width, stops)
            kwargs["logits_processor"] = LogitsProcessorList([proc])
        if temperature > 0:
            torch.manual_seed(seed)
            kwargs.update(do_sample=True, temperature=temperature, top_p=0.95)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        t0 = time.perf_counter()
        with autocast():
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        dt = time.perf_counter() - t0
        for i, x in enumerate(batch):
            new = out[i, width:].tolist()
            n = next((k for k, t in enumerate(new) if t in stops), len(new))
            results.append({"text": tok.decode(new[:n], skip_special_tokens=True).strip(),
                            "prompt_tokens": len(x), "completion_tokens": n,
                            "latency_s": dt / len(batch), "finish_reason": "stop" if n < len(new) else "length"})
    return results


@torch.inference_mode()
def label_logprobs(model, tok, prompt: list[int], choices: list[str], batch_size: int = 8) -> list[float]:
    """log P(choice, then the end of the turn | prompt) for each choice: sum of its
    token log-probs, one forward pass per choice, right-padded in batches."""
    device = next(model.parameters()).device
    end = stop_token_ids(tok)
    end_id = tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tok.get_vocab() else end[0]
    tails = [tok(c, add_special_tokens=False)["input_ids"] + [end_id] for c in choices]
    pad = tok.pad_token_id if tok.pad_token_id is not None else end[0]
    scores = []
    for b in range(0, len(tails), batch_size):
        seqs = [prompt + t for t in tails[b:b + batch_size]]
        width = max(len(x) for x in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, x in enumerate(seqs):
            ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
        with autocast():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        for i, t in enumerate(tails[b:b + batch_size]):
            pos = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(t), device=logp.device)
            scores.append(float(logp[i, pos, torch.tensor(t, device=logp.device)].sum()))
    return scores


def choose(model, tok, conversations: list[list[dict]], choices: list[str], batch_size: int = 8) -> list[dict]:
    """Constrained decoding for a closed set: each conversation's answer is the
    choice whose tokens (and the end of the turn) the model finds most likely
    (label_logprobs), so it is always one of `choices`."""
    results = []
    for conv in conversations:
        prompt = chat_ids(tok, conv)
        t0 = time.perf_counter()
        scores = label_logprobs(model, tok, prompt, choices, batch_size)
        best = max(range(len(choices)), key=lambda k: scores[k])
        results.append({"text": choices[best], "prompt_tokens": len(prompt),
                        "completion_tokens": len(tok(choices[best], add_special_tokens=False)["input_ids"]) + 1,
                        "latency_s": time.perf_counter() - t0, "finish_reason": "stop"})
    return results


def label_probabilities(model, tok, conversation: list[dict], choices: list[str], batch_size: int = 8) -> dict[str, float]:
    """P(label | conversation) for each of a closed set's labels: label_logprobs normalised over the
    set (the model's belief among these labels only, which is what constrained decoding picks from)."""
    scores = torch.tensor(label_logprobs(model, tok, chat_ids(tok, conversation), choices, batch_size))
    probs = torch.softmax(scores, dim=0).tolist()
    return dict(sorted(zip(choices, probs), key=lambda kv: -kv[1]))
