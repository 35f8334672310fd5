"""A short opinions run on the real embedded model, through the CLI."""

import json

import pytest

from tests.helpers import run_cli
from qdaif.run_dir import CHECKPOINT, CONFIG, ELITES, HEATMAP, HISTORY, METRICS

pytestmark = pytest.mark.embedded


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_opinions_run_on_the_embedded_model_and_resume(tmp_path):
    args = ["domain=opinions", "iterations=3", "batch_size=6", "init_evaluations=6", "seed=1", "hydra.run.dir=out",
            "progress=false"]
    proc = run_cli("run", *args, cwd=tmp_path, check=True)
    out = tmp_path / "out"
    for name in (CONFIG, METRICS, HISTORY, ELITES, HEATMAP, CHECKPOINT):
        assert (out / name).is_file(), name
    assert "QD score" in proc.stdout
    elites, metrics, history = rows(out / ELITES), rows(out / METRICS), rows(out / HISTORY)
    assert elites, "the archive is empty"
    assert len(metrics) == 3 and metrics[-1]["evaluations"] == 18
    assert metrics[-1]["qd_score"] == pytest.approx(sum(e["quality"] for e in elites))
    assert metrics[-1]["num_elites"] == len(elites)
    assert len(history) == 18 - sum(m["dropped_empty"] + m["dropped_nonfinite"] for m in metrics)
    assert all(h["text"].strip() for h in history)
    assert {e["id"] for e in elites} <= {h["id"] for h in history if h["accepted"]}
    assert "SmolLM2-135M-Instruct" in (out / CONFIG).read_text()

    run_cli("run", "resume=out", "iterations=4", "progress=false", cwd=tmp_path, check=True)
    metrics2 = rows(out / METRICS)
    assert [m["iteration"] for m in metrics2] == [1, 2, 3, 4]
    assert metrics2[-1]["evaluations"] == 24
    assert metrics2[-1]["qd_score"] >= metrics[-1]["qd_score"] - 1e-9  # elitism never loses quality
    assert metrics2[-1]["qd_score"] == pytest.approx(sum(e["quality"] for e in rows(out / ELITES)))
