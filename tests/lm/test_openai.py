"""The OpenAI-compatible HTTP backend: request/response helpers, and a real llama.cpp server."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from qdaif.errors import ConfigError
from qdaif.lm import ScoreRequest, make_lm
from qdaif.lm._openai import (
    LMServerError,
    OpenAILM,
    absent_label_bound,
    chat_body,
    completion_body,
    parse_generation,
    parse_top_logprobs,
    prefix_parents,
    span_logprob,
)

ROOT = Path(__file__).resolve().parents[2]
LLAMA_PLAIN_SAMPLING = {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}


# ------------------------------------------------------------ pure helpers
def test_completion_and_chat_bodies():
    b = completion_body(model="m", prompt="Hi", max_tokens=0, temperature=0, stop=["\n", ""], seed=3, logprobs=5, echo=True,
                        extra={"top_k": 0})
    assert b == {"model": "m", "prompt": "Hi", "max_tokens": 1, "temperature": 0.0, "top_p": 1.0, "stop": ["\n"],
                 "seed": 3, "logprobs": 5, "echo": True, "top_k": 0}
    c = chat_body(model="m", prompt="Hi", max_tokens=7)
    assert c == {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 7, "temperature": 1.0, "top_p": 1.0}


def test_parsers_read_the_api_shapes_and_reject_others():
    assert parse_generation({"choices": [{"text": " ok"}]}) == " ok"
    assert parse_generation({"choices": [{"message": {"content": None}}]}, chat=True) == ""
    assert parse_top_logprobs({"choices": [{"logprobs": {"top_logprobs": [{" a": -0.5, " b": -1}]}}]}) == {" a": -0.5, " b": -1.0}
    for bad in ({}, {"choices": []}, {"choices": [{"logprobs": None}]}, {"choices": [{"logprobs": {"top_logprobs": [None]}}]}):
        with pytest.raises(ValueError):
            parse_top_logprobs(bad)
    with pytest.raises(ValueError):
        parse_generation({"choices": [{"message": "x"}]})


def test_prefix_parents_finds_the_longest_prefix_among_the_prompts():
    prompts = ["ab", "abc", "b", "abcd", "abd", "ab", "a"]
    #           0     1      2    3       4      5     6
    assert prefix_parents(prompts) == [6, 5, -1, 1, 5, 0, -1]
    assert prefix_parents([]) == [] and prefix_parents(["x"]) == [-1]
    many = [f"block {i % 7}" + " more" * (i % 3) for i in range(60)]
    brute = []
    for i, p in enumerate(many):
        cands = [j for j, q in enumerate(many) if j != i and p.startswith(q) and (len(q) < len(p) or j < i)]
        # the longest prefix; among equal prompts, the nearest earlier one
        brute.append(max(cands, key=lambda j: (len(many[j]), j if j < i else -1)) if cands else -1)
    got = prefix_parents(many)
    assert all(many[g] == many[b] for g, b in zip(got, brute) if b >= 0) and [g < 0 for g in got] == [b < 0 for b in brute]


def _echo(tokens, values):
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    return {"choices": [{"logprobs": {"tokens": tokens, "text_offset": offsets, "token_logprobs": values}}]}


def test_span_logprob_sums_the_continuation_tokens():
    r = _echo(["Answer", ":", " pos", "itive", " x"], [None, -1.0, -0.5, -0.25, -3.0])
    assert span_logprob(r, len("Answer:"), len("Answer: positive")) == -0.75
    # A token merged across the boundary (":" + " pos") is counted.
    merged = _echo(["Answer", ": pos", "itive"], [None, -2.0, -0.25])
    assert span_logprob(merged, len("Answer:"), len("Answer: positive")) == -2.25
    with pytest.raises(ValueError, match="first token has no log-probability"):
        span_logprob(_echo([" positive"], [None]), 0, 9)
    with pytest.raises(ValueError, match="no echoed token covers"):
        span_logprob(r, 100, 120)


def test_chat_label_logprobs_match_first_tokens_without_space_or_case():
    from qdaif.lm._openai import chat_label_logprobs, parse_chat_top_logprobs

    top = {"Positive": -0.5, "positive": -1.5, "Neg": -2.0, "the": -3.0, "S": -4.0}
    values, absent = chat_label_logprobs(top, [" positive", " negative", " neutral"])
    assert values[0] == pytest.approx(np.logaddexp(-0.5, -1.5))
    assert values[1] == pytest.approx(-2.0)  # "Neg" starts " negative"
    assert absent == 1 and values[2] < -3.0
    # "S" starts both labels: it counts for neither
    values, absent = chat_label_logprobs(top, [" sonnet", " sestina"])
    assert absent == 2
    response = {"choices": [{"logprobs": {"content": [{"token": "Yes", "logprob": -0.1, "top_logprobs": [
        {"token": "Yes", "logprob": -0.1}, {"token": "No", "logprob": -2.4}, {"token": "Yes", "logprob": -3.0}]}]}}]}
    assert parse_chat_top_logprobs(response) == pytest.approx({"Yes": np.logaddexp(-0.1, -3.0), "No": -2.4})
    for bad in ({"choices": [{"logprobs": None}]}, {"choices": [{"logprobs": {"content": []}}]},
                {"choices": [{"logprobs": {"content": [{"top_logprobs": [{"token": "x"}]}]}}]}):
        with pytest.raises(ValueError):
            parse_chat_top_logprobs(bad)


def test_absent_label_bound_is_below_the_top_list():
    top = {" a": math.log(0.6), " b": math.log(0.3)}
    assert absent_label_bound(top) == pytest.approx(math.log(0.1))
    full = {" a": math.log(0.5), " b": math.log(0.5)}
    assert absent_label_bound(full) == pytest.approx(math.log(0.5))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({}, "base_url is missing"),
        ({"base_url": "ftp://x/v1"}, "not an http"),
        ({"base_url": "http://user:pw@x/v1"}, "carries credentials"),
        ({"base_url": "http://x/v1", "api": "rest"}, "model.api"),
        ({"base_url": "http://x/v1", "score_mode": "magic"}, "score_mode"),
        ({"base_url": "http://x/v1", "max_concurrency": 0}, "max_concurrency"),
        ({"base_url": "http://x/v1", "timeout": 0}, "timeout"),
    ],
)
def test_bad_settings_are_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        OpenAILM(name="m", **kw)


def test_the_config_group_builds_the_backend_without_contacting_a_server():
    from qdaif.cli import compose_config

    cfg = compose_config(["model=openai", "model.name=m", "model.base_urls=[http://127.0.0.1:9/v1,http://localhost:10/v1/]",
                          "model.extra_body={top_k: 0}"])
    with make_lm(cfg.model) as lm:
        assert isinstance(lm, OpenAILM)
        assert lm.servers == ["http://127.0.0.1:9/v1", "http://localhost:10/v1"]
        d = lm.describe()
        assert d == {"backend": "openai", "name": "m", "api": "completions", "score_mode": "auto", "top_logprobs": 20,
                     "servers": lm.servers, "chain_prefixes": True, "extra_body": {"top_k": 0}}
        json.dumps(d)


# ------------------------------------------------------ real llama.cpp server


@pytest.fixture(scope="module")
def server_lm(llama_server):
    with OpenAILM(base_url=llama_server.url, api_key_env=llama_server.key_env, max_concurrency=4,
                  extra_body=LLAMA_PLAIN_SAMPLING) as lm:
        yield lm


@pytest.mark.llama_server
def test_server_generates_seeded_texts_cut_at_stop(server_lm):
    assert server_lm.name  # asked from GET /models
    prompts = ["Here is my opinion about carrots:", "A short poem about rain:\n", "Here is my opinion about carrots:"]
    a = server_lm.generate(prompts, max_tokens=24, temperature=0.9, top_p=0.95, stop=["\n"], seed=5)
    assert len(a) == 3 and all(isinstance(t, str) and "\n" not in t for t in a)
    assert any(t.strip() for t in a)
    assert a[0] != a[2]  # equal prompts, different row seeds
    assert server_lm.generate(prompts, max_tokens=24, temperature=0.9, top_p=0.95, stop=["\n"], seed=5) == a
    b = server_lm.generate(prompts, max_tokens=24, temperature=0.9, top_p=0.95, stop=["\n"], seed=6)
    assert b != a
    greedy = server_lm.generate(["The capital of France is"], max_tokens=4, temperature=0.0)
    assert "Paris" in greedy[0]


@pytest.mark.llama_server
def test_server_chat_generation(llama_server):
    with OpenAILM(base_url=llama_server.url, api_key_env=llama_server.key_env, api="chat") as lm:
        (text,) = lm.generate(["What is the capital of France? Answer in one word."], max_tokens=8, temperature=0.0)
    assert "Paris" in text


@pytest.mark.llama_server
def test_server_refuses_a_wrong_key_without_retrying(llama_server, monkeypatch):
    monkeypatch.setenv("QDAIF_TEST_WRONG_KEY", "not-the-key")
    with OpenAILM(name="x", base_url=llama_server.url, api_key_env="QDAIF_TEST_WRONG_KEY", backoff=5) as lm:
        with pytest.raises(LMServerError, match="HTTP 401.*api_key_env") as info:
            lm.generate(["Hi"], max_tokens=2)
    assert info.value.status == 401 and info.value.server == llama_server.url
    assert lm.stats["retryable_errors"] == 0


@pytest.mark.llama_server
@pytest.mark.embedded
def test_server_scores_match_the_transformers_backend(server_lm, transformers_lm):
    shots = (
        "Is the following text positive or negative in sentiment?\nText: I love fresh peas.\nAnswer: positive\n\n"
        "Is the following text positive or negative in sentiment?\nText: Boiled kale is vile.\nAnswer: negative\n\n"
    )
    reqs = [
        ScoreRequest(shots, f"Is the following text positive or negative in sentiment?\nText: {t}\nAnswer:", (" positive", " negative"))
        for t in ("Roast carrots are wonderful.", "Soggy sprouts ruin every dinner.", "Lentil soup is fine, I guess.")
    ]
    got = np.array(server_lm.score(reqs))
    want = np.array(transformers_lm.score(reqs))
    assert server_lm.scoring in ("top_logprobs", "top_logprobs+echo")
    assert server_lm.stats["absent_labels"] == 0  # both labels are in the top 20 here
    # Q4_1 in llama.cpp against the same weights dequantised to bf16 in torch: measured 0.19.
    assert np.max(np.abs(got - want)) < 0.4, (got, want)
    margin_got, margin_want = got[:, 0] - got[:, 1], want[:, 0] - want[:, 1]
    assert np.sign(margin_got[:2]).tolist() == [1, -1] == np.sign(margin_want[:2]).tolist()


@pytest.fixture(scope="module")
def transformers_lm():
    return make_lm({"backend": "transformers", "name": "embedded"})


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


@pytest.mark.llama_server
@pytest.mark.embedded
def test_the_opinions_judge_ranks_alike_through_the_server_and_transformers(server_lm, transformers_lm):
    from sklearn.metrics import roc_auc_score

    from qdaif.cli import compose_config
    from qdaif.domain import domain_from_config
    from qdaif.feedback import LabelJudge

    rows = [json.loads(line) for line in (ROOT / "benchmarks/data/opinions_labelled.jsonl").read_text().splitlines() if line.strip()]
    texts = [r["text"] for r in rows]
    on_topic = np.array([bool(r["on_topic"]) for r in rows])
    positive = np.array([r.get("sentiment") == "positive" for r in rows])
    domain = domain_from_config(compose_config(["domain=opinions", "model=scripted_fake"]).domain)
    http = LabelJudge(domain=domain, lm=server_lm).evaluate(texts)
    local = LabelJudge(domain=domain, lm=transformers_lm).evaluate(texts)
    assert http.finite.all() and local.finite.all()
    # Agreement between the backends: the same texts in nearly the same order.
    # Measured: 0.98 and 0.99 (llama-cpp-python 0.3.36, Q4_1, against torch bf16).
    assert _spearman(http.measures[:, 0], local.measures[:, 0]) >= 0.9
    assert _spearman(http.quality, local.quality) >= 0.9
    # And the server's judge is as useful as the local one on the labels.
    for ev in (http, local):
        assert roc_auc_score(positive[on_topic], ev.measures[on_topic, 0]) >= 0.95  # measured 0.998 / 0.997
        assert roc_auc_score(on_topic, ev.quality) >= 0.95  # measured 0.996 / 0.995


def test_an_opinions_run_through_the_cli_against_the_server(llama_server, tmp_path):
    import json as _json

    from tests.helpers import run_cli

    run_cli("run", "domain=opinions", "model=openai", f"model.base_url={llama_server.url}",
            f"model.api_key_env={llama_server.key_env}", "iterations=2", "batch_size=4", "init_evaluations=4",
            "hydra.run.dir=out", "progress=false", cwd=tmp_path, check=True)
    out = tmp_path / "out"
    elites = [_json.loads(x) for x in (out / "elites.jsonl").read_text().splitlines()]
    metrics = [_json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert elites and metrics[-1]["evaluations"] == 8
    assert metrics[-1]["qd_score"] == pytest.approx(sum(e["quality"] for e in elites))
    config = (out / "config.yaml").read_text()
    assert "backend: openai" in config and "api_key" not in config.replace("api_key_env", "")
