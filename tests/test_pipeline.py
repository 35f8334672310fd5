"""The pipelined iteration (each candidate judged as soon as it is generated) against the barrier one.

Uses the scripted fake LM (not a model) posing as a concurrent backend; the same
pipeline against real HTTP servers is tested in tests/lm/test_pipeline_http.py.
"""

import json
import threading

import pytest

from qdaif.errors import ConfigError
from qdaif.lm._fake import ScriptedFakeLM
from qdaif.run_dir import ELITES, HISTORY, METRICS
from tests.test_search import load_state, make_search, read


def _records(path):
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]  # noqa: E731
    return strip(read(path, HISTORY)), read(path, ELITES), strip(read(path, METRICS))


@pytest.mark.parametrize("faults", [{}, {"empty_every": 3, "nonfinite_every": 4}])
def test_pipelined_and_barrier_runs_give_the_same_archive(opinions_domain, tmp_path, faults):
    runs = {}
    for mode in ("barrier", "candidate"):
        lm = ScriptedFakeLM(concurrent=True, **faults)
        search = make_search(opinions_domain, tmp_path / mode, lm=lm, batch_size=7, pipeline=mode)
        assert search.pipelined == (mode == "candidate")
        search.run(6, progress=False)
        runs[mode] = _records(tmp_path / mode)
        if mode == "candidate":
            assert set(lm.generate_calls) == {1}  # one request per candidate
            assert len(lm.generate_calls) == 6 * 7
        else:
            assert lm.generate_calls == [7] * 6
    assert runs["candidate"] == runs["barrier"]
    history = runs["candidate"][0]
    assert len(history) > 10 and len({h["text"] for h in history}) > 10


def test_auto_pipelines_only_concurrent_backends_and_label_judge_domains(opinions_domain, tmp_path):
    assert make_search(opinions_domain, tmp_path / "a", lm=ScriptedFakeLM(concurrent=True)).pipelined
    assert not make_search(opinions_domain, tmp_path / "b", lm=ScriptedFakeLM()).pipelined
    with pytest.raises(ConfigError, match="pipeline must be one of"):
        make_search(opinions_domain, tmp_path / "c", pipeline="steady-ish")


def test_a_pipelined_run_resumes_exactly(opinions_domain, tmp_path):
    whole = make_search(opinions_domain, tmp_path / "whole", lm=ScriptedFakeLM(concurrent=True), pipeline="candidate")
    whole.run(6, progress=False)
    part = make_search(opinions_domain, tmp_path / "part", lm=ScriptedFakeLM(concurrent=True), pipeline="candidate")
    part.run(3, progress=False)
    resumed = make_search(opinions_domain, tmp_path / "part", lm=ScriptedFakeLM(concurrent=True),
                          state=load_state(opinions_domain, tmp_path / "part"), pipeline="candidate")
    resumed.run(6, progress=False)
    assert _records(tmp_path / "part") == _records(tmp_path / "whole")


class FailingFake(ScriptedFakeLM):
    """The scripted fake, failing its n-th generate call (not a model)."""

    def __init__(self, *, fail_at: int, **kw) -> None:
        super().__init__(concurrent=True, **kw)
        self.fail_at, self.calls, self.lock = fail_at, 0, threading.Lock()
        self.abandoned = 0

    def generate(self, prompts, **kw):
        with self.lock:
            self.calls += 1
            n = self.calls
        if n == self.fail_at:
            from qdaif.lm._openai import LMServerError

            raise LMServerError("LM server http://x failed", server="http://x")
        return super().generate(prompts, **kw)

    def abandon_requests(self) -> None:
        self.abandoned += 1


def test_an_error_in_one_candidate_stops_the_run_at_the_last_checkpoint(opinions_domain, tmp_path):
    lm = FailingFake(fail_at=10)
    search = make_search(opinions_domain, tmp_path, lm=lm, batch_size=6, pipeline="candidate")
    with pytest.raises(Exception, match="failed"):
        search.run(4, progress=False)
    assert lm.abandoned == 1  # the other requests in flight were abandoned
    metrics = [json.loads(x) for x in (tmp_path / METRICS).read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1]  # iteration 2 (calls 7-12) left no record
    assert search.state.iteration == 1
