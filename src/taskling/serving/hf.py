"""An HF model folder served through transformers (`HFEngine`), prompted as in training and
evaluation (student.infer); batches of task inputs go through infer.generate, padded together.
"""
from __future__ import annotations

import threading
from pathlib import Path

from .engine import Cancelled, Generation, OnText, Sampling, StopText, room


class HFEngine:
    """An HF folder through transformers, prompted as in training and evaluation (infer.py);
    batches of task inputs go through infer.generate, padded together."""

    backend = "transformers"

    def __init__(self, path: Path, info: dict, threads: int | None = None, batch_size: int = 8):
        from ..student import infer
        from ..student.models import load_causal_lm

        infer.set_threads(threads)
        self.model, self.tok = load_causal_lm(path)
        infer.for_inference(self.model)
        self.lock = threading.Lock()
        self.stops = infer.stop_token_ids(self.tok)
        self.n_ctx = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        self.n_vocab = int(self.model.get_output_embeddings().weight.shape[0])  # logits' width: the ids a bias may name
        self.batch_size = batch_size

    def chat_ids(self, messages: list[dict]) -> list[int]:
        from ..student import infer

        return infer.chat_ids(self.tok, messages)

    def text_ids(self, text: str) -> list[int]:
        return list(self.tok(text)["input_ids"])

    def generate(self, ids: list[int], s: Sampling, on_text: OnText | None = None,
                 cancelled: Cancelled | None = None) -> Generation:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from ..student import infer

        limit = room(ids, self.n_ctx, s.max_tokens)
        stream = TokenStream(self.tok, set(self.stops), StopText(s.stop, on_text), cancelled)
        procs = [infer.schema_constraint(self.tok, s.json_schema, 1, len(ids), self.stops)] if s.json_schema else []
        if s.spans is not None:
            from ..tasks.openbook import span_lark

            procs.append(infer.Constraint(self.tok, [infer.lark_grammar(span_lark(list(s.spans)))], len(ids), self.stops))
        procs += [BiasProcessor(s.logit_bias)] if s.logit_bias else []
        kw = dict(do_sample=True, temperature=s.temperature, top_p=s.top_p) if s.temperature > 0 else \
            dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        if s.temperature > 0:
            torch.manual_seed(s.seed)
        with torch.inference_mode(), infer.autocast():
            self.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                max_new_tokens=limit, pad_token_id=self.tok.pad_token_id, eos_token_id=self.stops,
                                streamer=stream, logits_processor=LogitsProcessorList(procs),
                                stopping_criteria=StoppingCriteriaList([stream]), **kw)
        return Generation(stream.sink.finish(), len(ids), len(stream.ids), stream.finish_reason(limit))

    def generate_many(self, convs: list[list[dict]], s: Sampling) -> list[Generation]:
        from ..student import infer

        outs = infer.generate(self.model, self.tok, convs, max_new_tokens=s.max_tokens, batch_size=self.batch_size,
                              json_schema=s.json_schema)
        return [Generation(o["text"], o["prompt_tokens"], o["completion_tokens"], o["finish_reason"]) for o in outs]

    def label_logprobs(self, ids: list[int], labels: list[str]) -> list[float]:
        """log P(label, then the end of the turn | prompt), as the evaluate stage scores it."""
        from ..student import infer

        return infer.label_logprobs(self.model, self.tok, ids, labels, batch_size=max(len(labels), 1))

    def close(self) -> None:
        pass


class TokenStream:
    """transformers streamer and stopping criterion in one: decodes each new token into
    `sink` and stops generation at a stop string or when the request is cancelled."""

    def __init__(self, tok, stops: set[int], sink: StopText, cancelled: Cancelled | None):
        self.tok, self.stops, self.sink, self.cancelled = tok, stops, sink, cancelled
        self.ids: list[int] = []
        self.text, self.prompt_seen, self.ended, self.was_cancelled = "", False, False, False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        token = int(value.reshape(-1)[0])
        if self.ended or token in self.stops:
            self.ended = True
            return
        self.ids.append(token)
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for the rest of a character split across tokens
            self.ended = self.sink.add(text[len(self.text):])
            self.text = text

    def end(self) -> None:
        pass

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.was_cancelled = self.was_cancelled or bool(self.cancelled and self.cancelled())
        return torch.full((input_ids.shape[0],), self.ended or self.was_cancelled, dtype=torch.bool)

    def finish_reason(self, limit: int) -> str:
        if self.was_cancelled and not self.ended:
            return "cancelled"
        return "stop" if self.ended or len(self.ids) < limit else "length"


class BiasProcessor:
    def __init__(self, bias: dict[int, float]):
        self.bias = bias

    def __call__(self, input_ids, scores):
        for t, v in self.bias.items():
            if t < scores.shape[1]:
                scores[:, t] += v
        return scores
