"""What every `taskling` command shares: the one-line error guard, the stage context from the
command line's options, JSON output, and the options themselves. `cli.py` and `cli_look.py` hold
the commands."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Callable, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from .core.config import Config, load_config  # noqa: E402
from .core.errors import TasklingError  # noqa: E402
from .core.executor import Executor, LocalExecutor  # noqa: E402
from .core.lock import acquire, release  # noqa: E402
from .core.workspace import Context  # noqa: E402

HELP = {"help_option_names": ["-h", "--help"]}
err = Console(stderr=True)
STATE = {"debug": False}

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The task file.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a setting: --set train.steps=50")]
RunOpt = Annotated[Optional[str], typer.Option("--run", help="Run id (default: the task name).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Re-run even if up to date.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", help="CPU threads (default: TASKLING_THREADS, else all cores).")]
ClusterOpt = Annotated[Optional[str], typer.Option("--cluster", help="Run on a Ray cluster: its address "
                                                   "(HOST:6379, auto) or 'local' (default cluster.address).")]


def guarded(fn: Callable[[], object]) -> object:
    """Run fn; turn user errors into one line and a non-zero exit."""
    try:
        return fn()
    except TasklingError as e:
        if STATE["debug"]:
            raise
        for line in str(e).splitlines():
            err.print(f"[red]error:[/] {line}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        err.print("[yellow]interrupted; run the same command again to continue where it stopped[/]")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as e:  # a bug: say so briefly unless asked for details
        if STATE["debug"]:
            raise
        err.print(f"[red]internal error:[/] {type(e).__name__}: {e}  (run again with --debug for the traceback)",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        for path in STATE.pop("locks", []):
            release(path)


def make_ctx(config: Path, sets: Optional[list[str]], run_id: Optional[str], force: bool = False,
             threads: Optional[int] = None, cluster: Optional[str] = None, spread: bool = False,
             lock: bool = True) -> Context:
    """The stage context; `spread`: a command whose work can run on a cluster (--cluster or cluster.address).
    `lock`: a command that writes the workspace holds its lock (core.lock) until it ends."""
    from .api import at_kept_round

    cfg = load_config(config, sets or [])
    if lock:
        STATE.setdefault("locks", []).append(acquire(cfg.root))  # released by guarded(), or when the process ends
    ctx = Context(cfg, run_id=run_id, force=force, console=err, threads=threads,
                  executor=executor_for(cfg, cluster) if cluster or (spread and cfg.cluster.address) else LocalExecutor())
    return at_kept_round(ctx)  # after the loop, a stage command acts on the round it exported


def executor_for(cfg: Config, address: Optional[str]) -> Executor:
    """The Ray executor on the cluster at `address` (or cluster.address), closed when the command ends."""
    from .api import executor_for as connect

    executor = connect(cfg, address or cfg.cluster.address, err)
    d = executor.describe()
    err.print(f"cluster: {d['address']}, {d['nodes']} nodes, {d['cpus']:g} CPUs")
    return executor


def emit(obj: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(obj, indent=2, default=str))

