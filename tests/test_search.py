"""Engine logic with the scripted fake LM (not a model): batching, statistics, resume."""

import json

import numpy as np
import pytest

from qdaif.algorithms import QDAIF
from qdaif.lm._fake import ScriptedFakeLM
from qdaif.run_dir import ELITES, HISTORY, METRICS, RunDir
from qdaif.search import Search, SearchState


def make_search(domain, path, *, lm=None, seed=0, batch_size=6, state=None, **kw):
    lm = lm or ScriptedFakeLM()
    run_dir = RunDir(path)
    algorithm = QDAIF(domain=domain, init_evaluations=12, min_init_cells=3)
    return Search(domain=domain, lm=lm, judge_lm=lm, run_dir=run_dir,
                  state=state or SearchState.new(domain, seed, algorithm), batch_size=batch_size, seed=seed, **kw)


def load_state(domain, path):
    """The run's checkpoint as a search state, with a QDAIF algorithm built as in make_search."""
    algorithm = QDAIF(domain=domain, init_evaluations=12, min_init_cells=3)
    return SearchState.from_checkpoint(RunDir(path).load_checkpoint(), domain=domain, algorithm=algorithm)


def read(path, name):
    return [json.loads(line) for line in (path / name).read_text().splitlines()]


def test_each_iteration_makes_one_generate_and_one_score_call(opinions_domain, tmp_path):
    lm = ScriptedFakeLM()
    search = make_search(opinions_domain, tmp_path, lm=lm, batch_size=7)
    search.run(5, progress=False)
    assert lm.generate_calls == [7] * 5
    # quality + one measure: two requests per candidate, all in one call
    assert lm.score_calls == [14] * 5
    ops = [m["operator"] for m in read(tmp_path, METRICS)]
    assert ops[0] == "seeded_init" and "lmx_near" in ops


def test_archive_statistics_equal_sums_over_elites_file(opinions_domain, tmp_path):
    search = make_search(opinions_domain, tmp_path)
    search.run(8, progress=False)
    elites = read(tmp_path, ELITES)
    last = read(tmp_path, METRICS)[-1]
    assert last["num_elites"] == len(elites) > 3
    assert last["qd_score"] == pytest.approx(sum(e["quality"] for e in elites))
    assert last["coverage"] == pytest.approx(len(elites) / 20)
    assert last["max_quality"] == pytest.approx(max(e["quality"] for e in elites))
    assert len({tuple(e["cell"]) for e in elites}) == len(elites)
    # every elite is the best history entry of its cell, and is marked accepted there
    history = read(tmp_path, HISTORY)
    for e in elites:
        in_cell = [h for h in history if h["cell"] == e["cell"]]
        assert e["quality"] == pytest.approx(max(h["quality"] for h in in_cell))
        assert next(h for h in history if h["id"] == e["id"])["accepted"]


def test_history_records_every_candidate(opinions_domain, tmp_path):
    make_search(opinions_domain, tmp_path, batch_size=5).run(4, progress=False)
    history = read(tmp_path, HISTORY)
    assert len(history) == 20
    assert [h["id"] for h in history] == list(range(20))
    for h in history:
        assert set(h) >= {"text", "quality", "measures", "cell", "operator", "parents", "iteration", "accepted"}
        assert 0 <= h["quality"] <= 1 and len(h["measures"]) == 1
        assert sum(h["labels"]["sentiment"]) == pytest.approx(1, abs=1e-5)


def test_empty_and_nonfinite_generations_are_dropped_and_counted(opinions_domain, tmp_path):
    lm = ScriptedFakeLM(empty_every=3, nonfinite_every=4)
    make_search(opinions_domain, tmp_path, lm=lm, batch_size=12).run(3, progress=False)
    metrics = read(tmp_path, METRICS)
    assert [m["dropped_empty"] for m in metrics] == [4, 4, 4]
    assert [m["dropped_nonfinite"] for m in metrics] == [2, 2, 2]  # rows 4 and 8 (row 12 is empty)
    history = read(tmp_path, HISTORY)
    assert len(history) == 3 * 6
    assert all(h["text"].strip() and np.isfinite(h["quality"]) for h in history)
    assert lm.score_calls == [2 * 8] * 3  # empty texts are not sent to the judge


def test_resume_gives_the_same_run_as_an_uninterrupted_one(opinions_domain, tmp_path):
    full = make_search(opinions_domain, tmp_path / "full", seed=3)
    full.run(10, progress=False)

    part = make_search(opinions_domain, tmp_path / "part", seed=3)
    part.run(4, progress=False)
    state = load_state(opinions_domain, tmp_path / "part")
    assert state.iteration == 4
    resumed = make_search(opinions_domain, tmp_path / "part", seed=3, state=state)
    resumed.run(10, progress=False)

    for name in (ELITES, HISTORY):
        assert (tmp_path / "full" / name).read_text() == (tmp_path / "part" / name).read_text()
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    assert strip(read(tmp_path / "full", METRICS)) == strip(read(tmp_path / "part", METRICS))


def test_resume_discards_records_of_an_unfinished_iteration(opinions_domain, tmp_path):
    make_search(opinions_domain, tmp_path).run(3, progress=False)
    saved = {p.name: p.read_bytes() for p in tmp_path.glob("checkpoint.*")}
    make_search(opinions_domain, tmp_path, state=load_state(opinions_domain, tmp_path)).run(4, progress=False)
    for p in tmp_path.glob("checkpoint.*"):
        p.unlink()
    for name, blob in saved.items():  # as if killed after writing iteration 4's lines
        (tmp_path / name).write_bytes(blob)
    state = load_state(opinions_domain, tmp_path)
    assert state.iteration == 3
    assert [m["iteration"] for m in read(tmp_path, METRICS)] == [1, 2, 3]
    assert {h["iteration"] for h in read(tmp_path, HISTORY)} == {1, 2, 3}


def test_same_seed_same_run_other_seed_other_run(opinions_domain, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        make_search(opinions_domain, tmp_path / name, seed=seed).run(6, progress=False)
    a, b, c = ((tmp_path / n / HISTORY).read_text() for n in "abc")
    assert a == b and a != c


REWRITES_SUBSET = ["domain.settings.limit=null",
                   "domain.settings.inputs=[sent-ood-01,topi-ood-02,toxi-ood-03,sent-id-01]",
                   "domain.measures.0.categories=[sent-ood-01,topi-ood-02,toxi-ood-03,sent-id-01]"]


@pytest.mark.parametrize(("domain_name", "algorithm", "extra"), [
    ("opinions", "lmx_replace", []), ("opinions", "quality_only", []), ("opinions", "novelty", []),
    ("opinions", "random_search", []), ("multitask", "qdaif", []), ("rewrites", "qdaif", REWRITES_SUBSET),
    ("poetry", "qdaif", []),
])
def test_checkpoint_is_data_and_resume_is_exact_for_algorithms_and_plugin_domains(tmp_path, domain_name, algorithm,
                                                                                   extra):
    from qdaif.algorithms import make_algorithm
    from qdaif.cli import compose_config
    from qdaif.domain import domain_from_config

    cfg = compose_config(["model=scripted_fake", f"domain={domain_name}", f"algorithm={algorithm}", *extra])
    domain = domain_from_config(cfg.domain)

    def search(path, resume=False):
        lm = ScriptedFakeLM()
        algo = make_algorithm(cfg.algorithm, domain=domain, init_evaluations=8, min_init_cells=3)
        run_dir = RunDir(path)
        state = (SearchState.from_checkpoint(run_dir.load_checkpoint(), domain=domain, algorithm=algo) if resume
                 else SearchState.new(domain, 0, algo))
        return Search(domain=domain, lm=lm, judge_lm=lm, run_dir=run_dir, state=state, batch_size=6, seed=0)

    search(tmp_path / "full").run(8, progress=False)
    search(tmp_path / "part").run(3, progress=False)
    assert not list((tmp_path / "part").glob("*.pkl"))
    search(tmp_path / "part", resume=True).run(8, progress=False)
    for name in (ELITES, HISTORY):
        assert (tmp_path / "full" / name).read_text() == (tmp_path / "part" / name).read_text()
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    assert strip(read(tmp_path / "full", METRICS)) == strip(read(tmp_path / "part", METRICS))


def test_run_files_name_each_measure_bin(opinions_domain, tmp_path):
    """elites.jsonl and history.jsonl say, per measure name, which bin a text is in (a category or a value range)."""
    from qdaif.cli import compose_config
    from qdaif.domain import domain_from_config

    poetry = domain_from_config(compose_config(["domain=poetry"]).domain)
    search = make_search(poetry, tmp_path / "poetry")
    search.step()
    rows = read(tmp_path / "poetry", ELITES) + read(tmp_path / "poetry", HISTORY)
    assert rows
    for row in rows:
        assert row["bins"] == {"genre": poetry.measures[0].categories[row["cell"][0]],
                               "tone": poetry.measures[1].categories[row["cell"][1]]}
    search = make_search(opinions_domain, tmp_path / "opinions")
    search.step()
    edges = opinions_domain.measures[0].edges
    for row in read(tmp_path / "opinions", ELITES):
        k = row["cell"][0]
        assert row["bins"] == {"sentiment": f"{edges[k]:g}-{edges[k + 1]:g}"}
