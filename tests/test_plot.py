"""Plots drawn from run directory files: 1D, 2D and categorical archives, progress, animation."""

import json

import numpy as np
import pytest
from PIL import Image

from qdaif import cli
from qdaif.errors import ConfigError, RunDirError
from qdaif.runs import load_run
from qdaif.plot import (
    PROGRESS,
    animate_run,
    heatmap_figure,
    plot_run,
    progress_figure,
    snapshots,
)

OPINION_EDGES = [0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.10, 0.20, 0.50,
                 0.80, 0.90, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 0.995, 1.0]
SEEDS = ["The first seed text.", "The second seed text."]


def numeric(name, edges, labels=(" positive", " negative")):
    return {"name": name, "axis_label": f"{name.title()}: P(yes)", "labels": list(labels),
            "query": "{text}", "edges": list(edges)}


def categorical(name, categories):
    return {"name": name, "axis_label": name.title(), "categories": list(categories)}


def _bins(m):
    return len(m["categories"]) if "categories" in m else len(m["edges"]) - 1


def random_rows(measures, n, *, seed=0, batch=4):
    """History rows with random cells and qualities, as the engine writes them (without bookkeeping)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        cell = [int(rng.integers(_bins(m))) for m in measures]
        values = []
        for m, c in zip(measures, cell):
            if "edges" in m:
                values.append(float(rng.uniform(m["edges"][c], m["edges"][c + 1])))
            else:
                values.append(float(c))
        rows.append({"text": f"text number {k}", "quality": float(rng.uniform(0.05, 0.95)), "measures": values,
                     "cell": cell, "iteration": k // batch + 1})
    return rows


def make_run(path, *, measures, rows, seeds=SEEDS, algorithm=None, name="toy", batch=4):
    """Writes a run directory (config.yaml, history/elites/metrics.jsonl) from history rows.

    Each row needs ``text``, ``quality``, ``measures`` and ``cell``; ``id``, ``iteration``
    (default: ``batch`` rows per iteration), ``parents`` (seeds in the first iteration,
    earlier ids later), ``operator``, ``accepted`` and ``labels`` are filled in. Elites
    and metrics are replayed from the rows as MAP-Elites would keep them.
    """
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(rows))
    config = {"domain": {"name": name, "seeds": list(seeds), "measures": measures},
              "iterations": 0, "batch_size": batch, "seed": 0}
    if algorithm:
        config["algorithm"] = algorithm
    best, history, metrics = {}, [], []
    cells = int(np.prod([_bins(m) for m in measures]))
    for k, r in enumerate(rows):
        it = r.get("iteration", k // batch + 1)
        first = it == 1
        parents = r.get("parents") or ([f"seed:{j}" for j in rng.permutation(len(seeds))] if first or k < 2 else
                                       [int(x) for x in rng.choice(k, size=min(3, k), replace=False)])
        h = {"id": k, "iteration": it, "operator": "seeded_init" if first else "lmx_near", "parents": parents,
             "text": r["text"], "quality": r["quality"], "measures": r["measures"], "cell": r["cell"]}
        cell = tuple(r["cell"])
        h["accepted"] = cell not in best or r["quality"] > best[cell]["quality"]
        h["labels"] = {m["name"]: [v, 1 - v] for m, v in zip(measures, r["measures"]) if "edges" in m}
        if h["accepted"]:
            best[cell] = h
        history.append(h)
        last_of_iteration = k == len(rows) - 1 or rows[k + 1].get("iteration", (k + 1) // batch + 1) != it
        if last_of_iteration:
            q = [e["quality"] for e in best.values()]
            metrics.append({"iteration": it, "evaluations": k + 1, "qd_score": sum(q), "coverage": len(q) / cells,
                            "max_quality": max(q), "num_elites": len(q)})
    elites = [{key: e[key] for key in ("text", "quality", "measures", "cell", "id", "iteration")}
              for _, e in sorted(best.items())]
    (path / "config.yaml").write_text(json.dumps(config, indent=1), encoding="utf-8")  # JSON is YAML
    for name_, data in (("history", history), ("elites", elites), ("metrics", metrics)):
        (path / f"{name_}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in data), encoding="utf-8")
    return path


@pytest.fixture
def run_1d(tmp_path):
    measures = [numeric("sentiment", OPINION_EDGES)]
    return make_run(tmp_path / "run1d", measures=measures, rows=random_rows(measures, 60))


def mesh_of(fig):
    (mesh,) = fig.axes[0].collections
    return mesh


def tick_texts(ticks):
    return [t.get_text() for t in ticks]


def test_1d_archive_drawn_to_scale_with_its_label(run_1d):
    fig = heatmap_figure(load_run(run_1d))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Sentiment: P(yes)"
    assert ax.get_yticks().size == 0  # a strip: one row, no y axis
    x = mesh_of(fig).get_coordinates()[0, :, 0]
    np.testing.assert_allclose(x, OPINION_EDGES)  # bins to scale: a bin's width is its share of [0, 1]
    np.testing.assert_allclose(ax.xaxis.get_minor_locator().tick_values(0, 1), OPINION_EDGES)  # bin boundaries
    assert ax.get_xlim() == (0.0, 1.0)
    assert "QD score" in ax.get_title() and "cells)" in ax.get_title()


def test_1d_equal_bins_label_the_true_edges(run_1d):
    run = load_run(run_1d)
    fig = heatmap_figure(run, equal_bins=True)
    ax = fig.axes[0]
    np.testing.assert_allclose(mesh_of(fig).get_coordinates()[0, :, 0], np.arange(21))
    assert tick_texts(ax.get_xticklabels()) == [f"{e:g}" for e in OPINION_EDGES]
    # the drawn colours are the elites' qualities, empty cells masked
    drawn = mesh_of(fig).get_array().reshape(1, 20)[0]
    grid = run.grid()
    assert np.array_equal(np.ma.getmaskarray(drawn), np.isnan(grid))
    np.testing.assert_allclose(drawn.compressed(), grid[np.isfinite(grid)])


def test_2d_grid_with_both_axis_labels(tmp_path):
    measures = [numeric("sentiment", [0, 0.2, 0.5, 1]), numeric("length", [0, 0.1, 0.3, 0.6, 1])]
    run = load_run(make_run(tmp_path / "r", measures=measures, rows=random_rows(measures, 40)))
    fig = heatmap_figure(run)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Sentiment: P(yes)", "Length: P(yes)")
    coords = mesh_of(fig).get_coordinates()
    np.testing.assert_allclose(coords[0, :, 0], [0, 0.2, 0.5, 1])
    np.testing.assert_allclose(coords[:, 0, 1], [0, 0.1, 0.3, 0.6, 1])
    drawn = mesh_of(fig).get_array().reshape(4, 3)  # rows are the y measure
    grid = run.grid()
    assert np.array_equal(np.ma.getmaskarray(drawn), np.isnan(grid.T))
    np.testing.assert_allclose(drawn.filled(np.nan), grid.T)


def test_categorical_axes_are_labelled_with_their_names(tmp_path):
    genres = ["horror", "romance", "science fiction"]
    measures = [numeric("ending", [0, 0.5, 1], labels=(" happy", " tragic")), categorical("genre", genres)]
    run = load_run(make_run(tmp_path / "r", measures=measures, rows=random_rows(measures, 30)))
    ax = heatmap_figure(run).axes[0]
    assert ax.get_ylabel() == "Genre"
    assert tick_texts(ax.get_yticklabels()) == genres
    np.testing.assert_allclose(ax.get_yticks(), [0.5, 1.5, 2.5])
    measures = [categorical("genre", genres)]
    run = load_run(make_run(tmp_path / "c1", measures=measures, rows=random_rows(measures, 10)))
    ax = heatmap_figure(run, equal_bins=True).axes[0]
    assert tick_texts(ax.get_xticklabels()) == genres and ax.get_xlabel() == "Genre"


def test_progress_against_evaluations(run_1d):
    run = load_run(run_1d)
    fig = progress_figure(run)
    assert [ax.get_ylabel() for ax in fig.axes] == ["QD score", "coverage (%)", "best quality"]
    assert fig.axes[-1].get_xlabel().startswith("evaluations")
    (line,) = fig.axes[0].get_lines()
    np.testing.assert_allclose(line.get_xdata(), [m["evaluations"] for m in run.metrics])
    np.testing.assert_allclose(line.get_ydata(), [m["qd_score"] for m in run.metrics])


def test_plot_run_writes_pngs(run_1d, tmp_path):
    out = tmp_path / "pictures"
    paths = plot_run(run_1d, out=out)
    assert [p.name for p in paths] == ["heatmap.png", PROGRESS]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 500


def test_snapshots_replay_history_to_the_elites(run_1d):
    run = load_run(run_1d)
    snaps = snapshots(run, 7)
    assert len(snaps) == 7
    assert [s[0] for s in snaps][-1] == len(run.history)
    np.testing.assert_array_equal(snaps[-1][2], run.grid())
    filled = [np.isfinite(s[2]).sum() for s in snaps]
    assert filled == sorted(filled)  # cells are never emptied
    with pytest.raises(ConfigError, match="--frames"):
        snapshots(run, len(run.history) + 1)


@pytest.mark.parametrize("frames", [1, 6])
def test_animation_has_one_frame_per_snapshot(run_1d, tmp_path, frames):
    path = tmp_path / "evolution.gif"
    assert animate_run(run_1d, path=path, frames=frames, dpi=40) == frames
    with Image.open(path) as im:
        assert im.n_frames == frames


def test_three_measures_are_drawn_as_the_best_over_the_leading_one(tmp_path):
    from qdaif.runs import drawable

    measures = [numeric(n, [0, 0.5, 1]) for n in ("a", "b", "c")]
    run3 = load_run(make_run(tmp_path / "r3", measures=measures, rows=random_rows(measures, 40)))
    flat = drawable(run3)
    assert [a.name for a in flat.axes] == ["b", "c"] and flat.config["projected_over"] == ["a"]
    expected = {}
    for e in run3.elites:
        key = tuple(e["cell"][1:])
        expected[key] = max(expected.get(key, -np.inf), e["quality"])
    assert {tuple(e["cell"]): e["quality"] for e in flat.elites} == expected
    assert all(len(h["cell"]) == 2 for h in flat.history)
    fig = heatmap_figure(run3)
    assert "best over a" in fig.axes[0].get_title()


def test_bad_inputs_raise_errors_a_user_can_act_on(tmp_path, run_1d):
    with pytest.raises(RunDirError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="not a qdaif run directory"):
        load_run(tmp_path / "empty")
    with pytest.raises(ConfigError, match=".gif or .mp4"):
        animate_run(run_1d, path=tmp_path / "x.avi", frames=2)
    broken = make_run(tmp_path / "broken", measures=[numeric("s", [0, 1])], rows=random_rows([numeric("s", [0, 1])], 2))
    (broken / "elites.jsonl").write_text('{"cell": [3], "quality": 0.5}\n')
    with pytest.raises(RunDirError, match="does not fit"):
        load_run(broken)


def test_cli_plot_and_animate_a_scripted_fake_run(opinions_cfg, tmp_path, capsys):
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(opinions_cfg, {"iterations": 4, "batch_size": 6, "progress": False, "plot_every": 0})
    cli.start_run(cfg, tmp_path / "run")
    capsys.readouterr()
    cli.main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--equal-bins"])
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"heatmap.png", PROGRESS}
    cli.main(["plot", str(tmp_path / "run"), "--animate", "--frames", "5", "--fps", "10"])
    assert "(5 frames)" in capsys.readouterr().out
    with Image.open(tmp_path / "run" / "evolution.gif") as im:
        assert im.n_frames == 5
    with pytest.raises(SystemExit):
        cli.main(["plot", str(tmp_path / "missing")])
    assert capsys.readouterr().err.strip().startswith("qdaif: error: run directory")
