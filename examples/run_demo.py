"""`make demo`: run the shipped example end to end on the embedded default models.

Copies examples/devdocs-router into .demo/devdocs-router (so the shipped
folder stays clean), runs the real `taskling run` there and prints where the
report and the exported model are. Running it again reuses whatever is
finished (each stage is cached by fingerprint); `--fresh` starts over.
The wall time of each stage is written to .demo/demo-result.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "devdocs-router"
SHIPPED = ("taskling.yaml", "gold.jsonl", "SOURCES.md", "docs")


def prepare(workspace: Path, fresh: bool) -> None:
    if fresh and workspace.exists():
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        src, dst = EXAMPLE / name, workspace / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)


def taskling_exe() -> str:
    exe = Path(sys.executable).parent / "taskling"
    return str(exe) if exe.exists() else (shutil.which("taskling") or "taskling")


def run_demo(workspace: Path, fresh: bool = False, extra: list[str] | None = None) -> dict:
    """Run the example in `workspace`; returns the `taskling run --json` result plus wall time."""
    prepare(workspace, fresh)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([taskling_exe(), "run", "--json", *(extra or [])], cwd=workspace, env=env,
                          stdout=subprocess.PIPE, text=True)
    wall = round(time.perf_counter() - t0, 1)
    if proc.returncode != 0:
        raise SystemExit(f"demo: 'taskling run' failed with exit code {proc.returncode} in {workspace}")
    result = json.loads(proc.stdout)
    result["wall_seconds"] = wall
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=ROOT / ".demo" / "devdocs-router")
    ap.add_argument("--fresh", action="store_true", help="delete the demo workspace first")
    args = ap.parse_args()
    result = run_demo(args.workspace, args.fresh)
    out = args.workspace.parent / "demo-result.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    stages = ", ".join(f"{name} " + ("cached" if st["skipped"] else f"{st['seconds']:.0f} s")
                       for name, st in result["stages"].items())
    print(f"\ndemo finished in {result['wall_seconds']:.0f} s ({stages})")
    print(f"report: {result['report']}")
    print(f"model:  {result['model']}")
    for g in result.get("gguf", []):
        print(f"        {g}")
    print(f"model card: {result.get('model_card')}")
    print(f"serve it: cd {args.workspace} && ../../.venv/bin/taskling serve")
    print(f"figures:  {out}")


if __name__ == "__main__":
    main()
