"""A GGUF served through llama-cpp-python (`LlamaEngine`), with OpenAI's logit_bias as a
logits processor. One context on all cores: requests take turns, and a prompt prefix shared
with the previous request is not evaluated again.
"""
from __future__ import annotations

import codecs
import json
import threading
from pathlib import Path

from ..core.errors import TasklingError
from ..core.executor import cpu_threads
from .engine import Cancelled, Generation, OnText, Sampling, StopText, room

N_CTX = 4096                 # llama.cpp context (prompt + answer) per request
CHATML_JINJA = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


class LlamaEngine:
    """A GGUF through llama-cpp-python. One context on all cores: requests take turns
    (prompt prefixes shared with the previous request are not evaluated again)."""

    backend = "llama.cpp"

    def __init__(self, path: Path, info: dict, threads: int | None = None, n_ctx: int = N_CTX):
        from llama_cpp import Llama

        from ..student.gguf import quiet_stderr

        threads = cpu_threads(threads)
        try:
            with quiet_stderr():
                self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                 verbose=False, seed=0)
        except (ValueError, RuntimeError) as e:
            raise TasklingError(f"{path}: llama.cpp could not load it ({e})") from None
        self.lock = threading.Lock()
        self.n_ctx = self.llm.n_ctx()
        self.n_vocab = self.llm.n_vocab()
        self.formatter = self._formatter(info)
        self.stop_ids = self._stop_ids()
        im_end = self.llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
        self.end_id = im_end[0] if len(im_end) == 1 else self.llm.token_eos()
        self._grammars: dict[str, object] = {}

    def _formatter(self, info: dict):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from ..student.models import PLAIN_TEMPLATE

        meta = self.llm.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:  # an old GGUF without one: the export's template kind, else taskling's plain turns
            template = CHATML_JINJA if info.get("chat_template_kind") == "chatml" else PLAIN_TEMPLATE
        piece = lambda key: self.llm.detokenize([int(meta[key])], special=True).decode("utf-8", "replace") \
            if key in meta else ""  # noqa: E731
        return Jinja2ChatFormatter(template, eos_token=piece("tokenizer.ggml.eos_token_id"),
                                   bos_token=piece("tokenizer.ggml.bos_token_id"))

    def _stop_ids(self) -> set[int]:
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        ids = {t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)}
        start = self.llm.tokenize(b"<|im_start|>", add_bos=False, special=True)  # a new turn ends this one
        return ids | ({start[0]} if len(start) == 1 else set()) | {self.llm.token_eos()}

    def chat_ids(self, messages: list[dict]) -> list[int]:
        try:
            prompt = self.formatter(messages=messages).prompt
        except Exception as e:  # the model's own Jinja template refused these messages
            raise TasklingError(f"the model's chat template cannot render these messages ({e})") from None
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def text_ids(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def grammar(self, schema: dict):
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            if len(self._grammars) >= 32:  # clients may send schemas of their own: keep the newest few
                self._grammars.pop(next(iter(self._grammars)))
            try:
                from ..student.gguf import quiet_stderr

                with quiet_stderr():
                    self._grammars[key] = LlamaGrammar.from_json_schema(key, verbose=False)
            except Exception as e:
                raise TasklingError(f"the JSON schema cannot be turned into a llama.cpp grammar ({e})") from None
        return self._grammars[key]

    def span_grammar(self, texts: tuple[str, ...]):
        """The llama.cpp grammar of an answer copied from `texts` (tasks.openbook.span_rules); one per
        request (its chunks), not kept."""
        from llama_cpp import LlamaGrammar

        from ..student.gguf import quiet_stderr
        from ..tasks.openbook import span_gbnf

        with quiet_stderr():
            return LlamaGrammar.from_string(span_gbnf(list(texts)), verbose=False)

    def generate(self, ids: list[int], s: Sampling, on_text: OnText | None = None,
                 cancelled: Cancelled | None = None) -> Generation:
        limit = room(ids, self.n_ctx, s.max_tokens)
        self.llm.set_seed(s.seed)
        procs = [bias_processor(s.logit_bias)] if s.logit_bias else None
        gen = self.llm.generate(ids, temp=s.temperature, top_p=s.top_p, top_k=0, min_p=0.0, repeat_penalty=1.0,
                                grammar=self.grammar(s.json_schema) if s.json_schema else
                                self.span_grammar(s.spans) if s.spans is not None else None,
                                logits_processor=procs)
        sink, utf8 = StopText(s.stop, on_text), codecs.getincrementaldecoder("utf-8")("replace")
        n, finish = 0, "length"
        try:
            for tok in gen:
                if tok in self.stop_ids:
                    finish = "stop"
                    break
                n += 1
                if sink.add(utf8.decode(self.llm.detokenize([tok]))):
                    finish = "stop"
                    break
                if cancelled and cancelled():
                    finish = "cancelled"
                    break
                if n >= limit:
                    break
        finally:
            gen.close()
        sink.add(utf8.decode(b"", final=True))
        return Generation(sink.finish(), len(ids), n, finish)

    def generate_many(self, convs: list[list[dict]], s: Sampling) -> list[Generation]:
        return [self.generate(self.chat_ids(c), s) for c in convs]

    def label_logprobs(self, ids: list[int], labels: list[str]) -> list[float]:
        """log P(label, then the end of the turn | prompt) for each label; the prompt
        is evaluated once, each label's tokens one at a time after it."""
        room(ids, self.n_ctx - 16, 1)  # the prompt and the longest label's tokens must fit
        self._eval_prefix(ids)
        base, first = self.llm.n_tokens, self._logprobs()
        out = []
        for label in labels:
            tail = self.llm.tokenize(label.encode("utf-8"), add_bos=False, special=False) + [self.end_id]
            self.llm.n_tokens = base
            lp = first[tail[0]]
            for prev, nxt in zip(tail, tail[1:]):
                self.llm.eval([prev])
                lp += self._logprobs()[nxt]
            out.append(float(lp))
        return out

    def _eval_prefix(self, ids: list[int]) -> None:
        """Evaluate `ids`, reusing what the context already holds of them (at least one
        token is evaluated, so the last logits are fresh)."""
        import numpy as np

        have = self.llm.input_ids[:self.llm.n_tokens]
        n = min(len(have), len(ids) - 1)
        diff = np.nonzero(have[:n] != np.asarray(ids[:n]))[0]
        keep = int(diff[0]) if len(diff) else n
        self.llm.n_tokens = keep
        self.llm.eval(ids[keep:])

    def _logprobs(self):
        import llama_cpp
        import numpy as np

        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))
        x = logits.astype(np.float64)
        return x - (x.max() + np.log(np.exp(x - x.max()).sum()))

    def close(self) -> None:
        self.llm.close()


def bias_processor(bias: dict[int, float]):
    """OpenAI's logit_bias as a llama.cpp logits processor."""
    ids, vals = list(bias), list(bias.values())

    def apply(input_ids, scores):
        scores[ids] += vals
        return scores
    return apply
