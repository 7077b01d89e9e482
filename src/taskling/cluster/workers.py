"""The workers a pool pins to each node: plain classes, made Ray actors by pool.py.

Each loads what it needs once (a teacher backend, the embedder, the student's
tokenizer, the served model) and then runs shards. An error while loading is
kept and reported by ready(), so the driver can name the node and the cause.
"""
from __future__ import annotations

import os
import time

from ..core.config import ModelCfg


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def nearest(mcfg: ModelCfg, endpoints: list[str], timeout: float = 2.0) -> tuple[ModelCfg, dict]:
    """The endpoint of `endpoints` that answers GET /models fastest from this node (openai backend only)."""
    if mcfg.backend != "openai" or not endpoints:
        return mcfg, {}
    import httpx

    seen = {}
    for url in endpoints:
        t0 = time.perf_counter()
        try:
            r = httpx.get(url.rstrip("/") + "/models", timeout=timeout)
            if r.status_code < 500:
                seen[url] = round((time.perf_counter() - t0) * 1000, 2)
        except httpx.HTTPError:
            continue
    if not seen:
        if mcfg.base_url:
            return mcfg, {"probed_ms": {}}
        raise ConnectionError(f"none of cluster.endpoints answers from this node: {', '.join(endpoints)}")
    best = min(seen, key=seen.get)
    return mcfg.model_copy(update={"base_url": best}), {"probed_ms": seen}


class TeacherWorker:
    """Teacher requests on one node, through the node's own backend."""

    def __init__(self, mcfg: dict, threads: int, endpoints: list[str], script=None):
        from . import node_override

        self.error, self.backend, self.probe = None, None, {}
        try:
            from ..teacher.backends import open_backend
            from ..teacher.backends import scripted

            if script is not None:
                scripted.set_script(script)
            cfg = node_override(ModelCfg(**mcfg))  # the node's own server wins over the nearest endpoint
            if cfg.base_url == mcfg.get("base_url"):
                cfg, self.probe = nearest(cfg, endpoints)
            self.endpoint = cfg.base_url or "local"
            self.backend = open_backend(cfg, threads)
        except Exception as e:  # reported by ready()
            self.error = _err(e)

    def ready(self) -> dict:
        if self.error:
            return {"error": self.error}
        caps = self.backend.capabilities
        return {"node": _node(), "pid": os.getpid(), "endpoint": self.endpoint, "model": self.backend.describe(),
                "caps": {"logprobs": caps.logprobs, "json_schema": caps.json_schema}, **self.probe}

    def run(self, requests: list[dict]):
        from ..teacher.backends import Request

        return self.backend.generate([Request(**{**r, "stop": tuple(r.get("stop", ()))}) for r in requests])


class IngestWorker:
    """Converts and chunks files on one node (nothing is written there)."""

    def __init__(self, cfg_json: dict):
        self.error = None
        try:
            from ..core.config import Config
            from ..data.ingest import limits_of, token_counter

            self.cfg = Config.model_validate(cfg_json)
            self.limits = limits_of(self.cfg)
            self.count = token_counter(self.cfg.student.model)
        except Exception as e:
            self.error = _err(e)

    def ready(self) -> dict:
        return {"error": self.error} if self.error else {"node": _node(), "pid": os.getpid()}

    def run(self, files: list[tuple[str, bytes, str]]) -> list[list[dict]]:
        from ..data.ingest import prepare

        return [prepare(self.cfg, self.limits, self.count, rel, data, sha) for rel, data, sha in files]


class EmbedWorker:
    """Embeds chunk texts on one node."""

    def __init__(self, model: str, threads: int, max_tokens: int):
        self.error = None
        try:
            from ..data.embed import Embedder

            self.emb = Embedder(model, threads=threads, max_tokens=max_tokens)
        except Exception as e:
            self.error = _err(e)

    def ready(self) -> dict:
        return {"error": self.error} if self.error else {"node": _node(), "pid": os.getpid()}

    def run(self, texts: list[str]):
        return self.emb.encode(texts)


class PredictWorker:
    """Answers rows with the served model on one node (the model file must be readable there)."""

    def __init__(self, target, threads: int):
        self.error = None
        try:
            from ..serving import engine as eng

            self.target, self.engine = target, eng.load(target, threads)
        except Exception as e:
            self.error = _err(e)

    def ready(self) -> dict:
        return {"error": self.error} if self.error else {"node": _node(), "pid": os.getpid()}

    def run(self, inputs: list[str]) -> list[dict]:
        from ..serving import engine as eng

        return eng.task_outputs(self.engine, self.target.info, inputs)
