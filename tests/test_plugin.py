"""Domain plugins with the scripted fake LM (not a model): hooks, computed measures, feasible cells."""

import json

import numpy as np
import pytest

from qdaif.algorithms import QDAIF
from qdaif.domain import domain_from_config
from qdaif.errors import ConfigError
from qdaif.feedback import Evaluation
from qdaif.lm._fake import ScriptedFakeLM
from qdaif.operators import Proposal
from qdaif.plugin import DomainPlugin
from qdaif.run_dir import ELITES, HISTORY, METRICS, RunDir
from qdaif.search import Search, SearchState


class Plugin(DomainPlugin):
    """A toy plugin: the measure is the word count, quality the judge's P(first label); texts with 'dull' are invalid."""

    placeholders = frozenset({"text", "n"})

    def parse(self, proposal, generation):
        text = generation.strip()
        return None if "dull" in text or not text else text.upper()

    def mutate(self, archive, rng, n):
        return [Proposal("Text: more", "toy_mutation", (), meta={"k": int(rng.integers(5))}) for _ in range(n)]

    def evaluate(self, texts, proposals, *, lm, judge_lm, seed):
        from qdaif.feedback import label_probabilities
        from qdaif.lm import ScoreRequest

        spec = self.domain.judges["good"]
        logps = judge_lm.score([ScoreRequest(spec.shots, spec.query.format(text=t, n=len(t)), spec.labels) for t in texts])
        probs = label_probabilities(logps)
        words = np.array([[len(t.split())] for t in texts], dtype=float).reshape(-1, 1)
        return Evaluation(quality=probs[:, 0] if len(texts) else np.zeros(0), measures=words, label_probs={"good": probs},
                          details=[{"chars": len(t)} for t in texts])

    def record(self, text):
        return {"words": text.split()}

    def feasible_cells(self):
        return np.array([True, True, True, False])


NODE = {
    "name": "toy",
    "plugin": "tests.test_plugin",
    "settings": {"anything": 1},
    "lmx": {"instruction": "Text:", "num_examples": 2},
    "seeds": ["one two", "three four five", "six"],
    "judges": {"good": {"query": "Text: {text} ({n})\nVerdict:", "labels": [" good", " bad"]}},
    "measures": [{"name": "words", "kind": "computed", "edges": [0, 3, 6, 9, 100]}],
}


def test_plugin_domain_runs_and_records_its_fields(tmp_path):
    domain = domain_from_config(NODE, allow_code=True)
    lm = ScriptedFakeLM()
    algorithm = QDAIF(domain=domain, init_evaluations=6, min_init_cells=1)
    search = Search(domain=domain, lm=lm, judge_lm=lm, run_dir=RunDir(tmp_path), state=SearchState.new(domain, 0, algorithm),
                    batch_size=6, seed=0)
    search.run(4, progress=False)
    history = [json.loads(x) for x in (tmp_path / HISTORY).read_text().splitlines()]
    metrics = [json.loads(x) for x in (tmp_path / METRICS).read_text().splitlines()]
    elites = [json.loads(x) for x in (tmp_path / ELITES).read_text().splitlines()]
    assert all(h["text"] == h["text"].upper() and "DULL" not in h["text"] for h in history)
    assert all(h["words"] == h["text"].split() and h["details"] == {"chars": len(h["text"])} for h in history)
    assert all(h["measures"] == [len(h["text"].split())] for h in history)
    assert {h["operator"] for h in history} >= {"toy_mutation"}
    assert all("meta" in h for h in history if h["operator"] == "toy_mutation")
    assert sum(m["dropped_invalid"] for m in metrics) + len(history) + sum(m["dropped_empty"] for m in metrics) == 24
    occupied = {e["cell"][0] for e in elites}
    assert metrics[-1]["feasible_coverage"] == pytest.approx(len(occupied & {0, 1, 2}) / 3)
    assert all("words" in e for e in elites)


@pytest.mark.parametrize("change, message", [
    ({"plugin": "no_such_plugin"}, "cannot import 'no_such_plugin'"),
    ({"plugin": "json"}, "defines no 'Plugin' class"),
    ({"plugin": None, "settings": None, "judges": None}, "kind: computed"),
    ({"judges": {"good": {"query": "{text} {m}", "labels": [" a", " b"]}}}, "unknown placeholder(s) {m}"),
])
def test_plugin_domain_errors_name_the_field(change, message):
    node = {**NODE, **change}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")):
        domain_from_config(node, allow_code=True)


class ShortLinePlugin(Plugin):
    """The toy plugin, with every other mutation asking for at most 2 tokens."""

    def mutate(self, archive, rng, n):
        return [Proposal(f"Text: more {k}", "toy_mutation", (), meta={"k": k},
                         generation={"max_tokens": 2, "stop": ["\n"]} if k % 2 else {}) for k in range(n)]


def test_proposals_with_their_own_generation_settings_share_one_call_per_setting(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(sys.modules[__name__], "Plugin", ShortLinePlugin)
    domain = domain_from_config(NODE, allow_code=True)
    lm = ScriptedFakeLM(max_words=8)
    algorithm = QDAIF(domain=domain, init_evaluations=6, min_init_cells=1)
    search = Search(domain=domain, lm=lm, judge_lm=lm, run_dir=RunDir(tmp_path), state=SearchState.new(domain, 0, algorithm),
                    batch_size=6, seed=0)
    search.run(3, progress=False)
    assert lm.generate_calls == [6, 3, 3, 3, 3]  # init: one call; mutation: one call per setting
    history = [json.loads(x) for x in (tmp_path / HISTORY).read_text().splitlines()]
    short = [h for h in history if h.get("meta", {}).get("k", 0) % 2]
    assert short and all(len(h["text"].split()) <= 2 for h in short)


def _count_builds(log):
    """A fork_cli setup: every construction of the toy plugin appends a line to ``log``."""

    def setup():
        original = Plugin.__init__

        def counted(self, *, domain):
            with open(log, "a") as f:
                f.write("built\n")
            original(self, domain=domain)

        Plugin.__init__ = counted

    return setup


def test_the_plugin_is_built_once_per_run_and_once_per_resume_and_never_saved(tmp_path):
    """Run and resume through the command line: one plugin object per process, shared by the algorithm and the search."""
    import yaml

    from tests.helpers import cli_in_fork

    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(NODE))
    log = tmp_path / "builds.log"
    common = ["allow_code=true", "progress=false"]
    code, err = cli_in_fork("run", "domain_file=toy.yaml", "model=scripted_fake", "iterations=2", "batch_size=6",
                            "init_evaluations=6", "min_init_cells=1", "hydra.run.dir=out", *common,
                            cwd=tmp_path, out=tmp_path / "run", setup=_count_builds(log))
    assert code == 0, err
    assert log.read_text().splitlines() == ["built"]
    code, err = cli_in_fork("run", "resume=out", "iterations=4", *common, cwd=tmp_path, out=tmp_path / "resume",
                            setup=_count_builds(log))
    assert code == 0, err
    assert log.read_text().splitlines() == ["built", "built"]
    metrics = [json.loads(x) for x in (tmp_path / "out" / METRICS).read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2, 3, 4]
    checkpoint = (tmp_path / "out" / "checkpoint.json").read_text()
    assert "Plugin" not in checkpoint and "tests.test_plugin" not in checkpoint


def test_search_and_algorithm_share_the_plugin_they_are_given(tmp_path):
    domain = domain_from_config(NODE, allow_code=True)
    plugin = Plugin(domain=domain)
    algorithm = QDAIF(domain=domain, init_evaluations=6, min_init_cells=1, plugin=plugin)
    lm = ScriptedFakeLM()
    search = Search(domain=domain, lm=lm, judge_lm=lm, run_dir=RunDir(tmp_path), plugin=plugin,
                    state=SearchState.new(domain, 0, algorithm), batch_size=6, seed=0)
    assert search.plugin is plugin and algorithm.plugin is plugin
    without = Search(domain=domain, lm=lm, judge_lm=lm, run_dir=RunDir(tmp_path / "b"),
                     state=SearchState.new(domain, 0, algorithm), batch_size=6, seed=0)
    assert without.plugin is plugin  # the algorithm's, not a second one
