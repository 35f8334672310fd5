"""Comparing runs: discovery, grouping, bootstrap CIs, the common budget, curves and errors."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from qdaif import cli
from qdaif.compare import (
    CURVES,
    SUMMARY_CSV,
    SUMMARY_MD,
    bootstrap_ci,
    compare_runs,
    curves_figure,
    find_runs,
    load_metrics,
    summarize,
)
from qdaif.errors import ConfigError, RunDirError
from tests.helpers import run_cli

B = 2000  # bootstrap resamples in tests: enough for stable intervals, fast


def write_run(path, *, domain="toy", seed=0, algorithm=None, evaluations=(4, 8, 12), qd=None, coverage=None,
              max_quality=None):
    """Writes a minimal run directory: config.yaml and metrics.jsonl (one row per evaluation count)."""
    n = len(evaluations)
    qd = list(qd) if qd is not None else [float(k + 1 + seed) for k in range(n)]
    coverage = list(coverage) if coverage is not None else [0.1 * (k + 1) for k in range(n)]
    max_quality = list(max_quality) if max_quality is not None else [0.5 + 0.01 * seed] * n
    path.mkdir(parents=True, exist_ok=True)
    lines = [f"domain:\n  name: {domain}\n", f"seed: {seed}\n"]
    if isinstance(algorithm, str):
        lines.append(f"algorithm:\n  name: {algorithm}\n")
    (path / "config.yaml").write_text("".join(lines))
    rows = [{"iteration": k + 1, "evaluations": e, "qd_score": q, "coverage": c, "max_quality": m,
             "num_elites": k + 1} for k, (e, q, c, m) in enumerate(zip(evaluations, qd, coverage, max_quality))]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_csv(path):
    with open(path, newline="") as f:
        return {(r["domain"], r["algorithm"]): r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    """A real Hydra multirun of three seeds with the scripted fake LM."""
    root = tmp_path_factory.mktemp("multirun")
    sweep = root / "sweep"
    run_cli("run", "-m", "seed=0,1,2", "model=scripted_fake", "iterations=3", "batch_size=2", "progress=false",
            "plot_every=0", f"hydra.sweep.dir={sweep}", cwd=root, timeout=600, check=True)
    return sweep


# ------------------------------------------------------------------ end to end
def test_compare_multirun_means_match_metrics_files(multirun, tmp_path, capsys):
    out = tmp_path / "cmp"
    cli.main(["compare", str(multirun), "--out", str(out), "--bootstrap", str(B), "--seed", "3"])
    printed = capsys.readouterr().out
    runs = find_runs([multirun])
    assert len(runs) == 3 and all(".hydra" not in p.parts for p in runs)
    last = [json.loads((p / "metrics.jsonl").read_text().splitlines()[-1]) for p in runs]
    table = read_csv(out / SUMMARY_CSV)
    assert list(table) == [("opinions", "qdaif")]
    row = table["opinions", "qdaif"]
    assert row["runs"] == "3" and row["seeds"] == "0 1 2"
    assert int(row["evaluations_min"]) == int(row["evaluations_max"]) == 6 == int(row["N"])
    for metric in ("qd_score", "coverage", "max_quality"):
        expected = np.mean([r[metric] for r in last])
        assert float(row[f"{metric}_mean"]) == pytest.approx(expected, rel=1e-12)
        assert float(row[f"{metric}@N_mean"]) == pytest.approx(expected, rel=1e-12)  # one budget: @N is final
        assert float(row[f"{metric}_ci_low"]) <= float(row[f"{metric}_mean"]) <= float(row[f"{metric}_ci_high"])
    md = (out / SUMMARY_MD).read_text()
    assert md in printed + "\n" and "| opinions | qdaif | n=3: seeds 0, 1, 2 | 6 |" in md
    assert f"{np.mean([r['qd_score'] for r in last]):.4g} [" in md
    assert (out / CURVES).is_file() and Image.open(out / CURVES).size[0] > 500
    # deterministic: the same seed gives the same table
    again = tmp_path / "again"
    compare_runs([multirun], out=again, n_resamples=B, seed=3)
    assert (again / SUMMARY_CSV).read_text() == (out / SUMMARY_CSV).read_text()


def test_find_runs_recursive_skips_hidden_and_dedupes(tmp_path):
    a = write_run(tmp_path / "sweep" / "0", seed=0)
    b = write_run(tmp_path / "sweep" / "deeper" / "10", seed=1)
    c = write_run(tmp_path / "sweep" / "deeper" / "2", seed=2)
    write_run(tmp_path / "sweep" / "0" / "inner", seed=9)  # inside a run: not a separate run
    (tmp_path / "sweep" / "0" / ".hydra").mkdir()
    (tmp_path / "sweep" / "0" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "sweep" / ".cache").mkdir()
    (tmp_path / "sweep" / ".cache" / "config.yaml").write_text("seed: 5\n")  # hidden: skipped, no error
    found = find_runs([tmp_path / "sweep", a])
    assert found == [a.resolve(), c.resolve(), b.resolve()]  # natural order: 2 before 10; a only once


def test_groups_by_domain_and_algorithm(tmp_path):
    for s in range(3):
        write_run(tmp_path / f"q{s}", domain="toy", seed=s)  # no algorithm: qdaif
        write_run(tmp_path / f"r{s}", domain="toy", seed=s, algorithm="random_search")
    write_run(tmp_path / "other", domain="haiku", seed=0, algorithm="random_search", evaluations=(5, 10))
    (tmp_path / "str").mkdir()
    write_run(tmp_path / "str", domain="haiku", seed=1)
    text = (tmp_path / "str" / "config.yaml").read_text()
    (tmp_path / "str" / "config.yaml").write_text(text + "algorithm: novelty\n")  # a bare name works too
    comparison = summarize([load_metrics(p) for p in find_runs([tmp_path])], n_resamples=B)
    groups = {(g.domain, g.algorithm): g for g in comparison.groups}
    assert list(groups) == [("haiku", "novelty"), ("haiku", "random_search"), ("toy", "qdaif"),
                            ("toy", "random_search")]
    assert groups["toy", "qdaif"].n == 3 and groups["toy", "qdaif"].seeds == [0, 1, 2]
    # each group's mean is its own runs' mean: qd_score final = 3 + seed
    assert groups["toy", "random_search"].final["qd_score"].mean == pytest.approx(4.0)
    assert groups["haiku", "random_search"].final["qd_score"].mean == pytest.approx(2.0)


# ------------------------------------------------------------------ bootstrap
def test_bootstrap_ci_contains_mean_and_is_seeded():
    values = np.random.default_rng(7).normal(size=(6, 4))
    low, high = bootstrap_ci(values, n_resamples=B, rng=np.random.default_rng(0))
    again = bootstrap_ci(values, n_resamples=B, rng=np.random.default_rng(0))
    other = bootstrap_ci(values, n_resamples=B, rng=np.random.default_rng(1))
    mean = values.mean(axis=0)
    assert low.shape == high.shape == (4,)
    assert np.all(low < mean) and np.all(mean < high)
    assert np.array_equal(low, again[0]) and np.array_equal(high, again[1])
    assert not np.array_equal(low, other[0])
    # a percentile bootstrap of the mean: the 2.5 and 97.5 percentiles of resampled means
    idx = np.random.default_rng(5).integers(0, 6, size=(20000, 6))
    ref = np.percentile(values[idx].mean(axis=1), [2.5, 97.5], axis=0)
    width = ref[1] - ref[0]
    assert np.allclose(low, ref[0], atol=0.1 * width.max()) and np.allclose(high, ref[1], atol=0.1 * width.max())


def test_identical_seeds_have_zero_width_ci(tmp_path):
    for s in range(3):
        write_run(tmp_path / f"run{s}", seed=s, qd=[1.5, 2.25, 3.125], max_quality=[0.7, 0.7, 0.8])
    comparison = compare_runs([tmp_path], out=tmp_path / "out", n_resamples=B)
    (g,) = comparison.groups
    for metric in ("qd_score", "coverage", "max_quality"):
        e = g.final[metric]
        assert e.low == e.mean == e.high
    assert g.final["qd_score"].format() == "3.125 [3.125, 3.125]"


def test_one_seed_is_said_and_has_point_interval(tmp_path):
    write_run(tmp_path / "only", seed=4, qd=[1.0, 2.0, 2.5])
    write_run(tmp_path / "b0", seed=0, algorithm="random_search")
    write_run(tmp_path / "b1", seed=1, algorithm="random_search")
    comparison = compare_runs([tmp_path], out=tmp_path / "out", n_resamples=B)
    g = {x.algorithm: x for x in comparison.groups}["qdaif"]
    assert (g.final["qd_score"].low, g.final["qd_score"].high) == (2.5, 2.5)
    md = (tmp_path / "out" / SUMMARY_MD).read_text()
    assert "| toy | qdaif | n=1: seed 4 |" in md and "n=1: a single run; its CI is [x, x]" in md


# -------------------------------------------------------------- common budget
def test_common_budget_columns_use_step_values(tmp_path):
    for s in range(2):  # long: 4..16 evaluations; short: 5 and 10
        write_run(tmp_path / f"long{s}", seed=s, evaluations=(4, 8, 12, 16), qd=[1 + s, 2 + s, 3 + s, 4 + s])
        write_run(tmp_path / f"short{s}", seed=s, algorithm="random_search", evaluations=(5, 10), qd=[1.0, 2.0 + s])
    compare_runs([tmp_path], out=tmp_path / "out", n_resamples=B)
    table = read_csv(tmp_path / "out" / SUMMARY_CSV)
    long, short = table["toy", "qdaif"], table["toy", "random_search"]
    assert long["N"] == short["N"] == "10"
    assert float(long["qd_score_mean"]) == pytest.approx(4.5)
    assert float(long["qd_score@N_mean"]) == pytest.approx(2.5)  # at 10 evaluations: the row of 8
    assert float(short["qd_score@N_mean"]) == pytest.approx(2.5) == float(short["qd_score_mean"])
    assert "N=10 (all reached)" in [t.get_text() for t in
                                    curves_figure(summarize([load_metrics(p) for p in find_runs([tmp_path])],
                                                            n_resamples=B)).axes[0].get_legend().get_texts()]


def test_step_values_before_between_and_after_rows(tmp_path):
    run = load_metrics(write_run(tmp_path / "r", evaluations=(4, 8), qd=[1.0, 2.0], max_quality=[0.5, 0.6]))
    assert run.at("qd_score", [0, 3, 4, 7, 8, 100]).tolist() == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    assert np.isnan(run.at("max_quality", 2)) and run.at("max_quality", 5) == 0.5


# --------------------------------------------------------------------- curves
def test_curves_figure_rows_per_domain_and_labels(tmp_path):
    for s in range(2):
        write_run(tmp_path / f"a{s}", domain="toy", seed=s)
        write_run(tmp_path / f"b{s}", domain="toy", seed=s, algorithm="random_search", evaluations=(3, 6, 9, 12))
        write_run(tmp_path / f"c{s}", domain="haiku", seed=s)
    comparison = compare_runs([tmp_path], out=tmp_path / "out", n_resamples=B)
    fig = curves_figure(comparison)
    assert len(fig.axes) == 4  # 2 domains x (QD score, coverage)
    assert [ax.get_title() for ax in fig.axes] == ["haiku: QD score", "haiku: coverage", "toy: QD score",
                                                   "toy: coverage"]
    assert all(ax.get_xlabel() == "evaluations (generated candidates)" for ax in fig.axes)
    assert [ax.get_ylabel() for ax in fig.axes] == ["QD score", "coverage (%)"] * 2
    legend = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    assert legend == ["qdaif (n=2)", "random_search (n=2)"]  # same budget: no N line
    assert (tmp_path / "out" / CURVES).is_file()


# --------------------------------------------------------------------- errors
def test_errors_are_one_line_and_actionable(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        find_runs([tmp_path / "missing"])
    (tmp_path / "empty_folder" / "sub").mkdir(parents=True)
    with pytest.raises(RunDirError, match="no qdaif runs under .*multirun"):
        find_runs([tmp_path / "empty_folder"])
    nometrics = write_run(tmp_path / "sweep" / "0")
    write_run(tmp_path / "sweep" / "1")
    (nometrics / "metrics.jsonl").unlink()
    for where in (tmp_path / "sweep", nometrics):
        with pytest.raises(RunDirError, match="no metrics.jsonl: the run has not finished an iteration"):
            find_runs([where])
    (nometrics / "metrics.jsonl").write_text("\n")
    with pytest.raises(RunDirError, match="metrics.jsonl is empty"):
        compare_runs([tmp_path / "sweep"], out=tmp_path / "out", n_resamples=B)
    (nometrics / "metrics.jsonl").write_text('{"iteration": 1}\n')
    with pytest.raises(RunDirError, match="rows have no 'evaluations'"):
        load_metrics(nometrics)
    nodomain = write_run(tmp_path / "nodomain")
    (nodomain / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(RunDirError, match="no domain.name"):
        load_metrics(nodomain)
    with pytest.raises(ConfigError, match="--bootstrap must be at least 1"):
        compare_runs([tmp_path / "sweep" / "1"], out=tmp_path / "out", n_resamples=0)


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", str(tmp_path), "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qdaif: error: no qdaif runs under") and "\n" not in err
