"""What `taskling serve` and `taskling predict` run: one model, loaded once, and its task.

    target = resolve("my-run", root)        # a run id, a .gguf, an HF folder or a bundle .tar
    engine = load(target)                    # llama.cpp (GGUF) or transformers (HF folder)
    task_outputs(engine, target.info, ["an input"])   # the task's parsed answers

A run resolves to runs/<id>/export/gguf/<name>-<quant>.gguf for llama.cpp (f16, then any
other GGUF, when that type was not exported) or to runs/<id>/export/merged for transformers.
A bundle (`taskling export --bundle`) is checked against its SHA256SUMS and unpacked into a
cache folder keyed by its sha256 (open_bundle), refusing links, devices and paths outside it. task.json beside the model
says how the student was prompted (system prompt, labels, schema); without it the chat
endpoints still work and /v1/task does not.

Both engines expose the same few methods: prompt ids for a chat or a text, generation of
one prompt with text streamed as it comes and a cancel flag, a batch of conversations, and
the log-probability of each label as the whole answer (classify: the answer is always a
label, with a probability). Neither is thread-safe: callers hold `engine.lock`.
"""
from __future__ import annotations

import codecs
import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from .. import tasks
from ..core.errors import TasklingError

N_CTX = 4096                 # llama.cpp context (prompt + answer) per request
QUANT_ORDER = ("q8_0", "q5_k_m", "q4_k_m", "q4_0")  # fallbacks when neither the asked type nor f16 exists
TASK_TYPES = ("classify", "extract", "answer", "generate")
EXPORT_HINT = "run 'taskling export' first, or pass a run id, a .gguf file, a model folder or a bundle (.tar)"


# -------------------------------------------------------------------------------------------- what to serve
@dataclass(frozen=True)
class Target:
    backend: str                 # "llama.cpp" | "transformers"
    path: Path                   # a .gguf file or an HF model folder
    info: dict                   # task.json ({} when there is none)
    source: str                  # what it came from, for the start-up line
    notes: tuple[str, ...] = ()  # fallbacks taken, told to the user once

    @property
    def model_id(self) -> str:
        return self.info.get("name") or (self.path.stem if self.path.suffix == ".gguf" else self.path.name)


def read_task(path: Path) -> dict:
    """task.json as a dict ({} when absent), checked enough that /v1/task can trust it."""
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TasklingError(f"{path}: not valid JSON ({e}); re-run 'taskling export' to rewrite it") from None
    if not isinstance(info, dict):
        raise TasklingError(f"{path}: must be a JSON object (name, type, system_prompt, ...)")
    kind = info.get("type")
    if kind is not None and kind not in TASK_TYPES:
        raise TasklingError(f"{path}: type '{kind}' is not one of {', '.join(TASK_TYPES)}")
    if kind == "classify" and len(info.get("labels") or []) < 2:
        raise TasklingError(f"{path}: a classify task needs a list of at least two 'labels'")
    return info


def resolve(target: str | None, root: Path, backend: str = "llama.cpp", quant: str = "q8_0",
            explicit: bool = False) -> Target:
    """The model to serve for `target`: None (the newest exported run), a run id, a .gguf
    file, an HF folder, an export folder or a bundle .tar. `backend` picks what a run
    serves; a file decides for itself, and an `explicit` backend that disagrees is an error."""
    root = Path(root)
    if target is None:
        return from_export(newest_export(root), backend, quant, explicit)
    run = root / "runs" / target / "export"
    path = Path(target).expanduser()
    if "/" not in target and run.is_dir():
        return from_export(run, backend, quant, explicit)
    if path.is_file() and path.suffix in (".tar", ".bundle"):
        return check_backend(open_bundle(path), backend, explicit)
    if path.is_file() and path.suffix == ".gguf":
        t = Target("llama.cpp", path.resolve(), read_task(path.parent / "task.json"), f"GGUF {path}")
        return check_backend(t, backend, explicit)
    if path.is_dir() and (path / "config.json").exists():
        t = Target("transformers", path.resolve(), read_task(path / "task.json"), f"model folder {path}")
        return check_backend(t, backend, explicit)
    if path.is_dir() and ((path / "merged").is_dir() or (path / "gguf").is_dir()):
        return from_export(path, backend, quant, explicit)
    raise TasklingError(f"'{target}' is neither a run ({run} does not exist), a .gguf file, a model folder "
                        f"with config.json nor a bundle .tar; {EXPORT_HINT}")


def check_backend(t: Target, backend: str, explicit: bool) -> Target:
    if explicit and backend != t.backend:
        need = ".gguf file (or a run with GGUF exports)" if backend == "llama.cpp" else "model folder or run"
        raise TasklingError(f"{t.source} runs on {t.backend}; --backend {backend} needs a {need}")
    return t


def newest_export(root: Path) -> Path:
    found = [d for d in (root / "runs").glob("*/export")
             if (d / "merged" / "config.json").exists() or any((d / "gguf").glob("*.gguf"))]
    if not found:
        raise TasklingError(f"no exported model in {root / 'runs'}/*/export; {EXPORT_HINT}")
    return max(found, key=lambda d: ((d / "manifest.json") if (d / "manifest.json").exists() else d).stat().st_mtime)


def export_ggufs(gdir: Path) -> dict[str, Path]:
    """Exported GGUF files by type (f16, q8_0, ...), the LoRA adapter left out."""
    return {p.stem.rsplit("-", 1)[-1]: p for p in sorted(gdir.glob("*.gguf")) if "-lora-" not in p.name}


def from_export(export: Path, backend: str, quant: str, explicit: bool) -> Target:
    merged, gdir = export / "merged", export / "gguf"
    where = f"run {export.parent.name}" if export.parent.parent.name == "runs" else f"export {export}"
    if backend == "transformers":
        if not (merged / "config.json").exists():
            raise TasklingError(f"{merged}: no merged model to serve with transformers; run 'taskling export'")
        return Target("transformers", merged.resolve(), read_task(merged / "task.json"), f"{where} (merged/)")
    info = read_task(gdir / "task.json") or read_task(merged / "task.json")
    files = export_ggufs(gdir)
    if quant in files:
        return Target("llama.cpp", files[quant].resolve(), info, where)
    missing = gdir / f"{info.get('name', '<task>')}-{quant}.gguf"
    for alt in ("f16", *QUANT_ORDER):
        if alt in files:
            note = (f"{missing} was not exported; serving {alt} instead "
                    f"(add {quant} to export.gguf and re-run 'taskling export' to serve it)")
            return Target("llama.cpp", files[alt].resolve(), info, where, (note,))
    has_merged = (merged / "config.json").exists()
    if explicit or not has_merged:
        raise TasklingError(f"{gdir}: no GGUF file exported; set export.gguf and re-run 'taskling export'"
                            + (", or serve merged/ with --backend transformers" if has_merged else ""))
    note = f"{gdir} holds no GGUF (export.gguf is empty); serving {merged} with transformers instead"
    return Target("transformers", merged.resolve(), read_task(merged / "task.json"), f"{where} (merged/)", (note,))


# -------------------------------------------------------------------------------------------- bundles
BUNDLE_HINT = "re-create it with 'taskling export --bundle'"


def bundle_cache() -> Path:
    from ..student.models import cache_dir

    return cache_dir().parent / "bundles"


def open_bundle(tar: Path, cache: Path | None = None) -> Target:
    """Serve a bundle: verified and unpacked once into <cache>/<sha256 of the tar>/."""
    from ..core.workspace import sha256_file

    digest = sha256_file(tar)
    dest = (cache or bundle_cache()) / digest
    if not (dest / ".verified").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        unpack_bundle(tar, dest)
    return bundle_target(tar, dest)


def unpack_bundle(tar: Path, dest: Path) -> None:
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name[:16]}."))
    try:
        check_sums(tar, tmp, extract_members(tar, tmp))
        (tmp / ".verified").write_text(f"{tar}\n")
        try:
            os.replace(tmp, dest)
        except OSError:  # another server unpacked the same bundle meanwhile
            if not (dest / ".verified").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def member_name(tar: Path, m) -> str:
    """A member's path inside the bundle, refusing anything that could write outside the
    folder or be more than plain data: absolute paths, '..', links, devices, FIFOs."""
    from pathlib import PurePosixPath

    name = m.name
    kinds = [(m.issym(), "is a symbolic link"), (m.islnk(), "is a hard link"), (m.ischr() or m.isblk(), "is a device"),
             (m.isfifo(), "is a FIFO")]
    why = next((w for bad, w in kinds if bad), None) or (None if m.isreg() or m.isdir() else "is not a regular file")
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        why = "has an absolute path"
    elif ".." in parts or "\\" in name:
        why = "points outside the bundle ('..' or '\\' in its path)"
    elif not parts or parts == (".",):
        why = why or ("is the bundle's own folder" if m.isdir() else "has an empty name")
    if why:
        raise TasklingError(f"{tar}: member '{name}' {why}; refusing to unpack this bundle ({BUNDLE_HINT})")
    return "/".join(p for p in parts if p != ".")


def extract_members(tar: Path, into: Path) -> dict[str, str]:
    """Unpack regular files and folders (nothing else) and hash each file as it is written."""
    import hashlib
    import tarfile

    hashes: dict[str, str] = {}
    try:
        with tarfile.open(tar, "r:") as tf:
            for m in tf:
                if m.isdir() and m.name.strip("./") == "":
                    continue
                name = member_name(tar, m)
                if name in hashes:
                    raise TasklingError(f"{tar}: member '{name}' appears twice; refusing to unpack ({BUNDLE_HINT})")
                out = into / name
                if m.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with tf.extractfile(m) as src, open(out, "xb") as dst:
                    while block := src.read(1 << 20):
                        h.update(block)
                        dst.write(block)
                hashes[name] = h.hexdigest()
    except tarfile.TarError as e:
        raise TasklingError(f"{tar}: not a readable uncompressed tar bundle ({e}); {BUNDLE_HINT}") from None
    except OSError as e:
        raise TasklingError(f"{tar}: cannot unpack it into {into} ({e.strerror or e})") from None
    return hashes


def check_sums(tar: Path, folder: Path, hashes: dict[str, str]) -> None:
    """Every other member listed in SHA256SUMS, and each one's digest equal to its listing."""
    if hashes.pop("SHA256SUMS", None) is None:
        raise TasklingError(f"{tar}: has no SHA256SUMS member, so it is not a taskling bundle; {BUNDLE_HINT}")
    listed: dict[str, str] = {}
    for n, line in enumerate((folder / "SHA256SUMS").read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        digest, _, name = line.strip().partition(" ")
        name = name.strip().removeprefix("*")
        if not line.strip():
            continue
        if len(digest) != 64 or not name:
            raise TasklingError(f"{tar}: SHA256SUMS line {n} is not '<sha256>  <member>': {line[:80]!r}")
        listed[name.removeprefix("./")] = digest.lower()
    for name, digest in listed.items():
        if name not in hashes:
            raise TasklingError(f"{tar}: member '{name}' is listed in SHA256SUMS but missing; {BUNDLE_HINT}")
        if hashes[name] != digest:
            raise TasklingError(f"{tar}: member '{name}' does not match its SHA256SUMS checksum: the bundle is "
                                f"damaged or was altered; refusing to serve it ({BUNDLE_HINT})")
    for name in hashes:
        if name not in listed:
            raise TasklingError(f"{tar}: member '{name}' is not listed in SHA256SUMS; refusing to serve it "
                                f"({BUNDLE_HINT})")


def bundle_target(tar: Path, folder: Path) -> Target:
    """What serve.json says to run: model.gguf on llama.cpp or model/ on transformers."""
    try:
        spec = json.loads((folder / "serve.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TasklingError(f"{tar}: has no serve.json member; {BUNDLE_HINT}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TasklingError(f"{tar}: serve.json is not valid JSON ({e}); {BUNDLE_HINT}") from None
    backend, model = spec.get("backend"), str(spec.get("model") or "")
    if backend not in ("llama.cpp", "transformers"):
        raise TasklingError(f"{tar}: serve.json backend {backend!r} is not 'llama.cpp' or 'transformers'")
    path = (folder / model).resolve()
    inside = path.is_relative_to(folder.resolve()) and path != folder.resolve()
    ok = path.is_file() and path.suffix == ".gguf" if backend == "llama.cpp" else (path / "config.json").is_file()
    if not model or not inside or not ok:
        want = "a .gguf member" if backend == "llama.cpp" else "a folder member with config.json"
        raise TasklingError(f"{tar}: serve.json model {model!r} is not {want} of the bundle; {BUNDLE_HINT}")
    return Target(backend, path, read_task(folder / "task.json"), f"bundle {tar}")


# -------------------------------------------------------------------------------------------- generation
@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    json_schema: dict | None = None         # constrain the answer to JSON valid against this
    logit_bias: dict[int, float] = field(default_factory=dict)


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str                      # stop | length | cancelled


OnText = Callable[[str], None]
Cancelled = Callable[[], bool]


class PromptTooLong(TasklingError):
    pass


class StopText:
    """Text as it is generated, cut at the first stop string; what is passed on to `emit`
    never includes a stop string or the start of one still being written."""

    def __init__(self, stops: tuple[str, ...], emit: OnText | None):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.emit, self.text, self.sent, self.stopped = emit, "", 0, False

    def add(self, piece: str) -> bool:
        """Append; True when a stop string has ended the text."""
        self.text += piece
        cuts = [i for i in (self.text.find(s, self.sent) for s in self.stops) if i >= 0]
        if cuts:
            self.text, self.stopped = self.text[:min(cuts)], True
            self._send(len(self.text))
            return True
        self._send(len(self.text) - self.hold)
        return False

    def finish(self) -> str:
        self._send(len(self.text))
        return self.text

    def _send(self, upto: int) -> None:
        if upto > self.sent:
            if self.emit:
                self.emit(self.text[self.sent:upto])
            self.sent = upto


class Engine(Protocol):
    backend: str
    lock: threading.Lock
    n_ctx: int

    def chat_ids(self, messages: list[dict]) -> list[int]: ...

    def text_ids(self, text: str) -> list[int]: ...

    def generate(self, ids: list[int], s: Sampling, on_text: OnText | None = None,
                 cancelled: Cancelled | None = None) -> Generation: ...

    def generate_many(self, convs: list[list[dict]], s: Sampling) -> list[Generation]: ...

    def label_logprobs(self, ids: list[int], labels: list[str]) -> list[float]: ...

    def close(self) -> None: ...


def room(ids: list[int], n_ctx: int, max_tokens: int) -> int:
    """How many tokens the answer may have; a prompt that leaves none is an error."""
    left = n_ctx - len(ids)
    if left <= 0:
        raise PromptTooLong(f"the prompt has {len(ids)} tokens; this model's context holds {n_ctx} "
                            "(prompt and answer together)")
    return min(max_tokens, left)


class LlamaEngine:
    """A GGUF through llama-cpp-python. One context on all cores: requests take turns
    (prompt prefixes shared with the previous request are not evaluated again)."""

    backend = "llama.cpp"

    def __init__(self, path: Path, info: dict, threads: int | None = None, n_ctx: int = N_CTX):
        from llama_cpp import Llama

        from ..student.models import quiet_stderr

        threads = threads or os.cpu_count() or 1
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
                from ..student.models import quiet_stderr

                with quiet_stderr():
                    self._grammars[key] = LlamaGrammar.from_json_schema(key, verbose=False)
            except Exception as e:
                raise TasklingError(f"the JSON schema cannot be turned into a llama.cpp grammar ({e})") from None
        return self._grammars[key]

    def generate(self, ids: list[int], s: Sampling, on_text: OnText | None = None,
                 cancelled: Cancelled | None = None) -> Generation:
        limit = room(ids, self.n_ctx, s.max_tokens)
        self.llm.set_seed(s.seed)
        procs = [bias_processor(s.logit_bias)] if s.logit_bias else None
        gen = self.llm.generate(ids, temp=s.temperature, top_p=s.top_p, top_k=0, min_p=0.0, repeat_penalty=1.0,
                                grammar=self.grammar(s.json_schema) if s.json_schema else None,
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


CHATML_JINJA = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


class HFEngine:
    """An HF folder through transformers, prompted as in training and evaluation (infer.py);
    batches of task inputs go through infer.generate, padded together."""

    backend = "transformers"

    def __init__(self, path: Path, info: dict, threads: int | None = None, batch_size: int = 8):
        from ..student import infer
        from ..student.models import load_causal_lm

        infer.set_threads(threads)
        self.model, self.tok = load_causal_lm(path)
        self.lock = threading.Lock()
        self.stops = infer.stop_token_ids(self.tok)
        self.n_ctx = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
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
        procs = [infer.SchemaConstraint(self.tok, s.json_schema, 1, len(ids), self.stops)] if s.json_schema else []
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


def load(target: Target, threads: int | None = None) -> Engine:
    if target.backend == "llama.cpp":
        return LlamaEngine(target.path, target.info, threads)
    return HFEngine(target.path, target.info, threads)


# -------------------------------------------------------------------------------------------- the task
class NoTask(TasklingError):
    pass


NO_TASK = ("this model has no task.json saying what its task is; serve an export (runs/<id>/export) or a "
           "bundle, or put the export's task.json beside the model")


def task_messages(info: dict, text: str) -> list[dict]:
    system = info.get("system_prompt")
    return tasks.student_messages(system, text) if system else [{"role": "user", "content": text}]


def task_outputs(engine: Engine, info: dict, inputs: list[str], max_tokens: int | None = None) -> list[dict]:
    """The task's answers to `inputs`, prompted as the student was trained: classify →
    the most likely label with the probability of each; extract → a JSON object
    (constrained to the task's schema); answer and generate → text."""
    kind = info.get("type")
    if kind not in TASK_TYPES:
        raise NoTask(NO_TASK)
    convs = [task_messages(info, x) for x in inputs]
    if kind == "classify":
        labels = [str(x) for x in info["labels"]]
        out = []
        for c in convs:
            ids = engine.chat_ids(c)
            out.append({**label_result(labels, engine.label_logprobs(ids, labels)), "prompt_tokens": len(ids),
                        "completion_tokens": 0, "finish_reason": "stop"})  # scored, not generated
        return out
    limit = max_tokens or info.get("max_new_tokens") or 256
    schema = (info.get("output_schema") or {"type": "object"}) if kind == "extract" else None
    return [text_result(kind, g) for g in engine.generate_many(convs, Sampling(limit, json_schema=schema))]


def label_result(labels: list[str], logps: list[float]) -> dict:
    top = max(logps)
    weights = [math.exp(x - top) for x in logps]
    probs = {lab: w / sum(weights) for lab, w in zip(labels, weights)}
    best = max(labels, key=probs.__getitem__)
    return {"output": best, "label": best, "probability": round(probs[best], 6),
            "probabilities": {k: round(v, 6) for k, v in probs.items()}}


def text_result(kind: str, g: Generation) -> dict:
    text = g.text.strip()
    out: object = text
    if kind == "extract":
        try:
            out = json.loads(text)
        except json.JSONDecodeError:  # cut off by max_tokens before the object closed
            out = None
    res = {"output": out, "prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
           "finish_reason": g.finish_reason}
    return res | ({"text": text} if out is None else {})
