"""Several chat requests decoded together on one llama.cpp context: continuous batching.

Decoding a small model one sequence at a time reads every weight once per token, and the cores wait
on memory; with one sequence id per request, each llama.cpp decode call advances every active
request by a token (and takes in the prompts of the requests that just started) for little more
than the price of one. A request that finishes frees its slot (its sequence's cache is dropped) for
the next waiting one, so slots stay busy until the queue runs dry.

Each request is what llama-cpp-python's create_chat_completion would make of it: the prompt the
chat formatter writes, tokenized as it tokenizes it; the same sampler chain (penalties, the JSON
schema's grammar, then greedy at temperature 0, else top-k 40, typical 1, top-p 0.95, min-p 0.05,
temperature and a draw seeded by the request's seed); stopped by an end-of-generation token, a stop
string (the text cut before it) or max_tokens ("length"), and refused when its prompt does not fit
the context. So a request gets the answer the one-at-a-time path gives it, up to the last bits of
the arithmetic, which batched matrix products round in another order.
"""
from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field

from . import OnResult, Request, Result

TOP_K, TYPICAL_P, TOP_P, MIN_P = 40, 1.0, 0.95, 0.05  # create_chat_completion's defaults
PENALTY_LAST_N = 64


@dataclass
class Seq:
    """One request in a slot: its prompt still to feed, its sampler, what it wrote."""
    index: int
    request: Request
    prompt: list[int]
    stops: list[str]
    sampler: object
    max_tokens: int
    t0: float
    fed: int = 0                        # prompt tokens already in the cache
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    done: str | None = None             # the finish reason once finished


class BatchDecoder:
    """A context with `slots` sequences of `n_ctx` tokens each, over the model an open
    llama_cpp.Llama holds (its weights are shared, not loaded again)."""

    def __init__(self, llm, slots: int, n_ctx: int, threads: int, render):
        import llama_cpp
        from llama_cpp import _internals

        self.llm, self.slots, self.n_ctx, self.render = llm, slots, n_ctx, render
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx * slots
        params.n_batch = params.n_ubatch = min(512, n_ctx * slots)
        params.n_seq_max = slots
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = False  # each sequence its own n_ctx: a long one cannot starve the others
        self.ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self.batch = _internals.LlamaBatch(n_tokens=params.n_batch, embd=0, n_seq_max=1, verbose=False)
        self.n_batch = params.n_batch
        self.vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        self.lib = llama_cpp

    def close(self) -> None:
        self.batch.close()
        self.ctx.close()

    # -- one request as the high-level API would make it -----------------------------------------------
    def start(self, i: int, r: Request, json_mode: bool, extra_stops: list[str]) -> Seq | Result:
        from llama_cpp import _internals

        t0 = time.perf_counter()
        fmt = self.render(messages=r.messages)
        prompt = self.llm.tokenize(fmt.prompt.encode("utf-8"), add_bos=not fmt.added_special, special=True)
        if len(prompt) >= self.n_ctx:
            return Result("", latency_s=time.perf_counter() - t0, error_kind="bad_request",
                          error=f"llama.cpp refused the request: Requested tokens ({len(prompt)}) exceed context "
                                f"window of {self.n_ctx}")
        fstops = fmt.stop if isinstance(fmt.stop, list) else [fmt.stop] if fmt.stop else []
        stops = [s for s in list(r.stop) + list(extra_stops) + fstops if s]
        s = _internals.LlamaSampler()
        s.add_penalties(n_vocab=self.llm.n_vocab(), penalty_last_n=PENALTY_LAST_N, penalty_repeat=1.0,
                        penalty_freq=0.0, penalty_present=0.0)
        if r.json_schema is not None and json_mode:
            s.add_grammar(self.llm._model, grammar(r.json_schema))
        if r.temperature == 0:
            s.add_greedy()
        else:
            s.add_top_k(TOP_K)
            s.add_typical(TYPICAL_P, 1)
            s.add_top_p(TOP_P, 1)
            s.add_min_p(MIN_P, 1)
            s.add_temp(r.temperature)
            s.add_dist(r.seed)
        return Seq(i, r, prompt, stops, s, min(r.max_tokens, self.n_ctx - len(prompt)), t0)

    def generate(self, requests: list[Request], on_result: OnResult | None, json_mode: bool,
                 extra_stops: list[str]) -> list[Result]:
        out: list[Result | None] = [None] * len(requests)
        waiting = deque(range(len(requests)))
        active: dict[int, Seq] = {}
        free = list(range(self.slots))[::-1]

        def finish(slot: int | None, i: int, res: Result) -> None:
            out[i] = res
            if slot is not None:
                self.ctx.kv_cache_seq_rm(slot, -1, -1)
                free.append(slot)
            if on_result:
                on_result(i, res)

        while waiting or active:
            while waiting and free:
                i = waiting.popleft()
                try:
                    seq = self.start(i, requests[i], json_mode, extra_stops)
                except ValueError as e:  # a template or a grammar that will not render: as the one-at-a-time path
                    seq = Result("", error=f"llama.cpp refused the request: {e}", error_kind="bad_request")
                if isinstance(seq, Result):
                    finish(None, i, seq)
                    continue
                active[free.pop()] = seq
            if not active:
                continue
            rows = self.fill(active)
            self.ctx.decode(self.batch)
            for slot, row in rows:
                seq = active[slot]
                token = seq.sampler.sample(self.ctx, row)  # applies the chain and accepts the token (grammar, penalties)
                if self.advance(seq, token):
                    del active[slot]
                    finish(slot, seq.index, self.result(seq))
        return out  # type: ignore[return-value]

    def fill(self, active: dict[int, Seq]) -> list[tuple[int, int]]:
        """This step's batch: the last token of every decoding sequence, then as much of the waiting prompts
        as fits. (slot, batch row) of every row whose logits a sequence samples from."""
        b = self.batch.batch
        n, rows = 0, []
        for slot, seq in active.items():
            if seq.fed == len(seq.prompt) and seq.tokens:
                b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = seq.tokens[-1], len(seq.prompt) + len(seq.tokens) - 1, 1, True
                b.seq_id[n][0] = slot
                rows.append((slot, n))
                n += 1
        for slot, seq in active.items():
            while seq.fed < len(seq.prompt) and n < self.n_batch:
                last = seq.fed == len(seq.prompt) - 1
                b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = seq.prompt[seq.fed], seq.fed, 1, last
                b.seq_id[n][0] = slot
                if last:
                    rows.append((slot, n))
                seq.fed += 1
                n += 1
        b.n_tokens = n
        return rows

    def advance(self, seq: Seq, token: int) -> bool:
        """Take a sampled token; True when the sequence is finished."""
        if self.lib.llama_vocab_is_eog(self.vocab, token):
            seq.done = "stop"
            return True
        seq.tokens.append(token)
        seq.text = self.llm.detokenize(seq.tokens).decode("utf-8", errors="ignore")
        hit = next((s for s in seq.stops if s in seq.text), None)
        if hit is not None:
            seq.text = seq.text[:seq.text.index(hit)]
            seq.done = "stop"
        elif len(seq.tokens) >= seq.max_tokens:
            seq.done = "length"
        return seq.done is not None

    def result(self, seq: Seq) -> Result:
        return Result(seq.text, len(seq.prompt), len(seq.tokens), time.perf_counter() - seq.t0,
                      finish_reason=seq.done or "stop")


def grammar(schema: dict):
    """The llama.cpp grammar for a JSON schema, as create_chat_completion builds it (plain JSON when the
    schema has a construct the converter does not know)."""
    from llama_cpp import llama_grammar

    try:
        return llama_grammar.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except Exception:  # noqa: BLE001 - llama-cpp-python's own fallback
        return llama_grammar.LlamaGrammar.from_string(llama_grammar.JSON_GBNF, verbose=False)
