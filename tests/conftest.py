"""Shared fixtures. The scripted fake LM drives fast engine tests; `embedded_lm` is the real model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Subprocesses (`python -m qdaif ...` in a temporary folder) import the qdaif of this
# checkout, whatever else is installed (an editable install of another checkout, say).
REPO_ROOT = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join([REPO_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != "."])


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
