"""The package as a user installs it: a wheel, not editable, run from an unrelated folder."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """qdaif built into a wheel and installed (--no-deps) into a fresh target folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, str(ROOT), "-w", str(tmp / "dist")],
         cwd=tmp, env=env)
    (wheel,) = (tmp / "dist").glob("qdaif-*.whl")
    site = tmp / "site"
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], cwd=tmp, env=env)
    # The target folder first: it shadows the editable install of this checkout.
    return site, {**env, "PYTHONPATH": str(site), "PYTHONUNBUFFERED": "1"}


def test_wheel_carries_configs_domains_and_plugin_data(installed):
    site, _ = installed
    assert (site / "qdaif" / "configs" / "config.yaml").is_file()
    assert not (site / "qdaif" / "configs").is_symlink()
    for name in ("opinions", "poetry", "stories", "multitask", "rewrites"):
        assert (site / "qdaif" / "configs" / "domain" / f"{name}.yaml").is_file(), name
    assert (site / "qdaif" / "plugins" / "multitask" / "data" / "items.jsonl").is_file()
    for name in ("report.html.j2", "report.css", "report.js"):
        assert (site / "qdaif" / "templates" / name).is_file(), name


def test_installed_wheel_runs_every_command_from_another_folder(installed, tmp_path):
    site, env = installed
    where = _run([sys.executable, "-c", "import qdaif; print(qdaif.__file__)"], cwd=tmp_path, env=env).stdout
    assert where.strip().startswith(str(site)), where
    qdaif = [sys.executable, "-m", "qdaif"]
    _run([*qdaif, "run", "model=scripted_fake", "progress=false", "iterations=3", "batch_size=4"], cwd=tmp_path, env=env)
    (run,) = (tmp_path / "runs" / "opinions").iterdir()  # outputs go under the current folder
    assert (run / "elites.jsonl").is_file()
    # The console script is the same program as python -m qdaif.
    script = site / "bin" / "qdaif"
    _run([str(script), "run", "domain=poetry", "model=scripted_fake", "progress=false", "iterations=2",
          "batch_size=4", "hydra.run.dir=poems"], cwd=tmp_path, env=env)
    assert (tmp_path / "poems" / "metrics.jsonl").is_file()
    (tmp_path / "texts.txt").write_text("Carrots are lovely.\nI hate peas.\n")
    scored = _run([*qdaif, "judge", "--input", "texts.txt", "model=scripted_fake"], cwd=tmp_path, env=env).stdout
    assert len(scored.strip().splitlines()) == 2
    _run([*qdaif, "plot", str(run), "--out", "plots"], cwd=tmp_path, env=env)
    assert any((tmp_path / "plots").glob("*.png"))
    _run([*qdaif, "report", str(run), "--out", "report.html"], cwd=tmp_path, env=env)
    assert (tmp_path / "report.html").stat().st_size > 1000
    _run([*qdaif, "compare", str(run), "--out", "cmp"], cwd=tmp_path, env=env)
    assert (tmp_path / "cmp" / "summary.csv").is_file()
    _run([*qdaif, "human-eval", "export", str(run), "--per-cell", "1", "--out", "he"], cwd=tmp_path, env=env)
    assert any((tmp_path / "he").iterdir())
