"""How a stage spreads its work: in this process, or over the nodes of a cluster.

A stage never asks where it runs; it hands its heavy work to `ctx.executor`. `LocalExecutor`
does everything here. `taskling.cluster` provides the Ray executor, which the CLI builds for
`--cluster` and puts on the context; stages never import the cluster package.
"""
from __future__ import annotations

from typing import Protocol


class Executor(Protocol):
    name: str           # "local", "ray"
    distributed: bool   # True when work leaves this process

    def describe(self) -> dict: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Everything in this process: the default."""

    name = "local"
    distributed = False

    def describe(self) -> dict:
        return {"executor": self.name}

    def close(self) -> None:
        return None
