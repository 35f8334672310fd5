"""vLLM backend without vLLM: its pure request/response functions, and the class over a fake ``vllm`` module."""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest

from qdaif.errors import ConfigError
from qdaif.lm import ScoreRequest, make_lm
from qdaif.lm._openai import row_seed
from qdaif.lm._vllm import ScoreSequence, VLLMLM, generation_texts, plan_logprobs, sampling_settings, score_plan


# Objects shaped like vLLM's outputs: RequestOutput.outputs[i].text, RequestOutput.prompt_logprobs
# (a list over prompt positions of {token_id: Logprob}, None at position 0).
@dataclasses.dataclass
class FakeLogprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclasses.dataclass
class FakeCompletion:
    text: str
    index: int = 0


@dataclasses.dataclass
class FakeRequestOutput:
    outputs: list
    prompt_token_ids: list | None = None
    prompt_logprobs: list | None = None


def encode_words(text: str) -> list[int]:
    """A toy tokenizer: one token per space-prefixed word, id = a stable function of the word."""
    words = text.replace("\n", " \n ").split(" ")
    return [sum(ord(c) for c in w) % 997 + 3 for w in words if w]


def toy_logprob(prefix: tuple[int, ...], token: int) -> float:
    """A toy model: log P(token | prefix), depending on the previous token and the token."""
    prev = prefix[-1] if prefix else 0
    return -((prev * 31 + token * 7) % 50 + 1) / 10.0


def fake_prompt_logprobs(ids: list[int], extra_top: bool = True) -> list:
    out: list = [None]
    for k in range(1, len(ids)):
        pos = {ids[k]: FakeLogprob(toy_logprob(tuple(ids[:k]), ids[k]), rank=2)}
        if extra_top:
            pos[1] = FakeLogprob(-0.01, rank=1)  # the top-1 token vLLM adds with prompt_logprobs=1
        out.append(pos)
    return out


# --------------------------------------------------------------- requests
def test_sampling_settings_give_each_row_its_seed_and_the_call_settings():
    kw = sampling_settings(3, max_tokens=40, temperature=0.7, top_p=0.9, stop=["\n", "", "#"], seed=11)
    assert len(kw) == 3
    assert [k["seed"] for k in kw] == [row_seed(11, i) for i in range(3)]
    assert len({k["seed"] for k in kw}) == 3
    for k in kw:
        assert k["max_tokens"] == 40 and k["temperature"] == 0.7 and k["top_p"] == 0.9
        assert k["stop"] == ["\n", "#"]
    unseeded = sampling_settings(2, max_tokens=0, seed=None)
    assert all("seed" not in k and "stop" not in k for k in unseeded)
    assert unseeded[0]["max_tokens"] == 1


def test_generation_texts_take_the_first_completion_and_cut_at_stop():
    outs = [FakeRequestOutput([FakeCompletion(" a fine day\nmore")]), FakeRequestOutput([FakeCompletion("")])]
    assert generation_texts(outs, ["\n"]) == [" a fine day", ""]
    with pytest.raises(ValueError, match="no completion for prompt 1"):
        generation_texts([outs[0], FakeRequestOutput([])])


def test_score_plan_concatenates_prompt_and_continuation_tokens():
    reqs = [
        ScoreRequest("Shots\n", "Text: good soup\nAnswer:", (" positive", " negative")),
        ScoreRequest("Shots\n", "Text: bad soup\nAnswer:", (" positive", " very negative", "")),
    ]
    plan, table = score_plan(reqs, encode_words)
    assert table == [[0.0, 0.0], [0.0, 0.0, 0.0]]
    assert len(plan) == 4  # the empty continuation needs no sequence
    for seq in plan:
        ((i, j),) = seq.targets
        prompt = encode_words(reqs[i].prompt)
        cont = encode_words(reqs[i].continuations[j])
        assert seq.token_ids == tuple(prompt + cont)
        assert seq.start == len(prompt)
    assert plan[3].token_ids[plan[3].start :] == tuple(encode_words(" very negative"))


def test_score_plan_merges_duplicate_requests_and_rejects_empty_prompts():
    r = ScoreRequest("", "Text: x\nAnswer:", (" yes", " no"))
    plan, _ = score_plan([r, r], encode_words)
    assert len(plan) == 2
    assert plan[0].targets == ((0, 0), (1, 0))
    with pytest.raises(ValueError, match="non-empty prompt"):
        score_plan([ScoreRequest("", "", (" yes",))], encode_words)


# ---------------------------------------------------------------- outputs
def test_plan_logprobs_sums_the_continuation_tokens_only():
    reqs = [ScoreRequest("A B\n", "C D:", (" yes", " no way")), ScoreRequest("", "E:", (" yes",))]
    plan, table = score_plan(reqs, encode_words)
    outputs = [FakeRequestOutput([FakeCompletion("x")], list(s.token_ids), fake_prompt_logprobs(list(s.token_ids))) for s in plan]
    got = plan_logprobs(plan, outputs, table)
    for i, r in enumerate(reqs):
        prompt = encode_words(r.prompt)
        for j, c in enumerate(r.continuations):
            ids = prompt + encode_words(c)
            want = sum(toy_logprob(tuple(ids[:k]), ids[k]) for k in range(len(prompt), len(ids)))
            assert got[i][j] == pytest.approx(want)
    assert got[0][1] < got[0][0]  # two tokens are summed


def test_plan_logprobs_accepts_plain_floats():
    plan = [ScoreSequence(token_ids=(5, 6, 7), start=2, targets=((0, 0),))]
    out = FakeRequestOutput([FakeCompletion("")], prompt_logprobs=[None, {6: -1.0}, {7: -0.25, 9: -0.1}])
    assert plan_logprobs(plan, [out], [[0.0]]) == [[-0.25]]


@pytest.mark.parametrize(
    "prompt_logprobs, match",
    [(None, "no prompt log-probabilities"), ([None, {6: -1.0}, {8: -0.5}], "lack token 7"), ([None, {6: -1.0}], "no prompt log")],
)
def test_plan_logprobs_reports_missing_values(prompt_logprobs, match):
    plan = [ScoreSequence(token_ids=(5, 6, 7), start=2, targets=((0, 0),))]
    with pytest.raises(ValueError, match=match):
        plan_logprobs(plan, [FakeRequestOutput([], prompt_logprobs=prompt_logprobs)], [[0.0]])
    with pytest.raises(ValueError, match="2 outputs for 1 sequences"):
        plan_logprobs(plan, [FakeRequestOutput([]), FakeRequestOutput([])], [[0.0]])


# ------------------------------------------------------- class, fake vllm
class _FakeTokenizer:
    def encode(self, text, add_special_tokens=True):
        assert add_special_tokens is False
        return encode_words(text)


class _FakeSamplingParams:
    def __init__(self, **kw):
        self.kw = kw


class _FakeLLM:
    instances: list = []

    def __init__(self, **kw):
        self.kw = kw
        self.calls: list = []
        _FakeLLM.instances.append(self)

    def get_tokenizer(self):
        return _FakeTokenizer()

    def generate(self, inputs, params, use_tqdm=True):
        self.calls.append((inputs, params))
        outs = []
        for n, inp in enumerate(inputs):
            ids = inp["prompt_token_ids"]
            p = params[n] if isinstance(params, list) else params
            if p.kw.get("prompt_logprobs") is not None:
                outs.append(FakeRequestOutput([FakeCompletion("")], ids, fake_prompt_logprobs(ids)))
            else:
                outs.append(FakeRequestOutput([FakeCompletion(f" tokens={len(ids)} seed={p.kw.get('seed')}\nrest")], ids))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.__version__ = "0.0-fake"
    mod.LLM = _FakeLLM
    mod.SamplingParams = _FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", mod)
    _FakeLLM.instances.clear()
    return mod


def test_vllm_lm_makes_one_engine_call_per_generate_and_score(fake_vllm):
    lm = make_lm({"backend": "vllm", "name": "some/model", "tensor_parallel_size": 2, "max_model_len": 4096})
    assert isinstance(lm, VLLMLM)
    llm = _FakeLLM.instances[0]
    assert llm.kw["model"] == "some/model" and llm.kw["tensor_parallel_size"] == 2
    assert llm.kw["enable_prefix_caching"] is True and llm.kw["max_model_len"] == 4096
    texts = lm.generate(["a b c", "d e"], max_tokens=8, temperature=0.8, stop=["\n"], seed=5)
    assert texts == [f" tokens=3 seed={row_seed(5, 0)}", f" tokens=2 seed={row_seed(5, 1)}"]
    assert len(llm.calls) == 1
    reqs = [ScoreRequest("Shots\n", f"Text: {t}\nAnswer:", (" positive", " negative")) for t in ("good", "bad", "good")]
    scores = lm.score(reqs)
    assert len(llm.calls) == 2
    inputs, params = llm.calls[1]
    assert params.kw["prompt_logprobs"] >= 0 and params.kw["max_tokens"] == 1
    assert len(inputs) == 4  # the repeated text is sent once
    assert scores[0] == scores[2]
    for r, row in zip(reqs, scores):
        prompt = encode_words(r.prompt)
        for c, v in zip(r.continuations, row):
            ids = prompt + encode_words(c)
            assert v == pytest.approx(toy_logprob(tuple(ids[:-1]), ids[-1]))
    d = lm.describe()
    assert d["backend"] == "vllm" and d["name"] == "some/model" and d["vllm"] == "0.0-fake"
    assert lm.generate([], max_tokens=4) == [] and lm.score([]) == []


def test_vllm_lm_without_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'qdaif\[vllm\]'"):
        make_lm({"backend": "vllm", "name": "x"})


@pytest.mark.parametrize("kw, match", [({"tensor_parallel_size": 0}, "tensor_parallel_size"), ({"gpu_memory_utilization": 1.5}, "gpu_memory")])
def test_vllm_lm_validates_settings_before_importing_vllm(monkeypatch, kw, match):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ConfigError, match=match):
        VLLMLM(name="x", **kw)


def test_row_seeds_are_stable_and_distinct():
    seeds = [row_seed(0, i) for i in range(1000)]
    assert len(set(seeds)) == 1000
    assert all(0 <= s < 2**31 for s in seeds)
    assert row_seed(0, 3) == row_seed(0, 3) != row_seed(1, 3)
    assert 0 <= row_seed(2**40, 7) < 2**31  # seeds beyond 32 bits still map into range
