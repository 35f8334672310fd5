"""Helpers shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, cwd: Path, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """Runs ``python -m qdaif ARGS`` in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "qdaif", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"qdaif {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def fork_cli(*args: str, cwd: Path, out: Path, setup=None) -> int:
    """Starts ``python -m qdaif ARGS`` in a forked child of this process and returns its pid.

    The child has every module already imported, so it starts in milliseconds (a fresh
    interpreter needs seconds to import ribs): tests that start many runs use this.
    Its stdout and stderr go to ``out`` (``.stdout``/``.stderr`` suffixes). ``setup()``
    runs in the child first (e.g. to set a resource limit or install a fault hook).
    Reap the child with :func:`wait_cli`.
    """
    import signal
    import traceback

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 99
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(cwd)
        for fd, suffix in ((1, ".stdout"), (2, ".stderr")):
            f = os.open(str(out) + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        if setup is not None:
            setup()
        from qdaif.cli import main

        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - report anything, never return into pytest
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def wait_cli(pid: int, timeout: float = 120) -> int:
    """Waits for a child of :func:`fork_cli`; returns its exit code (``-N``: killed by signal N)."""
    import signal
    import time

    deadline = time.time() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} ran longer than {timeout} s")
        time.sleep(0.01)


def cli_in_fork(*args: str, cwd: Path, out: Path, setup=None, timeout: float = 120) -> tuple[int, str]:
    """Runs :func:`fork_cli` to the end; returns (exit code, stderr)."""
    code = wait_cli(fork_cli(*args, cwd=cwd, out=out, setup=setup), timeout)
    return code, Path(str(out) + ".stderr").read_text()
