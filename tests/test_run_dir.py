"""The run directory under attack: kills, concurrent writers, crafted checkpoints, full disks.

Every run here uses the scripted fake LM (not a model): these are tests of the engine's
bookkeeping. Runs are started as forked children of the test process (``fork_cli``), so
that dozens of them fit in seconds.
"""

import errno
import hashlib
import io
import json
import os
import pickle
import random
import resource
import signal
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from qdaif.errors import RunDirError
from qdaif.run_dir import CHECKPOINT, CONFIG, ELITES, HEATMAP, HISTORY, LEGACY_CHECKPOINT, LOCK, METRICS, RunDir
from tests.helpers import cli_in_fork, fork_cli, wait_cli

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks runs")

FAKE = ["model=scripted_fake", "progress=false", "batch_size=4"]


@pytest.fixture(scope="module", autouse=True)
def _warm_plotting():
    """Draws one heatmap here so that forked runs inherit matplotlib imported and its fonts loaded."""
    from qdaif.archive import make_archive
    from qdaif.plot import plot_heatmap

    with tempfile.TemporaryDirectory() as d:
        plot_heatmap(make_archive([[0.0, 0.5, 1.0]]), axis_labels=["x"], path=Path(d) / "warm.png")


def one_line_error(code, err, *fragments):
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qdaif: error:"), err
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


def new_run(tmp_path, name, *args):
    code, err = cli_in_fork("run", *FAKE, *args, f"hydra.run.dir={name}", cwd=tmp_path, out=tmp_path / f"log-{name}")
    assert code == 0, err
    return tmp_path / name


def resume(tmp_path, name, *args, setup=None, log="resume"):
    return cli_in_fork("run", f"resume={name}", *args, cwd=tmp_path, out=tmp_path / f"log-{log}", setup=setup)


def records(run):
    """What must match between an interrupted and an uninterrupted run (timings aside)."""
    metrics = [{k: v for k, v in json.loads(x).items() if "seconds" not in k}
               for x in (run / METRICS).read_text().splitlines()]
    return (run / ELITES).read_text(), (run / HISTORY).read_text(), metrics


def temp_files(run):
    return sorted(p.name for p in run.iterdir() if p.name.startswith(".") and p.name not in (LOCK, ".hydra"))


def wait_for(predicate, timeout=60):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def lock_holder(run):
    try:
        return int((run / LOCK).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


# ---------------------------------------------------------------------------- 1: lock
def test_lock_refuses_a_second_writer_with_the_holders_pid(tmp_path):
    out = new_run(tmp_path, "out", "iterations=2", "plot_every=0", "model.delay=0.05")
    hydra_before = {p.name: p.read_bytes() for p in (out / ".hydra").iterdir()}
    config_before = (out / CONFIG).read_bytes()
    pid = fork_cli("run", "resume=out", "iterations=400", cwd=tmp_path, out=tmp_path / "log-holder")
    try:
        wait_for(lambda: lock_holder(out) == pid)
        with pytest.raises(RunDirError, match=f"in use by another qdaif process \\(pid {pid}\\)"):
            RunDir(out).lock()
        code, err = resume(tmp_path, "out", "iterations=500", log="second")
        one_line_error(code, err, f"pid {pid}", "in use")
        code, err = cli_in_fork("run", *FAKE, "iterations=3", "hydra.run.dir=out", cwd=tmp_path, out=tmp_path / "log-new")
        one_line_error(code, err, f"pid {pid}", "in use")
        # refused before Hydra or the run wrote anything there
        assert {p.name: p.read_bytes() for p in (out / ".hydra").iterdir()} == hydra_before
    finally:
        os.kill(pid, signal.SIGKILL)
        wait_cli(pid)
    # the OS released the dead holder's lock: the run resumes, every iteration once
    target = len((out / METRICS).read_text().splitlines()) + 2
    code, err = resume(tmp_path, "out", f"iterations={target}")
    assert code == 0, err
    iterations = [json.loads(x)["iteration"] for x in (out / METRICS).read_text().splitlines()]
    assert iterations == list(range(1, target + 1))
    # a new run pointed at a finished run is refused, and its files stay as they were
    config_before = (out / CONFIG).read_bytes()
    hydra_before = {p.name: p.read_bytes() for p in (out / ".hydra").iterdir()}
    code, err = cli_in_fork("run", *FAKE, "iterations=3", "hydra.run.dir=out", cwd=tmp_path, out=tmp_path / "log-new2")
    one_line_error(code, err, "already holds a run", "resume=out")
    assert (out / CONFIG).read_bytes() == config_before
    assert {p.name: p.read_bytes() for p in (out / ".hydra").iterdir()} == hydra_before


def _wait_for_go(go: Path):
    while not go.exists():
        time.sleep(0.001)


def test_two_resumes_started_together_one_is_refused_and_the_run_stays_consistent(tmp_path):
    ref = new_run(tmp_path, "ref", "iterations=40", "plot_every=0", "model.delay=0.005")
    out = new_run(tmp_path, "out", "iterations=3", "plot_every=0", "model.delay=0.005")
    go = tmp_path / "go"
    pids = [fork_cli("run", "resume=out", "iterations=40", cwd=tmp_path, out=tmp_path / f"log-{k}",
                     setup=partial(_wait_for_go, go)) for k in "ab"]
    go.touch()
    codes = [wait_cli(p) for p in pids]
    assert sorted(codes) == [0, 2], codes
    loser = codes.index(2)
    err = (tmp_path / f"log-{'ab'[loser]}.stderr").read_text()
    one_line_error(2, err, f"(pid {pids[1 - loser]})", "in use by another qdaif process")
    # no duplicated iterations: the run equals an uninterrupted one
    assert records(out) == records(ref)


# ------------------------------------------------------------- 2: checkpoint is data
class _WritesMarker:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_old_pickle_checkpoint_is_never_unpickled(tmp_path):
    marker = tmp_path / "MARKER"
    assert pickle.loads(pickle.dumps(_WritesMarker(tmp_path / "selftest"))) == 0
    assert (tmp_path / "selftest").exists()  # the payload works when unpickled
    out = new_run(tmp_path, "out", "iterations=2", "plot_every=0")
    for p in out.glob("checkpoint.*"):
        p.unlink()
    (out / LEGACY_CHECKPOINT).write_bytes(pickle.dumps({"format": 1, "state": _WritesMarker(marker)}))
    code, err = resume(tmp_path, "out", "iterations=3")
    one_line_error(code, err, "checkpoint.pkl", "qdaif 0.1.0", "never opens it", "pip install qdaif==0.1.0")
    assert not marker.exists()


def test_crafted_checkpoint_files_never_run_code(tmp_path):
    marker = tmp_path / "MARKER"
    out = new_run(tmp_path, "out", "iterations=2", "plot_every=0")
    (out / LEGACY_CHECKPOINT).write_bytes(pickle.dumps(_WritesMarker(marker)))  # next to a good checkpoint: ignored
    record = json.loads((out / CHECKPOINT).read_text())
    good_json, good_npz = (out / CHECKPOINT).read_text(), (out / record["arrays"]).read_bytes()

    # arrays file holding a pickled object array, with a matching checksum
    buf = io.BytesIO()
    np.save(buf, np.array([_WritesMarker(marker)], dtype=object), allow_pickle=True)
    blob = io.BytesIO()
    with np.load(io.BytesIO(good_npz)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    np.savez(blob, **arrays, evil=np.array([_WritesMarker(marker)], dtype=object))
    (out / record["arrays"]).write_bytes(blob.getvalue())
    (out / CHECKPOINT).write_text(json.dumps({**record, "arrays_sha256": hashlib.sha256(blob.getvalue()).hexdigest()}))
    code, err = resume(tmp_path, "out", "iterations=3", log="npz")
    one_line_error(code, err, "checkpoint", "damaged")
    assert not marker.exists()

    # a checkpoint naming a file outside the run
    (out / record["arrays"]).write_bytes(good_npz)
    (out / CHECKPOINT).write_text(json.dumps({**record, "arrays": "../../etc/passwd"}))
    code, err = resume(tmp_path, "out", "iterations=3", log="path")
    one_line_error(code, err, "names no checkpoint arrays file")

    # restored, the run resumes (the stray checkpoint.pkl is never looked at)
    (out / CHECKPOINT).write_text(good_json)
    code, err = resume(tmp_path, "out", "iterations=3", log="ok")
    assert code == 0, err
    assert not marker.exists()


# --------------------------------------------------- 5: records deleted, names escaping
@pytest.mark.parametrize("damage", ["delete metrics", "delete history", "cut history"])
def test_resume_refuses_a_run_whose_records_were_deleted(tmp_path, damage):
    out = new_run(tmp_path, "out", "iterations=3", "plot_every=0")
    action, name = damage.split()
    path = out / (METRICS if name == "metrics" else HISTORY)
    if action == "delete":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code, err = resume(tmp_path, "out", "iterations=5")
    one_line_error(code, err, path.name, "cannot be resumed exactly")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != LOCK} == \
        {k: v for k, v in before.items() if k != LOCK}


def test_run_directory_names_are_sanitised(tmp_path, monkeypatch):
    from qdaif.cli import run_dir_of, safe_dir_name

    assert safe_dir_name("../x") == "x"
    assert safe_dir_name("../../etc/passwd") == "etc_passwd"
    assert safe_dir_name("..") == safe_dir_name("") == safe_dir_name("/") == "domain"
    assert safe_dir_name("my domain/v2") == "my_domain_v2"
    assert safe_dir_name("opinions") == "opinions"
    for name in ("../../escape", "/abs/path", ".."):
        path = Path(run_dir_of([f"domain.name={name}"]))
        assert path.parts[0] == "runs" and ".." not in path.parts and len(path.parts) == 3, path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.yaml").write_text("name: ../../outside\n")
    path = Path(run_dir_of(["domain_file=d.yaml"]))
    assert path.parts[:2] == ("runs", "outside") and len(path.parts) == 3, path
    sweep = OmegaConf.load(Path(__file__).parents[1] / "configs" / "config.yaml").hydra.sweep
    assert "qdaif_safe_name:${domain.name}" in OmegaConf.to_container(sweep)["subdir"]


# ------------------------------------------------------------------ 7: resume overrides
def test_resume_overrides_are_typed(tmp_path):
    out = new_run(tmp_path, "out", "iterations=2", "plot_every=0")
    code, err = resume(tmp_path, "out", "iterations=4", "plot_every=2", "progress=false")
    assert code == 0, err
    config = OmegaConf.to_container(OmegaConf.load(out / CONFIG))
    assert config["plot_every"] == 2 and type(config["plot_every"]) is int
    assert config["progress"] is False and config["iterations"] == 4
    assert (out / HEATMAP).stat().st_size > 0
    for args, fragment in ((["progress=maybe"], "progress must be true or false, got 'maybe'"),
                           (["plot_every=five"], "plot_every must be an integer, got 'five'"),
                           (["iterations=4.5"], "iterations must be an integer, got '4.5'"),
                           (["plot_every=-1"], "plot_every must be >= 0"),
                           (["batch_size=3"], "cannot change 'batch_size'")):
        code, err = resume(tmp_path, "out", *args, log="bad")
        one_line_error(code, err, fragment)


# --------------------------------------------------------------------- 8: orphans
def test_orphan_temp_files_are_removed_on_resume(tmp_path):
    out = new_run(tmp_path, "out", "iterations=2", "plot_every=0")
    orphans = [".checkpoint.json.k2j3_x", ".checkpoint.7.npz.abc", ".elites.jsonl.q9z", ".heatmap.png.tmp1",
               ".config.yaml.zz", ".checkpoint.pkl.oldrelease", "checkpoint.99.npz"]
    for name in orphans:
        (out / name).write_bytes(b"half")
    kept = ["notes.txt", ".my_notes", ".elites.jsonl"]
    for name in kept:
        (out / name).write_text("mine")
    code, err = resume(tmp_path, "out", "iterations=3")
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert not names & set(orphans), names & set(orphans)
    assert set(kept) <= names
    assert [p.name for p in out.glob("checkpoint.*.npz")] == [json.loads((out / CHECKPOINT).read_text())["arrays"]]


# ------------------------------------------------------------------- disk full
def _file_size_limit(limit):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


@pytest.mark.parametrize(("what", "limit", "plot_every", "failing"),
                         [("heatmap", 12_000, 2, HEATMAP), ("history", 6_000, 0, HISTORY)])
def test_disk_full_gives_one_line_and_the_run_resumes(tmp_path, what, limit, plot_every, failing):
    """RLIMIT_FSIZE (unprivileged) makes writes past ``limit`` bytes fail as on a full disk."""
    args = ["iterations=8", f"plot_every={plot_every}"]
    ref = new_run(tmp_path, "ref", *args)
    code, err = cli_in_fork("run", *FAKE, *args, "hydra.run.dir=out", cwd=tmp_path, out=tmp_path / "log-full",
                            setup=partial(_file_size_limit, limit))
    out = tmp_path / "out"
    line = one_line_error(code, err, "cannot write ", f"/out/{failing}: File too large (EFBIG); free space", "resume with")
    done = int(line.split("saved after iteration ")[1].split(":")[0])
    assert 0 < done < 8
    # nothing half-written: no temp file, no empty file, whole JSON lines up to the checkpoint
    assert temp_files(out) == []
    assert all(p.stat().st_size > 0 for p in out.iterdir() if p.is_file() and p.name not in (LOCK, "qdaif.log"))
    assert [json.loads(x)["iteration"] for x in (out / METRICS).read_text().splitlines()] == list(range(1, done + 1))
    assert {json.loads(x)["iteration"] for x in (out / HISTORY).read_text().splitlines()} == set(range(1, done + 1))
    # space freed: the run resumes to the same result as an uninterrupted one
    code, err = resume(tmp_path, "out")
    assert code == 0, err
    assert records(out) == records(ref)
    assert (out / HEATMAP).stat().st_size > 0


class _NoSpaceAfter:
    """NamedTemporaryFile whose writes fail with ENOSPC (after half the data) for one file name."""

    def __init__(self, real, name):
        self.real, self.name = real, name

    def __call__(self, *a, **kw):
        f = self.real(*a, **kw)
        if not kw.get("prefix", "").startswith(f".{self.name}."):
            return f
        write = f.write

        def half_then_fail(data):
            write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        f.write = half_then_fail
        return f


@pytest.mark.parametrize("name", [CHECKPOINT, ELITES, HEATMAP])
def test_no_space_left_leaves_the_last_checkpoint(opinions_domain, tmp_path, monkeypatch, name):
    from qdaif.algorithms import QDAIF
    from qdaif.lm._fake import ScriptedFakeLM
    from qdaif.plot import draw_archive
    from qdaif.search import Search, SearchState

    def search(path, state=None):
        lm = ScriptedFakeLM()
        algo = QDAIF(domain=opinions_domain, init_evaluations=8, min_init_cells=3)
        run_dir = RunDir(path)
        if state is not None:
            state = SearchState.from_checkpoint(run_dir.load_checkpoint(), domain=opinions_domain, algorithm=algo)
        return Search(domain=opinions_domain, lm=lm, judge_lm=lm, run_dir=run_dir, plot_every=3, batch_size=4, seed=0,
                      state=state or SearchState.new(opinions_domain, 0, algo), refresh=draw_archive)

    search(tmp_path / "ref").run(6, progress=False)
    s = search(tmp_path / "out")
    s.run(3, progress=False)
    heatmap = (tmp_path / "out" / HEATMAP).read_bytes()
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", _NoSpaceAfter(tempfile.NamedTemporaryFile, name))
    with pytest.raises(RunDirError, match=f"cannot write .*{name}: No space left on device \\(ENOSPC\\); free space"):
        s.run(6, progress=False)
    monkeypatch.undo()
    # a failed record or checkpoint goes back to iteration 3; the heatmap of iteration 6 fails after its checkpoint
    assert s.state.iteration == (6 if name == HEATMAP else 3)
    assert temp_files(tmp_path / "out") == []
    assert (tmp_path / "out" / HEATMAP).read_bytes() == heatmap  # the old image, not half a new one
    search(tmp_path / "out", state="resume").run(6, progress=False)
    assert records(tmp_path / "out") == records(tmp_path / "ref")


def test_read_only_run_folder_gives_one_line(tmp_path, monkeypatch, capsys):
    from qdaif import cli

    out = new_run(tmp_path, "out", "iterations=2", "plot_every=0")
    (out / LOCK).unlink()
    real_open = os.open

    def read_only(path, flags, *a, **kw):
        if str(path).endswith(LOCK) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.chdir(tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "resume=out", "iterations=3"])
    monkeypatch.undo()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "qdaif: error: cannot lock run directory out (out/.lock: Read-only file system)", err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


# ----------------------------------------------------------------- fault injection
def _kill_inside_a_write(k, seed):
    """In the child: SIGKILL itself at its k-th file write, in the middle of it."""
    import qdaif.plot
    import qdaif.run_dir as rd

    rng, count = random.Random(seed), [0]
    real_atomic, real_append = rd.atomic_write, rd.RunDir.append

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def atomic(path, data):
        count[0] += 1
        if count[0] == k:
            how = rng.choice(["half a temp file", "whole temp file, not renamed", "renamed"])
            if how == "renamed":
                real_atomic(path, data)
                die()
            path = Path(path)
            fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            os.write(fd, data[: len(data) // 2] if how.startswith("half") else data)
            os.fsync(fd)
            die()
        real_atomic(path, data)

    def append(self, name, rows):
        count[0] += 1
        rows = list(rows)
        if count[0] == k:
            text = "".join(rd.dumps(r) + "\n" for r in rows).encode()
            with open(self.file(name), "ab") as f:
                f.write(text[: rng.randrange(len(text))])
                f.flush()
                os.fsync(f.fileno())
            die()
        real_append(self, name, rows)

    rd.atomic_write = qdaif.plot.atomic_write = atomic
    rd.RunDir.append = append


def test_fault_injection_sigkill_at_random_points_resumes_to_the_uninterrupted_run(tmp_path):
    n, kills_wanted = 80, 24
    args = [f"iterations={n}", "plot_every=20", "seed=2", "model.delay=0.003"]
    ref = new_run(tmp_path, "ref", *args)
    out = tmp_path / "out"
    rng = random.Random(13)
    kills, in_writes, starts = 0, 0, 0
    while kills < kills_wanted:
        starts += 1
        assert starts < 3 * kills_wanted, "the run keeps failing"
        fresh = not (out / CONFIG).exists()
        cmd = ["run", *FAKE, *args, "hydra.run.dir=out"] if fresh else ["run", "resume=out"]
        if rng.random() < 0.5:  # inside a write: a checkpoint, a record, the heatmap, the config
            pid = fork_cli(*cmd, cwd=tmp_path, out=tmp_path / "log", setup=partial(_kill_inside_a_write,
                                                                                    rng.randint(1, 12), rng.random()))
            code = wait_cli(pid)
            in_writes += code == -signal.SIGKILL
        else:  # at a random moment, once the child has made progress
            lines = len((out / METRICS).read_text().splitlines()) if (out / METRICS).exists() else 0
            pid = fork_cli(*cmd, cwd=tmp_path, out=tmp_path / "log")
            deadline = time.time() + 30
            while time.time() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
                if (out / METRICS).exists() and len((out / METRICS).read_text().splitlines()) > lines:
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.06))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            code = wait_cli(pid)
        if code == -signal.SIGKILL:
            kills += 1
        else:
            err = (tmp_path / "log.stderr").read_text()
            assert code == 0, err
            break  # finished before all kills: the assertion below says so
    done = len((out / METRICS).read_text().splitlines())
    assert kills >= 20 and in_writes >= 8 and done < n, (kills, in_writes, done)
    code, err = resume(tmp_path, "out")
    assert code == 0, err
    assert records(out) == records(ref)
    assert temp_files(out) == []
    assert [p.name for p in out.glob("checkpoint.*.npz")] == [json.loads((out / CHECKPOINT).read_text())["arrays"]]
    assert (out / HEATMAP).stat().st_size > 0
