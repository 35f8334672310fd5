"""Every algorithm with the scripted fake LM (not a model): proposals, state, run directory."""

import json

import numpy as np
import pytest

from qdaif.algorithms import Batch, NoveltySearch, QualityOnly, RougeFilter, algorithm_names, make_algorithm
from qdaif.lm._fake import ScriptedFakeLM
from qdaif.run_dir import ELITES, HISTORY, METRICS, RunDir
from qdaif.search import Search, SearchState
from tests.helpers import run_cli

ALL = ["qdaif", "lmx_replace", "quality_only", "fixed_few_shot", "shuffling_few_shot", "random_search", "zero_shot",
       "rouge_filter", "novelty", "qdef"]


def test_registry_lists_every_algorithm():
    assert set(ALL) <= set(algorithm_names())


def make(domain, name, **settings):
    return make_algorithm({"name": name, **settings}, domain=domain, init_evaluations=8, min_init_cells=3)


@pytest.mark.parametrize("name", [a for a in ALL if a != "zero_shot"])  # opinions has no zero-shot prompt
def test_each_algorithm_writes_the_standard_run_directory(opinions_domain, tmp_path, name):
    lm = ScriptedFakeLM()
    algo = make(opinions_domain, name)
    search = Search(domain=opinions_domain, lm=lm, judge_lm=lm, run_dir=RunDir(tmp_path),
                    state=SearchState.new(opinions_domain, 0, algo), batch_size=4, seed=0)
    search.run(6, progress=False)
    assert lm.generate_calls == [4] * 6 and len(lm.score_calls) == 6
    metrics = [json.loads(x) for x in (tmp_path / METRICS).read_text().splitlines()]
    elites = [json.loads(x) for x in (tmp_path / ELITES).read_text().splitlines()]
    history = [json.loads(x) for x in (tmp_path / HISTORY).read_text().splitlines()]
    assert len(metrics) == 6 and len(history) == 24 and elites
    assert metrics[-1]["qd_score"] == pytest.approx(sum(e["quality"] for e in elites))
    # the checkpoint is data: an algorithm built again from the config gets back the same state
    restored = SearchState.from_checkpoint(RunDir(tmp_path).load_checkpoint(), domain=opinions_domain,
                                           algorithm=make(opinions_domain, name)).algorithm
    assert type(restored) is type(algo)
    assert _comparable(restored.state_dict()) == _comparable(search.state.algorithm.state_dict())


def _comparable(x):
    """A state dict with arrays and deques as lists, for ==."""
    if isinstance(x, dict):
        return {k: _comparable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) or type(x).__name__ == "deque":
        return [type(x).__name__, *(_comparable(v) for v in x)]
    if isinstance(x, np.ndarray):
        return ["array", str(x.dtype), x.tolist()]
    return x


def test_zero_shot_needs_a_zero_shot_prompt(opinions_domain):
    from qdaif.errors import ConfigError

    with pytest.raises(ConfigError, match="no zero_shot prompt"):
        make(opinions_domain, "zero_shot")


def test_unknown_algorithm_lists_known_ones(opinions_domain, tmp_path):
    proc = run_cli("run", "model=scripted_fake", "algorithm=nope", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown algorithm 'nope'" in proc.stderr and "qdaif" in proc.stderr


def batch(texts, quality, measures, start=0):
    n = len(texts)
    return Batch(texts=list(texts), quality=np.asarray(quality, float), measures=np.asarray(measures, float).reshape(n, -1),
                 ids=np.arange(start, start + n), parents=[()] * n, accepted=np.ones(n, bool))


def test_fixed_few_shot_prompt_never_changes(opinions_domain):
    props = make(opinions_domain, "fixed_few_shot").propose(None, 0, np.random.default_rng(0), 5)
    assert len({p.prompt for p in props}) == 1 and props[0].parents == ("seed:0", "seed:1", "seed:2")


def test_quality_only_keeps_the_best_texts(opinions_domain):
    algo = make(opinions_domain, "quality_only", pool_size=3)
    algo.observe(batch(["a", "b", "c", "d", "e"], [0.1, 0.9, 0.5, 0.7, 0.2], [0.5] * 5))
    assert [t for _, _, t in algo.pool] == ["b", "d", "c"]
    props = algo.propose(None, 100, np.random.default_rng(0), 3)
    for p in props:
        assert set(p.parents) == {1, 2, 3} and p.operator == "quality_only"


def test_rouge_filter_rejects_near_copies_and_low_quality(opinions_domain):
    algo = make(opinions_domain, "rouge_filter", quality_threshold=0.8)
    n0 = len(algo.pool)
    algo.observe(batch(["carrots and kale make a fine lunch for me today",
                        "carrots and kale make a fine lunch for me today too",
                        "the train to the coast leaves at noon",
                        "an entirely different low quality remark"], [0.9, 0.95, 0.85, 0.3], [0.5] * 4))
    texts = [t for _, t in algo.pool][n0:]
    assert texts == ["carrots and kale make a fine lunch for me today", "the train to the coast leaves at noon"]


def test_novelty_search_accepts_novel_points_and_adapts_threshold(opinions_domain):
    algo = make(opinions_domain, "novelty", k=1, threshold=0.05)
    # 0.0 and 1.0 sit in the first and last bins: maximally far apart on the uniform bin axis
    algo.observe(batch(["x", "y", "z"], [0.9] * 3, [[0.0], [1.0], [0.0]]))
    assert [t for _, t in algo.pool] == ["x", "y"]  # z repeats x's coordinate
    assert algo.rejects == 1 and algo.threshold == pytest.approx(0.05)
    for i in range(25):
        algo.observe(batch(["same"], [0.9], [[0.0]], start=10 + i))
    assert algo.threshold < 0.05  # lowered after more than 20 rejects in a row


def test_lmx_replace_swaps_one_example_of_the_parents_list(opinions_domain, tmp_path):
    lm = ScriptedFakeLM()
    algo = make(opinions_domain, "lmx_replace")
    search = Search(domain=opinions_domain, lm=lm, judge_lm=lm, run_dir=RunDir(tmp_path),
                    state=SearchState.new(opinions_domain, 0, algo), batch_size=6, seed=0)
    search.run(6, progress=False)
    history = [json.loads(x) for x in (tmp_path / HISTORY).read_text().splitlines()]
    replaced = [h for h in history if h["operator"] == "lmx_replace"]
    assert replaced
    for h in replaced:
        assert len(h["parents"]) == 3


def test_qdef_measures_project_on_the_anchor_axis(opinions_domain):
    algo = make(opinions_domain, "qdef")
    anchors = list(opinions_domain.measures[0].anchors)
    m = algo.embed_measures(anchors + ["Broccoli is my favourite food, I eat it with joy.",
                                       "Spinach is slimy and vile, I refuse to eat it."])
    assert m[0, 0] == pytest.approx(1.0, abs=1e-6) and m[1, 0] == pytest.approx(0.0, abs=1e-6)
    assert m[2, 0] > m[3, 0]
