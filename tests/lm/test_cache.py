"""CachingLM: hits and misses, persistence, key sensitivity, concurrent processes."""

from __future__ import annotations

import math
import multiprocessing
import sqlite3

import pytest

from qdaif.lm import ScoreRequest
from qdaif.lm._cache import CachingLM
from qdaif.lm._fake import ScriptedFakeLM

GEN = dict(max_tokens=16, temperature=0.8, top_p=0.95, stop=("\n",), seed=7)
PROMPTS = ["Opinion 1:", "Opinion 2:", "Opinion 1:"]


def reqs(*texts: str) -> list[ScoreRequest]:
    return [ScoreRequest("Shots\n", f"Text: {t}\nAnswer:", (" positive", " negative")) for t in texts]


class NamedFake(ScriptedFakeLM):
    """The scripted fake with a settable identity and settings that describe() reports."""

    def __init__(self, *, name: str = "fake-a", servers: tuple[str, ...] = ("http://h1/v1",), **kw) -> None:
        super().__init__(**kw)
        self.name, self.servers = name, list(servers)

    def describe(self):
        return {"backend": self.backend, "name": self.name, "servers": self.servers, "max_concurrency": 4}


def test_generate_hits_after_a_miss_and_does_not_call_the_model_again(tmp_path):
    inner = NamedFake()
    lm = CachingLM(lm=inner, path=tmp_path / "c.sqlite")
    first = lm.generate(PROMPTS, **GEN)
    assert (lm.hits, lm.misses) == (0, 3)
    assert lm.generate(PROMPTS, **GEN) == first
    assert (lm.hits, lm.misses) == (3, 3)
    assert inner.generate_calls == [3]
    assert first == inner.generate(PROMPTS, **GEN)  # a cached answer is the model's answer


def test_score_sends_only_unseen_requests_in_one_call(tmp_path):
    inner = NamedFake()
    lm = CachingLM(lm=inner, path=tmp_path / "c.sqlite")
    a = lm.score(reqs("good soup", "bad soup"))
    assert inner.score_calls == [2] and lm.stats["score_misses"] == 2
    b = lm.score(reqs("bad soup", "fresh kale", "good soup", "fresh kale"))
    assert inner.score_calls == [2, 1]  # "fresh kale" twice, sent once
    assert lm.stats["score_hits"] == 2 and lm.stats["score_misses"] == 4
    assert b[0] == a[1] and b[2] == a[0] and b[1] == b[3]
    assert b == inner.score(reqs("bad soup", "fresh kale", "good soup", "fresh kale"))
    assert lm.score([]) == [] and lm.generate([], **GEN) == []


def test_answers_persist_across_instances(tmp_path):
    path = tmp_path / "sub" / "c.sqlite"
    one = CachingLM(lm=NamedFake(), path=path)
    texts = one.generate(PROMPTS, **GEN)
    scores = one.score(reqs("good soup"))
    one.close()
    inner = NamedFake()
    two = CachingLM(lm=inner, path=path)
    assert two.generate(PROMPTS, **GEN) == texts
    assert two.score(reqs("good soup")) == scores
    assert (two.hits, two.misses) == (4, 0)
    assert inner.generate_calls == [] and inner.score_calls == []
    assert len(two) == 2


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 8},
        {"temperature": 0.9},
        {"top_p": 1.0},
        {"max_tokens": 17},
        {"stop": ("\n", "#")},
        {"prompts": ["Opinion 1:", "Opinion 2:"]},
        {"prompts": ["Opinion 2:", "Opinion 1:", "Opinion 1:"]},
    ],
)
def test_any_change_of_parameters_seed_or_prompts_misses(tmp_path, change):
    lm = CachingLM(lm=NamedFake(), path=tmp_path / "c.sqlite")
    lm.generate(PROMPTS, **GEN)
    args = {**GEN, **change}
    prompts = args.pop("prompts", PROMPTS)
    lm.generate(prompts, **args)
    assert lm.hits == 0 and lm.misses == 3 + len(prompts)


def test_another_model_misses_but_another_server_hits(tmp_path):
    path = tmp_path / "c.sqlite"
    CachingLM(lm=NamedFake(name="fake-a"), path=path).generate(PROMPTS, **GEN)
    other_model = CachingLM(lm=NamedFake(name="fake-b"), path=path)
    other_model.generate(PROMPTS, **GEN)
    other_model.score(reqs("x"))
    assert other_model.hits == 0
    moved = CachingLM(lm=NamedFake(name="fake-a", servers=("http://h2/v1", "http://h3/v1")), path=path)
    moved.generate(PROMPTS, **GEN)
    assert moved.hits == 3
    explicit = CachingLM(lm=NamedFake(name="fake-a"), path=path, identity={"model": "pinned"})
    explicit.generate(PROMPTS, **GEN)
    assert explicit.hits == 0


def test_scores_change_with_continuations(tmp_path):
    lm = CachingLM(lm=NamedFake(), path=tmp_path / "c.sqlite")
    lm.score(reqs("good soup"))
    lm.score([ScoreRequest("Shots\n", "Text: good soup\nAnswer:", (" negative", " positive"))])
    assert lm.stats["score_hits"] == 0


def test_unseeded_sampling_is_never_cached_but_greedy_is(tmp_path):
    inner = NamedFake()
    lm = CachingLM(lm=inner, path=tmp_path / "c.sqlite")
    lm.generate(PROMPTS, max_tokens=8, temperature=0.7, seed=None)
    lm.generate(PROMPTS, max_tokens=8, temperature=0.7, seed=None)
    assert inner.generate_calls == [3, 3] and lm.stats["uncached"] == 6 and lm.hits == 0
    lm.generate(PROMPTS, max_tokens=8, temperature=0.0, seed=None)
    lm.generate(PROMPTS, max_tokens=8, temperature=0.0, seed=None)
    assert inner.generate_calls == [3, 3, 3] and lm.hits == 3


def test_non_finite_scores_round_trip(tmp_path):
    class Odd(NamedFake):
        def score(self, requests):
            self.score_calls.append(len(requests))
            return [[-math.inf, math.nan, -1.5] for _ in requests]

    path = tmp_path / "c.sqlite"
    r = [ScoreRequest("", "Text: x\nAnswer:", ("a", "b", "c"))]
    CachingLM(lm=Odd(), path=path).score(r)
    inner = Odd()
    (row,) = CachingLM(lm=inner, path=path).score(r)
    assert inner.score_calls == []
    assert row[0] == -math.inf and math.isnan(row[1]) and row[2] == -1.5


def test_describe_is_the_models_plus_the_cache_file(tmp_path):
    lm = CachingLM(lm=NamedFake(), path=tmp_path / "c.sqlite")
    d = lm.describe()
    assert d["name"] == "fake-a" and d["cache"] == str(tmp_path / "c.sqlite")
    assert lm.backend == "scripted_fake"


def test_the_file_is_in_wal_mode(tmp_path):
    CachingLM(lm=NamedFake(), path=tmp_path / "c.sqlite").generate(PROMPTS, **GEN)
    con = sqlite3.connect(tmp_path / "c.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _worker(path: str, worker: int, rounds: int, queue) -> None:
    try:
        lm = CachingLM(lm=NamedFake(), path=path)
        for k in range(rounds):
            # Both workers write the shared entries and their own ones, interleaved.
            lm.generate([f"shared {k}"], max_tokens=8, temperature=0.5, seed=k)
            lm.generate([f"worker {worker} {k}"], max_tokens=8, temperature=0.5, seed=k)
            lm.score(reqs(f"shared {k}", f"worker {worker} {k}"))
        queue.put((worker, None))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        queue.put((worker, repr(e)))


def test_concurrent_processes_share_one_file(tmp_path):
    path = str(tmp_path / "c.sqlite")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    rounds = 40
    procs = [ctx.Process(target=_worker, args=(path, w, rounds, queue)) for w in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(err is None for _, err in results), results
    inner = NamedFake()
    lm = CachingLM(lm=inner, path=path)
    for k in range(rounds):
        lm.generate([f"shared {k}"], max_tokens=8, temperature=0.5, seed=k)
        for w in range(3):
            lm.generate([f"worker {w} {k}"], max_tokens=8, temperature=0.5, seed=k)
        lm.score(reqs(f"shared {k}", *(f"worker {w} {k}" for w in range(3))))
    assert inner.generate_calls == [] and inner.score_calls == []
    assert len(lm) == rounds * (1 + 3) * 2
