"""Sweeps on Hydra's own launchers: joblib (parallel runs on one machine) and Slurm (composed, not submitted)."""

import csv
import importlib.util
import json
import os

import pytest
from hydra.errors import MissingConfigException

from qdaif import cli
from qdaif.compare import SUMMARY_CSV
from qdaif.errors import ConfigError
from tests.helpers import cli_in_fork, run_cli

FAKE = ["model=scripted_fake", "progress=false", "plot_every=0", "batch_size=2"]
RUN_FILES = ("config.yaml", "metrics.jsonl", "history.jsonl", "elites.jsonl", "checkpoint.json", ".hydra/config.yaml",
             ".hydra/overrides.yaml")


def _need(module: str) -> None:
    """Skips without the sweep extra, except in CI, whose setup installs it (a missing install must fail there)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # no hydra_plugins package at all
        found = False
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is missing: scripts/setup.sh --dev installs the sweep extra")
        pytest.skip(f"{module} is not installed (pip install -e '.[sweep]')")


def _metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_joblib_sweep_runs_algorithms_x_seeds_in_parallel_and_compare_reads_them(tmp_path, capsys):
    """Item 5: 2 algorithms x 2 seeds on the joblib launcher, 2 at a time: 4 self-contained runs, compared."""
    _need("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    # A process of its own (not a fork of pytest), which shuts its joblib workers down when it exits.
    proc = run_cli("run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "algorithm=qdaif,random_search",
                   "seed=0,1", "iterations=2", *FAKE, f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=300, check=True)
    out = proc.stdout
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr  # Hydra's joblib launcher ran the jobs
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in runs] == ["0_opinions_qdaif_seed0", "1_opinions_qdaif_seed1",
                                      "2_opinions_random_search_seed0", "3_opinions_random_search_seed1"]
    for run in runs:
        for name in RUN_FILES:
            assert (run / name).is_file(), f"{run.name} lacks {name}"
        rows = _metrics(run)
        assert [r["iteration"] for r in rows] == [1, 2] and rows[-1]["evaluations"] == 4
        config = (run / "config.yaml").read_text()  # each run records its own job's settings
        algorithm, seed = run.name.split("_", 2)[2].rsplit("_seed", 1)
        assert f"name: {algorithm}" in config and f"seed: {seed}" in config
        assert run.name in out  # its summary line names its own directory
    assert not (tmp_path / "runs").exists()  # nothing was written outside the sweep folder

    # A parallel launcher changes nothing about a run: the same job alone, on the basic launcher, is identical.
    alone = tmp_path / "alone"
    code, err = cli_in_fork("run", "algorithm=random_search", "seed=1", "iterations=2", *FAKE, f"hydra.run.dir={alone}",
                            cwd=tmp_path, out=tmp_path / "alone_log", timeout=300)
    assert code == 0, err
    assert [{k: v for k, v in r.items() if "seconds" not in k} for r in _metrics(alone)] == \
        [{k: v for k, v in r.items() if "seconds" not in k} for r in _metrics(runs[3])]

    out = tmp_path / "cmp"
    cli.main(["compare", str(sweep), "--out", str(out), "--bootstrap", "200"])
    assert "compared 4 run(s) in 2 group(s)" in capsys.readouterr().out
    with open(out / SUMMARY_CSV, newline="") as f:
        table = {(r["domain"], r["algorithm"]): r for r in csv.DictReader(f)}
    assert sorted(table) == [("opinions", "qdaif"), ("opinions", "random_search")]
    for (_, algorithm), row in table.items():
        assert row["runs"] == "2" and row["seeds"] == "0 1"
        finals = [_metrics(r)[-1]["qd_score"] for r in runs if f"_{algorithm}_seed" in r.name]
        assert float(row["qd_score_mean"]) == pytest.approx(sum(finals) / 2, rel=1e-12)


def _compose_hydra(overrides):
    from hydra import compose, initialize_config_dir

    from qdaif.domain import configs_dir

    cli._register_resolvers()
    with initialize_config_dir(config_dir=str(configs_dir()), version_base="1.3", job_name="qdaif"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_slurm_example_config_composes_and_builds_the_launcher(tmp_path):
    """Item 5: hydra/launcher=slurm (configs/hydra/launcher/slurm.yaml) extends submitit_slurm; no cluster needed."""
    _need("hydra_plugins.hydra_submitit_launcher")
    from hydra.utils import instantiate

    cfg = _compose_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=cpu", "hydra.launcher.array_parallelism=4",
                          f"hydra.sweep.dir={tmp_path}", "model=openai", "model.base_url=http://127.0.0.1:9/v1",
                          "model.max_concurrency=4"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "cpu" and launcher.array_parallelism == 4 and launcher.tasks_per_node == 1
    assert launcher.max_num_timeout == 0 and launcher.timeout_min == 240
    assert launcher.submitit_folder == f"{tmp_path}/.submitit/%j"  # Slurm's files stay beside the runs
    assert cfg.model.max_concurrency == 4  # the in-flight limit of each run (docs/sweeps.md)
    built = instantiate(launcher)  # every key is one the plugin's launcher takes
    assert type(built).__name__ == "SlurmLauncher" and built.params["partition"] == "cpu"
    # The plugin's own config composes too, for users who prefer it.
    assert _compose_hydra(["hydra/launcher=submitit_slurm"]).hydra.launcher._target_.endswith("SlurmLauncher")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["hydra/launcher=nope"], "unknown hydra/launcher 'nope'; choose one of: basic"),
        (["hydra/launcher=joblib", "hydra.launcher.n_jobs=x"],
         "cannot set hydra.launcher.n_jobs=x: Value 'x' of type 'str' could not be converted to Integer"),
        (["hydra/launcher=joblib", "hydra.launcher.njobs=2"], "unknown config key 'hydra.launcher.njobs'"),
    ],
)
def test_bad_launcher_settings_are_one_line_config_errors(overrides, fragment):
    """Item 5: a launcher's bad settings are caught when the sweep is checked, before any job starts."""
    _need("hydra_plugins.hydra_joblib_launcher")
    with pytest.raises(ConfigError) as e:
        cli.compose_config([*overrides, "model=scripted_fake"])
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_a_launcher_that_is_not_installed_names_the_sweep_extra():
    """Item 5: hydra/launcher=joblib without the plugin says what to install."""
    e = MissingConfigException("Could not find 'hydra/launcher/joblib'", missing_cfg_file="hydra/launcher/joblib",
                               options=["basic"])
    message = cli._explain_composition_error(e, ["hydra/launcher=joblib"])
    assert message == ("hydra/launcher 'joblib' is not installed; install the sweep extra: pip install -e '.[sweep]' "
                       "(installed launchers: basic)")
    e = MissingConfigException("In 'hydra/launcher/slurm': Could not load 'hydra/launcher/submitit_slurm'.",
                               missing_cfg_file="hydra/launcher/submitit_slurm")
    assert "'submitit_slurm' is not installed; install the sweep extra" in cli._explain_composition_error(e, [])


def test_a_sweep_job_whose_directory_holds_a_run_fails_in_one_line(tmp_path):
    """Item 5: a job of a sweep refuses a directory that holds a run, naming hydra.sweep.dir (any launcher)."""
    _need("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    job = sweep / "0_opinions_qdaif_seed3"
    code, err = cli_in_fork("run", "seed=3", "iterations=1", *FAKE, f"hydra.run.dir={job}", cwd=tmp_path,
                            out=tmp_path / "first", timeout=300)
    assert code == 0, err
    proc = run_cli("run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "seed=3", "iterations=1", *FAKE,
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"qdaif: error: {job} already holds a run; resume it with resume={job} or choose another hydra.sweep.dir")
