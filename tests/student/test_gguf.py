"""GGUF export: llama.cpp's converters on a tiny random Llama (and a LoRA on
it) checked against transformers, quantization, and the Ollama Modelfile (student.ollama).

The converter only accepts tokenizers it knows (by a hash of their
pre-tokenizer output), so the tiny model here carries SmolLM2's real tokenizer
from the embedded model's cached HF folder; conftest's custom BPE tokenizer is
rejected, which one test checks gives a clear error.
"""
from __future__ import annotations

import io
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from taskling.student import gguf, ollama
from taskling.core.errors import TasklingError
from taskling.student.models import PLAIN_TEMPLATE

PROMPTS = ["What is SQLite?", "Route this question: how do I hash data in node?", "Hello",
           "Write a haiku about the sea.", "json_extract returns"]
SYSTEM = "You route developer questions to a manual. Answer with one label."
N_TOKENS = 10


def chat_ids(tok, user: str) -> list[int]:
    text = tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
                                   tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def llama(path: Path, **kw):
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False, **kw)


def last_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[llm.n_tokens - 1])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template. The
    output head is not tied to the embeddings: tied, a random model only ever
    repeats its last input token, which would make the greedy comparison empty."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from taskling.student.models import resolve_hf

    path = tmp_path_factory.mktemp("tiny-smol")
    tok = AutoTokenizer.from_pretrained(resolve_hf("smollm2-135m-instruct"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf_model(tiny_dir):
    from taskling.student.models import load_causal_lm

    return load_causal_lm(tiny_dir)


@pytest.fixture(scope="module")
def f16_gguf(tiny_dir, tmp_path_factory) -> Path:
    return gguf.hf_to_gguf(tiny_dir, tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf")


@pytest.fixture(scope="module")
def adapter_dir(tiny_dir, tmp_path_factory) -> Path:
    """A random LoRA on every projection, lora_B non-zero so it has an effect."""
    import torch
    from peft import LoraConfig, get_peft_model

    from taskling.student.models import load_causal_lm

    model, _ = load_causal_lm(tiny_dir)
    torch.manual_seed(1)
    peft_model = get_peft_model(model, LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(path)
    return path


@pytest.mark.slow
def test_f16_gguf_matches_transformers(tiny_dir, hf_model, f16_gguf):
    """The converted file tokenizes like the HF tokenizer, its first-step logits
    agree within 1% of their spread, and its greedy tokens are transformers'
    greedy tokens. Where a random model has two near-equal logits f16 may
    pick the other one; the sequences may then differ only from such a tie."""
    import torch

    model, tok = hf_model
    assert f16_gguf.stat().st_size > 1e6
    assert [p.name for p in f16_gguf.parent.iterdir()] == [f16_gguf.name]  # no temp file left behind
    llm = llama(f16_gguf)
    identical = 0
    for prompt in PROMPTS:
        ids = chat_ids(tok, prompt)
        text = tok.decode(ids)
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == ids
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0, -1].numpy()
            hf_greedy = model.generate(torch.tensor([ids]), max_new_tokens=N_TOKENS, do_sample=False,
                                       pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
        got = last_logits(llm, ids)
        tol = 0.01 * ref.std()
        assert np.abs(got - ref).max() < tol, prompt
        out = []
        for _ in range(N_TOKENS):
            out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
            llm.eval([out[-1]])
        if out == hf_greedy:
            identical += 1
            continue
        k = next(i for i, (a, b) in enumerate(zip(out, hf_greedy)) if a != b)
        with torch.no_grad():
            at_k = model(torch.tensor([ids + out[:k]])).logits[0, -1].numpy()
        assert at_k.max() - at_k[out[k]] < 2 * tol, f"{prompt!r}: greedy tokens differ at step {k} without a tie"
    assert identical >= len(PROMPTS) - 1


@pytest.mark.slow
def test_quantized_files_are_smaller_and_still_the_model(tiny_dir, hf_model, f16_gguf, tmp_path):
    import torch

    model, tok = hf_model
    ids = chat_ids(tok, PROMPTS[0])
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0, -1].numpy()
    sizes = {"f16": f16_gguf.stat().st_size}
    for qtype, min_corr in (("q8_0", 0.999), ("q4_k_m", 0.99)):
        out = gguf.quantize(f16_gguf, tmp_path / f"tiny-{qtype}.gguf", qtype)
        sizes[qtype] = out.stat().st_size
        got = last_logits(llama(out), ids)
        assert np.corrcoef(got, ref)[0, 1] > min_corr, qtype
    assert sizes["f16"] > sizes["q8_0"] > sizes["q4_k_m"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-q4_k_m.gguf", "tiny-q8_0.gguf"]


def test_quantize_rejects_bad_input(tmp_path):
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(TasklingError, match="not one of q8_0, q4_k_m"):
        gguf.quantize(not_gguf, tmp_path / "out.gguf", "q3_weird")
    with pytest.raises(TasklingError, match=re.escape(f"{not_gguf}: not a GGUF file")):
        gguf.quantize(not_gguf, tmp_path / "out.gguf", "q8_0")
    with pytest.raises(TasklingError, match="cannot read it"):
        gguf.quantize(tmp_path / "missing.gguf", tmp_path / "out.gguf", "q8_0")
    assert not (tmp_path / "out.gguf").exists()


@pytest.mark.slow
def test_lora_gguf_applies_the_adapter_like_peft(tiny_dir, f16_gguf, adapter_dir, tmp_path):
    import torch
    from peft import PeftModel

    from taskling.student.models import load_causal_lm

    adapter = gguf.lora_to_gguf(adapter_dir, tiny_dir, tmp_path / "adapter-f16.gguf")
    model, tok = load_causal_lm(tiny_dir)  # PEFT wraps it in place: not the shared one
    ids = chat_ids(tok, PROMPTS[1])
    peft_model = PeftModel.from_pretrained(model, adapter_dir)
    with torch.no_grad():
        tuned = peft_model(torch.tensor([ids])).logits[0, -1].numpy()
        with peft_model.disable_adapter():
            base = peft_model(torch.tensor([ids])).logits[0, -1].numpy()
    effect = np.abs(tuned - base).max()
    assert effect > 0.1  # the adapter matters
    got_base = last_logits(llama(f16_gguf), ids)
    got_tuned = last_logits(llama(f16_gguf, lora_path=str(adapter)), ids)
    assert np.abs(got_tuned - got_base).max() > 0.5 * effect
    assert np.abs(got_tuned - tuned).max() < 0.05 * effect


@pytest.mark.slow
def test_unknown_tokenizer_is_a_clear_error(tiny_model_dir, tmp_path):
    """conftest's tiny model has a BPE tokenizer trained in the test: llama.cpp
    does not know it and the error says so, without a stray output file."""
    out = tmp_path / "tiny.gguf"
    with pytest.raises(TasklingError) as err:
        gguf.hf_to_gguf(tiny_model_dir, out)
    msg = str(err.value)
    assert msg.startswith(f"{tiny_model_dir}: convert_hf_to_gguf.py failed")
    assert "does not know this tokenizer" in msg and "pre-tokenizer was not recognized" in msg
    assert list(tmp_path.iterdir()) == []


def test_conversion_input_errors(tmp_path):
    with pytest.raises(TasklingError, match="not an HF model folder"):
        gguf.hf_to_gguf(tmp_path, tmp_path / "x.gguf")
    with pytest.raises(TasklingError, match="outtype 'q4_k_m' is not one of"):
        gguf.hf_to_gguf(tmp_path, tmp_path / "x.gguf", outtype="q4_k_m")
    with pytest.raises(TasklingError, match="not a PEFT adapter folder"):
        gguf.lora_to_gguf(tmp_path, tmp_path, tmp_path / "a.gguf")


def test_converter_runs_with_its_own_gguf_py():
    """The PyPI gguf of the same version lacks what the scripts use; the
    subprocess must import the vendored copy."""
    script = gguf.converter_script()
    env = gguf._converter_env(script.parent)
    out = subprocess.run([sys.executable, "-c", "import gguf; print(gguf.__file__)"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out).is_relative_to(script.parent / "gguf-py")
    assert gguf.converter_script("convert_lora_to_gguf.py").is_file()


# ---------------------------------------------------------------- set-up of the scripts

def fake_sdist(path: Path, version: str) -> Path:
    root = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    files = {"convert_hf_to_gguf.py": "print('hf')", "convert_lora_to_gguf.py": "print('lora')",
             "conversion/__init__.py": "", "conversion/llama.py": "", "gguf-py/gguf/__init__.py": "",
             "gguf-py/gguf/constants.py": "", "gguf-py/pyproject.toml": 'version = "0.99.0"\n',
             "src/llama.cpp": "int main;", "ggml/src/ggml.c": "", "models/ggml-vocab-gpt-2.gguf": "x",
             "models/ggml-vocab-llama-spm.gguf": "x", "requirements/requirements-convert_hf_to_gguf.txt": ""}
    sdist = path / f"llama_cpp_python-{version}.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for rel, text in files.items():
            info = tarfile.TarInfo(root + rel)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return sdist


def test_prepare_extracts_the_converters_from_a_local_sdist(tmp_path, monkeypatch):
    monkeypatch.setenv("TASKLING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WHEELHOUSE", str(tmp_path / "wheelhouse"))
    (tmp_path / "wheelhouse").mkdir()
    ver = gguf.llama_cpp_version()
    # Nothing local and no download allowed at run time: the error names the set-up command.
    with pytest.raises(TasklingError, match=re.escape(gguf.PREPARE_CMD)):
        gguf.converter_script()
    fake_sdist(tmp_path / "wheelhouse", ver)
    script = gguf.converter_script()  # found in the wheelhouse, extracted without a network
    root = tmp_path / "cache" / f"llama.cpp-{ver}"
    assert script == root / "convert_hf_to_gguf.py" and script.read_text() == "print('hf')"
    kept = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert kept == ["conversion/__init__.py", "conversion/llama.py", "convert_hf_to_gguf.py",
                    "convert_lora_to_gguf.py", "gguf-py/gguf/__init__.py", "gguf-py/gguf/constants.py",
                    "gguf-py/pyproject.toml", "models/ggml-vocab-llama-spm.gguf",
                    "requirements/requirements-convert_hf_to_gguf.txt", "taskling-prepared.json"]
    assert '"gguf_py": "0.99.0"' in (root / "taskling-prepared.json").read_text()
    with pytest.raises(TasklingError, match="unknown converter script"):
        gguf.converter_script("convert.py")
    # Scripts of another llama.cpp than the compiled one are refused.
    other = fake_sdist(tmp_path, "0.0.1")
    monkeypatch.setenv("TASKLING_CACHE", str(tmp_path / "cache2"))
    with pytest.raises(TasklingError, match=f"holds llama_cpp_python-0.0.1, but llama-cpp-python {ver} is installed"):
        gguf.prepare(other, download=False)
    assert not (tmp_path / "cache2" / f"llama.cpp-{ver}").exists()


# ---------------------------------------------------------------- Ollama Modelfile

def render_go(template: str, messages: list[dict]) -> str:
    """The part of Go's text/template our TEMPLATEs use: text, {{- -}} trimming,
    range .Messages, if / else if / else with `eq .Field "literal"`, .Role, .Content."""
    parts = re.split(r"(\{\{-? .*? -?\}\}|\{\{[^ -].*?\}\})", template)
    tokens = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            tokens.append(("text", part))
            continue
        if part.startswith("{{- ") and tokens and tokens[-1][0] == "text":
            tokens[-1] = ("text", tokens[-1][1].rstrip(" \t\r\n"))
        if part.endswith(" -}}") and i + 1 < len(parts):
            parts[i + 1] = parts[i + 1].lstrip(" \t\r\n")
        tokens.append(("action", part.strip("{}").strip("-").strip()))

    def parse(pos: int, stops: tuple) -> tuple[list, int, str]:
        nodes = []
        while pos < len(tokens):
            kind, val = tokens[pos]
            pos += 1
            if kind == "text":
                nodes.append(("text", val))
            elif val in stops or val.startswith("else"):
                return nodes, pos, val
            elif val.startswith("range "):
                body, pos, _ = parse(pos, ("end",))
                nodes.append(("range", val[6:], body))
            elif val.startswith("if "):
                branches, cond = [], val[3:]
                while True:
                    body, pos, stop = parse(pos, ("end",))
                    branches.append((cond, body))
                    if stop == "end":
                        break
                    cond = stop[8:] if stop.startswith("else if ") else None
                nodes.append(("if", branches))
            else:
                nodes.append(("field", val))
        return nodes, pos, ""

    def field(name, ctx):
        return ctx[name.lstrip(".")]

    def test(cond, ctx):
        if cond is None:
            return True
        m = re.fullmatch(r'eq (\.\w+) "(.*)"', cond)
        assert m, cond
        return field(m.group(1), ctx) == m.group(2)

    def run(nodes, ctx) -> str:
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "field":
                out.append(field(node[1], ctx))
            elif node[0] == "range":
                out += [run(node[2], item) for item in field(node[1], ctx)]
            else:
                out.append(next((run(body, ctx) for cond, body in node[1] if test(cond, ctx)), ""))
        return "".join(out)

    nodes, _, _ = parse(0, ())
    ollama_msgs = [{"Role": m["role"], "Content": m["content"]} for m in messages]
    return run(nodes, {"Messages": ollama_msgs})


CONVERSATIONS = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "How do I read a file in node?"}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "first"},
     {"role": "assistant", "content": "node"}, {"role": "user", "content": "and {{ .Role }} then?\n"}],
]


def test_modelfile_template_renders_like_the_hf_chat_template(tiny_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    for tok_dir in (tiny_dir, tiny_model_dir):  # SmolLM2's own template and conftest's ChatML
        tok = AutoTokenizer.from_pretrained(tok_dir)
        kind = ollama.chat_template_kind(tok.chat_template)
        assert kind == "chatml"
        text = ollama.modelfile("m.gguf", kind, SYSTEM, ollama.default_stops(kind), {})
        template = ollama.parse_modelfile(text)["template"]
        for conv in CONVERSATIONS:
            assert render_go(template, conv) == tok.apply_chat_template(conv, tokenize=False,
                                                                        add_generation_prompt=True)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = PLAIN_TEMPLATE
    assert ollama.chat_template_kind(tok.chat_template) == ollama.chat_template_kind(None) == "plain"
    text = ollama.modelfile("m.gguf", "plain", SYSTEM, ollama.default_stops("plain", tok.eos_token), {},
                          eos_token=tok.eos_token)
    template = ollama.parse_modelfile(text)["template"]
    for conv in CONVERSATIONS:
        assert render_go(template, conv) == tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    with pytest.raises(TasklingError, match="neither ChatML nor"):
        ollama.chat_template_kind("{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}")


def test_modelfile_round_trip():
    system = ('Answer with one label: "sqlite", "node" or "python".\n'
              '  Keep leading spaces, {{ braces }}, tabs\tand trailing spaces   \n'
              'A docstring: """like this""" stays.\n'
              'def f():\n    """Docstring."""\n'
              "Ends with a quote: \"")
    text = ollama.modelfile("tiny-q4_k_m.gguf", "chatml", system, ["<|im_end|>", "<|im_start|>", "\nUser:"],
                          {"num_ctx": 2048, "top_k": 1, "repeat_penalty": 1.0}, adapter="adapter.gguf")
    parsed = ollama.parse_modelfile(text)
    assert parsed["from"] == "./tiny-q4_k_m.gguf" and parsed["adapter"] == "./adapter.gguf"
    assert parsed["template"] == ollama.CHATML_GO
    assert parsed["parameters"] == [("stop", "<|im_end|>"), ("stop", "<|im_start|>"), ("stop", "\nUser:"),
                                    ("temperature", "0"), ("num_ctx", "2048"), ("top_k", "1"),
                                    ("repeat_penalty", "1.0")]
    # Ollama strings have no escapes: a line ending in three quotes would end
    # the string, so its last quote becomes U+201D; everything else is kept.
    assert parsed["system"] == system.replace('"""Docstring."""', '"""Docstring.""\u201d')
    plain = "One label.\nNo tricks here."
    warm = ollama.parse_modelfile(ollama.modelfile("m.gguf", "chatml", plain, [], {"temperature": 0.2}))
    assert warm["system"] == plain and ("temperature", "0.2") in warm["parameters"]
    # Characters Ollama would silently drop are dropped (Unicode spaces become spaces).
    assert ollama.ollama_text("a\u00a0b\u200bc\r\nd") == "a bc\nd"
    with pytest.raises(TasklingError, match="parameter 'stop'"):
        ollama.modelfile("m.gguf", "chatml", plain, [], {"stop": "x"})


def test_parse_modelfile_reads_an_ollama_style_file():
    text = ('# a comment\nFROM llama3.2\nPARAMETER temperature 1\nPARAMETER num_ctx 4096\n'
            'TEMPLATE "{{ .Prompt }}"\n'
            'SYSTEM """\nYou are Mario from Super Mario Bros.\n"""\n'
            'MESSAGE user Is Toronto in Canada?\nMESSAGE assistant yes\n')
    parsed = ollama.parse_modelfile(text)
    assert parsed["from"] == "llama3.2" and parsed["template"] == "{{ .Prompt }}"
    assert parsed["system"] == "\nYou are Mario from Super Mario Bros.\n"
    assert parsed["parameters"] == [("temperature", "1"), ("num_ctx", "4096")]
    assert parsed["messages"] == [("user", "Is Toronto in Canada?"), ("assistant", "yes")]
    with pytest.raises(TasklingError, match="no FROM line"):
        ollama.parse_modelfile("SYSTEM hi\n")
    with pytest.raises(TasklingError, match="line 2: unknown command 'FORM'"):
        ollama.parse_modelfile("FROM x\nFORM y\n")
    with pytest.raises(TasklingError, match="unterminated"):
        ollama.parse_modelfile('FROM x\nSYSTEM """never closed\n')
