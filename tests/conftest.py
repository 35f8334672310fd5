"""Shared fixtures. The scripted fake LM drives fast engine tests; `embedded_lm` is the real model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """Runs ``python -m qdaif ARGS`` in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "qdaif", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"qdaif {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def opinions_cfg():
    """The composed default config with the opinions domain and the scripted fake LM."""
    from qdaif.cli import compose_config

    return compose_config(["model=scripted_fake"])


@pytest.fixture(scope="session")
def opinions_domain(opinions_cfg):
    from qdaif.domain import domain_from_config

    return domain_from_config(opinions_cfg.domain)


@pytest.fixture(scope="session")
def embedded_lm():
    """The real embedded SmolLM2-135M model (transformers, bfloat16, CPU), loaded once."""
    from qdaif.lm import make_lm

    return make_lm({"backend": "transformers", "name": "embedded"})
