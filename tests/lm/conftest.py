"""Fixtures for the LM backend tests: real OpenAI-compatible servers (llama-cpp-python's, and llama.cpp's llama-server)."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

SERVER_START_TIMEOUT = 120.0


def pytest_configure(config):
    config.addinivalue_line("markers", "llama_server: starts a real llama.cpp server (llama-cpp-python[server]) on 127.0.0.1")
    config.addinivalue_line("markers", "llama_cpp_server: starts llama.cpp's own llama-server (scripts/serve_llama.sh) on 127.0.0.1")


@dataclasses.dataclass(frozen=True)
class LlamaServer:
    """A running ``python -m llama_cpp.server`` serving the embedded GGUF.

    Attributes:
        url: API root, ``http://127.0.0.1:<port>/v1``.
        api_key: Key the server requires (a random one per session).
        key_env: Environment variable that holds ``api_key`` during the session.
        log: File with the server's output.
    """

    url: str
    api_key: str
    key_env: str
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama_server(*, log: Path, api_key: str | None = None, threads: int = 1, n_ctx: int = 2048) -> tuple[subprocess.Popen, str]:
    """Starts llama-cpp-python's server with the embedded GGUF and waits until it answers.

    Args:
        log: File the server's stdout and stderr go to.
        api_key: Key the server will require, or ``None``.
        threads: CPU threads for prompt processing and generation. One by default: with
            two on a 2-core machine that runs anything else, llama.cpp's OpenMP threads
            wait for each other and a 48-token request took 84 s instead of 0.35 s.
        n_ctx: Context length.

    Returns:
        The process and the API root URL.

    Raises:
        RuntimeError: The server exited or did not answer in time; the message has the
            end of its log.
    """
    from qdaif.lm._embedded import embedded_gguf_path

    port = free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf_path()),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
        "--n_threads", str(threads), "--n_threads_batch", str(threads),
    ]
    if api_key:
        cmd += ["--api_key", api_key]
    out = open(log, "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with {proc.returncode}:\n{_tail(log)}")
        req = urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                if json.load(r).get("data"):
                    return proc, url
        except (OSError, ValueError):
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"llama.cpp server did not answer within {SERVER_START_TIMEOUT:.0f} s:\n{_tail(log)}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> LlamaServer:
    """A llama.cpp server on a free port of 127.0.0.1, for the whole session.

    Skips only when llama-cpp-python is not installed (scripts/install_llama_cpp.sh
    installs it; CI runs that script). A missing server extra or a crashing build fails.
    """
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed; run: bash scripts/install_llama_cpp.sh (about 5 min)"
    )
    try:
        import fastapi  # noqa: F401
        import sse_starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        pytest.fail(f"llama-cpp-python is installed without its server extra ({e}); run: bash scripts/install_llama_cpp.sh")
    key_env = "QDAIF_TEST_LLAMA_SERVER_KEY"
    api_key = "test-" + secrets.token_hex(8)
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    proc, url = start_llama_server(log=log, api_key=api_key)
    old = os.environ.get(key_env)
    os.environ[key_env] = api_key
    try:
        yield LlamaServer(url=url, api_key=api_key, key_env=key_env, log=log)
    finally:
        if old is None:
            os.environ.pop(key_env, None)
        else:
            os.environ[key_env] = old
        stop_server(proc)


# ------------------------------------------------- llama.cpp's own llama-server
ROOT = Path(__file__).resolve().parents[2]


def llama_server_binary() -> Path:
    """Where scripts/build_llama_server.sh keeps the llama-server build for this machine (built or not)."""
    out = subprocess.run(["bash", "-c", '. scripts/_llama_flags.sh && llama_server_bin "$LLAMA_CPP_VERSION"'],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def serve_llama(*, port: int, parallel: int, threads: int = 1, ctx: int = 2048, model: Path | None = None) -> str:
    """Starts llama-server on the 16-bit copy of the embedded GGUF (scripts/serve_llama.sh); returns its API root.

    Args:
        port: Port on 127.0.0.1.
        parallel: Slots (requests decoded together by continuous batching).
        threads: CPU threads. One by default, for the reason :func:`start_llama_server` gives.
        ctx: Context tokens per slot.
        model: GGUF file to serve (default: the 16-bit copy of the embedded model, as the script).

    Raises:
        RuntimeError: The script failed (its output is in the message).
    """
    from qdaif.lm._embedded import embedded_gguf_16bit

    cmd = ["bash", "scripts/serve_llama.sh", "--port", str(port), "--parallel", str(parallel), "--threads", str(threads),
           "--ctx", str(ctx), "--model", str(model or embedded_gguf_16bit())]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
    if out.returncode != 0:
        raise RuntimeError(f"serve_llama.sh failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout.strip().splitlines()[-1].split("url=")[1]


def stop_llama(port: int) -> None:
    """Stops the llama-server that scripts/serve_llama.sh started on ``port``."""
    subprocess.run(["bash", "scripts/serve_llama.sh", "--stop", "--port", str(port)], cwd=ROOT, capture_output=True, check=True)


@dataclasses.dataclass(frozen=True)
class LlamaCppServer:
    """A running llama-server (scripts/serve_llama.sh) serving the embedded GGUF.

    Attributes:
        url: API root, ``http://127.0.0.1:<port>/v1``.
        port: Its port (``scripts/serve_llama.sh --stop --port PORT`` stops it).
        parallel: Its slots.
    """

    url: str
    port: int
    parallel: int


def require_llama_server_binary() -> None:
    """Skips the test when llama-server is not built (CI builds it: scripts/setup.sh --dev)."""
    binary = llama_server_binary()
    if not binary.is_file():
        pytest.skip(f"llama.cpp's llama-server is not built ({binary}); run: bash scripts/build_llama_server.sh (about 6 min)")


@pytest.fixture(scope="session")
def llama_cpp_server() -> LlamaCppServer:
    """llama.cpp's llama-server with 4 slots on a free port of 127.0.0.1, for the whole session.

    Skips only when the binary is not built; a binary that fails to start fails the tests.
    """
    require_llama_server_binary()
    port, parallel = free_port(), 4
    url = serve_llama(port=port, parallel=parallel)
    try:
        yield LlamaCppServer(url=url, port=port, parallel=parallel)
    finally:
        stop_llama(port)
