"""Run a function on untrusted input in a worker process with a wall-time and a memory limit.

    box = Sandbox(timeout_s=120, memory_mb=1024, allowed=("taskling.data.formats",))
    result = box.call("taskling.data.formats:convert", name, data, limits)   # SandboxFailed past a limit

The worker is a separate Python process (`python -c WORKER`, which imports this module; never a fork of this
one, so it holds none of this process's threads, locks or models), started on first use and kept
for the next call. It caps its own address space (RLIMIT_AS), so a file that would take the
memory raises MemoryError there; a call past its time is ended by killing the worker, which is
started again for the next call. A worker that dies (a crash in a C parser, the kernel's OOM
killer) costs that one call. The worker dies with the process that started it (Linux's parent-death
signal), so none outlives its user even when that user is killed mid-call; `close` ends it at
once otherwise. Requests and answers are pickles over two pipes; answers are
unpickled with only the classes of `allowed` modules (and plain Python values), so a worker
taken over by a hostile file still cannot make this process run code.
"""
from __future__ import annotations

import importlib
import io
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

from .errors import TasklingError

HEADER = struct.Struct("!Q")
STARTUP_S = 120.0  # a worker's imports, on a loaded machine
# The worker's entry: this module imported once, by its name (`-m` would run a second copy of it as
# __main__ beside the one the package's own imports load).
WORKER = "import sys; from taskling.core.sandbox import serve; serve(*map(int, sys.argv[1:5]), sys.argv[5:])"
SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex",
                 "bool", "NoneType", "slice", "range", "object"}


class SandboxFailed(TasklingError):
    """The call did not finish inside its limits; the message says which (time, memory, crash)."""


class SafeUnpickler(pickle.Unpickler):
    """Only plain values, exceptions, and classes from the allowed modules."""

    def __init__(self, data: bytes, allowed: tuple[str, ...]):
        super().__init__(io.BytesIO(data))
        self.allowed = allowed

    def find_class(self, module: str, name: str):
        ok = (module == "builtins" and (name in SAFE_BUILTINS or name.endswith(("Error", "Exception", "Warning"))))
        ok = ok or (module == "copyreg" and name in ("__newobj__", "_reconstructor", "__newobj_ex__"))
        ok = ok or any(module == m or module.startswith(m + ".") for m in self.allowed)
        if not ok:
            raise pickle.UnpicklingError(f"the worker sent {module}.{name}, which is not allowed")
        return super().find_class(module, name)


class Sandbox:
    """A worker process that runs one call at a time under `timeout_s` and `memory_mb`."""

    def __init__(self, timeout_s: float, memory_mb: int, allowed: tuple[str, ...] = ()):
        self.timeout_s, self.memory_mb, self.allowed = timeout_s, memory_mb, allowed
        self.proc: subprocess.Popen | None = None
        self.started = 0  # workers started, restarts included

    def _start(self) -> None:
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        err = None if os.environ.get("TASKLING_DEBUG") else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(req_r), str(rep_w),
                                          str(self.memory_mb), str(os.getpid()), *self.allowed], pass_fds=(req_r, rep_w),
                                         stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env)
        finally:
            os.close(req_r)
            os.close(rep_w)
        self.req, self.rep = os.fdopen(req_w, "wb"), rep_r
        self.started += 1
        try:  # the worker says it is ready once its modules are imported: start-up is not a call's time
            self._read_exactly(HEADER.size, time.monotonic() + STARTUP_S)
        except (TimeoutError, EOFError):
            code = self._end()
            raise SandboxFailed(f"the conversion worker did not start (exit code {code}); run with --debug to see "
                                "its error") from None

    def start(self) -> None:
        """A running worker (started again when the last one ended)."""
        if self.proc is None or self.proc.poll() is not None:
            self.close()
            self._start()

    def call(self, fn_path: str, *args):
        """fn(*args) in the worker; its exception is raised here, SandboxFailed past a limit."""
        self.start()
        blob = pickle.dumps((fn_path, args), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.req.write(HEADER.pack(len(blob)) + blob)
            self.req.flush()
            reply = self._read(time.monotonic() + self.timeout_s)
        except (BrokenPipeError, EOFError):
            code = self._end()
            why = (f"it was killed, out of memory? (ingest.convert_memory_mb={self.memory_mb})" if code in (-9, 137)
                   else f"its worker stopped with exit code {code}")
            raise SandboxFailed(f"reading it crashed the converter: {why}") from None
        except TimeoutError:
            self._end()
            raise SandboxFailed(f"reading it took longer than ingest.convert_timeout_s={self.timeout_s:g} s; it was "
                                "stopped (raise the limit if the file is sound)") from None
        ok, value = SafeUnpickler(reply, self.allowed).load()
        if ok:
            return value
        raise value

    def peak_rss_mb(self) -> float | None:
        """The running worker's peak resident memory (Linux), for benchmarks and tests."""
        if self.proc is None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def _read(self, deadline: float) -> bytes:
        head = self._read_exactly(HEADER.size, deadline)
        return self._read_exactly(HEADER.unpack(head)[0], deadline)

    def _read_exactly(self, n: int, deadline: float) -> bytes:
        parts, got = [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.rep], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(self.rep, min(n - got, 1 << 20))
            if not chunk:
                raise EOFError
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _end(self) -> int | None:
        """Kill the worker (the next call starts another); its exit code."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            code = self.proc.wait()
        self.close()
        return code

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.req.close()  # the worker ends when its request pipe closes
            except OSError:
                pass
            os.close(self.rep)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when the process that started it ends, however it ends (a
    worker busy converting would not see its request pipe close). Linux only: elsewhere the closed
    pipe ends an idle worker and a busy one ends when its conversion does."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent was gone before the signal was armed
        os._exit(0)


def serve(req_fd: int, rep_fd: int, memory_mb: int, parent: int, preload: list[str]) -> None:
    """The worker's loop: import what it will run, cap memory, say it is ready, then answer requests
    until the request pipe closes."""
    import resource

    die_with_parent(parent)
    for mod in preload:
        importlib.import_module(mod)
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    req, rep = os.fdopen(req_fd, "rb"), os.fdopen(rep_fd, "wb")
    rep.write(HEADER.pack(0))
    rep.flush()
    while head := req.read(HEADER.size):
        fn_path, args = pickle.loads(req.read(HEADER.unpack(head)[0]))
        mod, name = fn_path.split(":")
        try:
            out = (True, getattr(importlib.import_module(mod), name)(*args))
        except BaseException as e:  # handed back whole; the caller decides
            out = (False, e)
        try:
            blob = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # an exception that cannot be pickled still reaches the caller as one
            blob = pickle.dumps((False, RuntimeError(f"{type(out[1]).__name__}: {str(out[1])[:300]} ({e})")))
        del out
        rep.write(HEADER.pack(len(blob)) + blob)
        rep.flush()
