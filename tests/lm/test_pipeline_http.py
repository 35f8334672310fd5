"""The pipelined iteration over HTTP: local scripted servers with faults, a slow reply, a server that dies.

The servers are :class:`tests.lm.test_openai_faults.FaultServer`: their replies are a
function of the request (prompt and seed), so a run's archive must not depend on
faults, retries, failovers or the order in which requests come back.
"""

from __future__ import annotations

import json
import random

import pytest

from qdaif.lm._openai import OpenAILM, row_seed
from qdaif.run_dir import HISTORY, METRICS
from qdaif.search import iteration_seed
from tests.lm.test_openai_faults import FaultServer
from tests.test_search import make_search, read


@pytest.fixture
def servers():
    made: list[FaultServer] = []

    def _servers(n: int) -> list[FaultServer]:
        made.extend(FaultServer() for _ in range(n))
        return made[-n:]

    yield _servers
    for s in made:
        try:
            s.close()
        except OSError:
            pass


def _lm(urls, **kw) -> OpenAILM:
    kw = {"name": "fault-model", "backoff": 0.01, "max_retries": 4, "timeout": 5, "down_for": 60.0,
          "api_key_env": "QDAIF_TEST_NO_SUCH_KEY", **kw}
    return OpenAILM(base_urls=list(urls), **kw)


def _run(domain, path, lm, iterations, *, pipeline="auto", state=None, batch_size=6):
    search = make_search(domain, path, lm=lm, batch_size=batch_size, pipeline=pipeline, state=state)
    search.run(iterations, progress=False)
    return search


def _history(path):
    return [{k: h[k] for k in ("id", "iteration", "text", "quality", "measures", "cell")} for h in read(path, HISTORY)]


def test_pipelined_and_barrier_runs_agree_over_http(opinions_domain, tmp_path, servers):
    (a,) = servers(1)
    for mode in ("barrier", "candidate"):
        with _lm([a.url]) as lm:
            assert make_search(opinions_domain, tmp_path / "x", lm=lm, pipeline="auto").pipelined  # http is concurrent
            _run(opinions_domain, tmp_path / mode, lm, 4, pipeline=mode)
    assert _history(tmp_path / "candidate") == _history(tmp_path / "barrier")
    assert len(_history(tmp_path / "barrier")) == 24


def test_a_candidate_is_judged_while_a_slow_generation_is_still_running(opinions_domain, tmp_path, servers):
    (a,) = servers(1)
    slow_seed = row_seed(iteration_seed(0, 1), 0)  # the first candidate of iteration 1
    a.slow = lambda body: 1.5 if body.get("seed") == slow_seed and body.get("logprobs") is None else 0.0
    with _lm([a.url], max_concurrency=8) as lm:
        make_search(opinions_domain, tmp_path, lm=lm, batch_size=6, pipeline="candidate").step()
    posts = [r for r in a.requests if r["body"] is not None]
    slow = next(r for r in posts if r["body"].get("seed") == slow_seed and r["body"].get("logprobs") is None)
    judged_meanwhile = [r for r in posts if r["body"].get("logprobs") is not None and slow["t"] < r["t"] < slow["t"] + 1.4]
    assert len(judged_meanwhile) >= 2 * 5 - 2, "the other candidates were not judged while the slow one generated"


@pytest.mark.parametrize("fault", ["500", "drop", "malformed", "429:0", "sleep:6"])
def test_faults_mid_run_change_nothing_in_the_archive(opinions_domain, tmp_path, servers, fault):
    clean, faulty = servers(2)
    with _lm([clean.url]) as lm:
        _run(opinions_domain, tmp_path / "clean", lm, 4, pipeline="candidate")
    rng = random.Random(0)
    # Faults scattered over the requests (a "sleep:6" outlives the 5 s timeout and is retried).
    faulty.script.extend(fault if rng.random() < (0.08 if fault == "sleep:6" else 0.25) else "ok" for _ in range(60))
    with _lm([faulty.url]) as lm:
        _run(opinions_domain, tmp_path / "faulty", lm, 4, pipeline="candidate")
    # The faults were met: every faulty answer made the client send the request again.
    # (Not lm.stats["retryable_errors"]: a connection dropped on a reused keep-alive
    # connection looks like one the server closed while idle, and is re-sent at once
    # without counting as an attempt.)
    sent = {s: len([r for r in s.requests if r["body"] is not None]) for s in (clean, faulty)}
    assert sent[faulty] > sent[clean]
    assert _history(tmp_path / "faulty") == _history(tmp_path / "clean")


def test_two_servers_one_killed_halfway_the_run_completes_on_the_other(opinions_domain, tmp_path, servers):
    """No candidate lost or judged twice; metrics.jsonl shows the failover."""
    ref, a, b = servers(3)
    with _lm([ref.url]) as lm:
        _run(opinions_domain, tmp_path / "ref", lm, 8, pipeline="candidate")
    with _lm([a.url, b.url]) as lm:
        search = _run(opinions_domain, tmp_path / "run", lm, 4, pipeline="candidate")
        a.kill()
        search.run(8, progress=False)
    assert _history(tmp_path / "run") == _history(tmp_path / "ref")  # the same candidates, each once
    metrics = [json.loads(x) for x in (tmp_path / "run" / METRICS).read_text().splitlines()]
    before, after = metrics[:4], metrics[4:]
    assert all(m["servers"][a.url]["requests"] > 0 and m["servers"][b.url]["requests"] > 0 for m in before)
    assert after[0]["servers"][a.url]["downs"] == 1 and after[0]["servers"][a.url]["failovers"] >= 1
    assert not after[-1]["servers"][a.url]["up"] and after[-1]["servers"][b.url]["up"]
    assert all(m["servers"][a.url]["requests"] == 0 for m in after[1:])  # left alone while down
    sent = sum(m["servers"][u]["requests"] for m in metrics for u in (a.url, b.url))
    assert sent == len([r for s in (a, b) for r in s.requests if r["body"] is not None])


def test_a_dead_server_comes_back_after_a_health_check(opinions_domain, tmp_path, servers):
    a, b = servers(2)
    with _lm([a.url, b.url], down_for=0.2) as lm:
        a.default = "500"
        lm.generate(["p1", "p2", "p3", "p4"], max_tokens=4, seed=1)
        assert not lm.server_counters()[a.url]["up"]
        a.default = "ok"
        import time

        time.sleep(0.3)
        lm.generate(["q1", "q2", "q3", "q4"], max_tokens=4, seed=1)
        counts = lm.server_counters()[a.url]
        assert counts["up"] and counts["health_checks"] == 1
        assert any(r["path"] == "/health" for r in a.requests)
