"""The HTTP backend against a local misbehaving server: retries, backoff, clear errors."""

from __future__ import annotations

import collections
import http.server
import json
import logging
import os
import signal
import socket
import threading
import time

import pytest

from qdaif.errors import QDAIFError
from qdaif.lm import ScoreRequest
from qdaif.lm._openai import LMServerError, OpenAILM, _retry_after

TOP = {" positive": -0.2, " negative": -1.9, " neutral": -3.0}


class FaultServer:
    """A tiny OpenAI-like server on 127.0.0.1 whose next replies are scripted.

    ``script`` holds what the next requests get, one entry each: ``ok``, ``500``,
    ``400``, ``429:<seconds>`` (with Retry-After), ``drop`` (close without a reply),
    ``malformed`` (200 with broken JSON), ``sleep:<seconds>`` (then ok). Once it is
    empty, ``default`` is used. Every request is recorded, with the times it came in
    (``t``) and was answered (``end``).
    """

    def __init__(self) -> None:
        self.script: collections.deque[str] = collections.deque()
        self.default = "ok"
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.top = dict(TOP)
        self.echo_shift = 0.0  # added to echoed log-probabilities (0: consistent with TOP)
        self.no_completions = False  # answer /completions with 404, as a chat-only API does
        self.like_llama_server = False  # /completions log-probs in the chat shape, echo ignored
        self.slow = lambda body: 0.0  # seconds a POST with this body sleeps before its reply
        self.extra_reply: dict = {}  # fields added to every /completions reply (e.g. llama-server's timings)
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                outer._record(self, None)
                self._json(200, {"object": "list", "data": [{"id": "fault-model", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                action = outer._record(self, body)
                time.sleep(outer.slow(body))
                with outer.lock:
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    self._act(action, body)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1
                        self.entry["end"] = time.monotonic()

            def _act(self, action, body):
                if outer.no_completions and self.path.endswith("/completions") and "/chat/" not in self.path:
                    action = "404"
                if action.startswith("sleep:"):
                    time.sleep(float(action.split(":")[1]))
                    action = "ok"
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif action == "malformed":
                    self._raw(200, b'{"choices": [{"text": "cut off')
                elif action == "500":
                    self._json(500, {"error": {"message": "model crashed"}})
                elif action == "404":
                    self._json(404, {"error": {"message": "Not Found"}})
                elif action == "400":
                    self._json(400, {"error": {"message": "max_tokens is too large"}})
                elif action.startswith("429:"):
                    self._json(429, {"error": {"message": "slow down"}}, {"Retry-After": action.split(":")[1]})
                elif action == "nologprobs":
                    self._json(200, {"choices": [{"text": " hi", "index": 0, "logprobs": None}]})
                else:
                    self._json(200, outer.reply(self.path, body))

            def _json(self, status, obj, headers=None):
                self._raw(status, json.dumps(obj).encode(), headers)

            def _raw(self, status, data, headers=None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that hung up is expected here
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def _record(self, handler, body) -> str:
        with self.lock:
            handler.entry = {"path": handler.path, "headers": dict(handler.headers), "body": body, "t": time.monotonic()}
            self.requests.append(handler.entry)
            return self.script.popleft() if self.script else self.default

    def reply(self, path: str, body: dict) -> dict:
        if path.endswith("/chat/completions"):
            choice = {"index": 0, "message": {"role": "assistant", "content": "chat:" + body["messages"][0]["content"]}}
            if body.get("logprobs"):  # a chat model's first token: no leading space, capitalised
                top = sorted(self.top.items(), key=lambda kv: -kv[1])[: int(body.get("top_logprobs") or 1)]
                choice["logprobs"] = {"content": [{"token": "Positive", "logprob": -0.2, "top_logprobs": [
                    {"token": k.strip().capitalize(), "logprob": v} for k, v in top]}]}
            return {"choices": [choice]}
        if body.get("echo") and not self.like_llama_server:
            prompt = body["prompt"]
            # Echo the prompt as one token per character with log-prob -0.1 each, except
            # that a label from TOP at the end gets TOP's value (plus echo_shift).
            tokens, values = list(prompt), [None] + [-0.1] * (len(prompt) - 1)
            for label, v in self.top.items():
                if prompt.endswith(label) and len(prompt) > len(label):
                    n = len(prompt) - len(label)
                    tokens, values = tokens[:n] + [label], values[:n] + [v + self.echo_shift]
                    break
            offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
            return {"choices": [{"index": 0, "text": prompt + " x", "logprobs": {
                "tokens": tokens + [" x"], "text_offset": offsets + [len(prompt)], "token_logprobs": values + [-1.0],
                "top_logprobs": [None] * (len(tokens) + 1)}}]}
        text = f" re:{body['prompt'][-12:]} seed={body.get('seed')}"
        choice = {"index": 0, "text": text, "finish_reason": "length"}
        if body.get("logprobs") is not None:
            k = int(body["logprobs"])
            top = dict(sorted(self.top.items(), key=lambda kv: -kv[1])[: max(k, 1)])
            choice["logprobs"] = {"tokens": [" positive"], "token_logprobs": [-0.2], "text_offset": [0], "top_logprobs": [top]}
            if self.like_llama_server:
                choice["logprobs"] = {"content": [{"token": " positive", "logprob": -0.2, "top_logprobs": [
                    {"token": t, "logprob": v} for t, v in top.items()]}]}
        return {"choices": [choice], **self.extra_reply}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def kill(self) -> None:
        """Dies as a crashed server does: open connections are dropped, new ones refused."""
        self.default = "drop"
        self.script.clear()
        self.close()


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


@pytest.fixture
def make(server):
    made = []

    def _make(**kw):
        kw.setdefault("base_url", server.url)
        kw.setdefault("name", "fault-model")
        kw.setdefault("backoff", 0.01)
        kw.setdefault("max_retries", 3)
        kw.setdefault("timeout", 5)
        kw.setdefault("api_key_env", "QDAIF_TEST_NO_SUCH_KEY")
        lm = OpenAILM(**kw)
        made.append(lm)
        return lm

    yield _make
    for lm in made:
        lm.close()


def posts(server: FaultServer) -> list[dict]:
    return [r for r in server.requests if r["body"] is not None]


# ------------------------------------------------------------- retried
@pytest.mark.parametrize("fault", ["500", "drop", "malformed", "429:0"])
def test_a_transient_fault_is_retried(server, make, fault):
    server.script.extend([fault, fault])
    lm = make()
    (text,) = lm.generate(["Hello"], max_tokens=4, seed=1)
    assert text.startswith(" re:Hello")
    assert len(posts(server)) == 3
    assert lm.stats["retryable_errors"] == 2


def test_timeouts_are_retried(server, make):
    server.script.append("sleep:1.5")
    lm = make(timeout=0.3)
    t0 = time.perf_counter()
    assert lm.generate(["Hello"], max_tokens=4)[0].startswith(" re:")
    assert time.perf_counter() - t0 < 1.4  # the retry did not wait for the slow reply
    assert len(posts(server)) == 2


def test_retry_after_is_honoured(server, make):
    server.script.append("429:1")
    lm = make(backoff=0.01)
    t0 = time.perf_counter()
    lm.generate(["Hello"], max_tokens=4)
    waited = time.perf_counter() - t0
    assert 1.0 <= waited < 2.5


def test_backoff_grows_exponentially(server, make):
    server.script.extend(["500", "500", "500"])
    lm = make(backoff=0.1, backoff_max=10, max_retries=3)
    t0 = time.perf_counter()
    lm.generate(["Hello"], max_tokens=4)
    # 0.1 + 0.2 + 0.4 = 0.7 s, each with up to 25% jitter.
    assert 0.7 <= time.perf_counter() - t0 < 1.5


# --------------------------------------------------- reported clearly
@pytest.mark.parametrize(
    "fault, words",
    [
        ("500", "HTTP 500: model crashed"),
        ("drop", "connection failed"),
        ("malformed", "malformed response"),
        ("sleep:1", "timed out"),
        ("429:0", "HTTP 429: slow down"),
    ],
)
def test_a_persistent_fault_ends_in_an_error_naming_the_server(server, make, fault, words):
    server.default = fault
    lm = make(max_retries=2, timeout=0.3)
    with pytest.raises(LMServerError) as info:
        lm.generate(["Hello"], max_tokens=4)
    msg = str(info.value)
    assert isinstance(info.value, QDAIFError)
    assert server.url in msg and words in msg and "after 3 attempts" in msg
    assert info.value.server == server.url


def test_a_client_error_is_not_retried(server, make):
    server.default = "400"
    lm = make()
    with pytest.raises(LMServerError, match="HTTP 400: max_tokens is too large") as info:
        lm.generate(["Hello"], max_tokens=4)
    assert info.value.status == 400
    assert len(posts(server)) == 1


def test_a_server_that_is_not_there(make):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    lm = make(base_url=url, max_retries=1)
    with pytest.raises(LMServerError, match=f"LM server {url} .*connection failed.*Check that the server is running"):
        lm.generate(["Hello"], max_tokens=4)


def test_retry_after_dates_and_garbage():
    assert _retry_after("3") == 3.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    assert 50 < _retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))) <= 61


# ---------------------------------------------- concurrency, rotation
def test_requests_in_flight_are_bounded(server, make):
    server.default = "sleep:0.2"
    lm = make(max_concurrency=3)
    texts = lm.generate([f"p{i}" for i in range(9)], max_tokens=4, seed=3)
    assert [t.split()[0] for t in texts] == [f"re:p{i}" for i in range(9)]  # order kept
    assert server.max_in_flight == 3


def test_servers_are_used_in_rotation_and_a_retry_moves_on():
    a, b = FaultServer(), FaultServer()
    try:
        # One request at a time: both servers are always idle, so the tie-break alone
        # decides and it goes round in turn (with more in flight, least-loaded routing
        # splits by timing).
        lm = OpenAILM(name="m", base_urls=[a.url, b.url], backoff=0.01, max_retries=2, max_concurrency=1)
        lm.generate([f"p{i}" for i in range(6)], max_tokens=4)
        assert len(posts(a)) == 3 and len(posts(b)) == 3
        a.default = "500"
        texts = lm.generate([f"q{i}" for i in range(6)], max_tokens=4)
        assert all(t.startswith(" re:q") for t in texts)  # every request ended on b
        b.default = "drop"
        with pytest.raises(LMServerError, match="also tried"):
            lm.generate(["r"], max_tokens=4)
        lm.close()
    finally:
        a.close()
        b.close()


# ------------------------------------------------ keys, names, bodies
def test_the_api_key_is_sent_but_never_recorded(server, make, monkeypatch):
    monkeypatch.setenv("QDAIF_TEST_KEY", "sk-secret-123")
    lm = make(api_key_env="QDAIF_TEST_KEY")
    lm.generate(["Hello"], max_tokens=4)
    assert posts(server)[0]["headers"]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in json.dumps(lm.describe()) + repr(lm) + repr(vars(lm).get("api_key_env"))
    monkeypatch.delenv("QDAIF_TEST_KEY")
    make(api_key_env="QDAIF_TEST_KEY").generate(["Hello"], max_tokens=4)
    assert "Authorization" not in posts(server)[1]["headers"]


def test_the_model_name_is_asked_when_not_given(server, make):
    lm = make(name=None)
    assert lm.name == "fault-model"
    assert server.requests[0]["path"] == "/v1/models"


def test_generation_bodies_carry_row_seeds_and_settings(server, make):
    lm = make(extra_body={"top_k": 0})
    out = lm.generate(["a", "b"], max_tokens=9, temperature=0.5, top_p=0.9, stop=["\n", "1", "2", "3", "e"], seed=4)
    bodies = [r["body"] for r in posts(server)]
    assert {b["prompt"] for b in bodies} == {"a", "b"}
    assert all(b["max_tokens"] == 9 and b["temperature"] == 0.5 and b["top_p"] == 0.9 and b["top_k"] == 0 for b in bodies)
    assert all(b["stop"] == ["\n", "1", "2", "3"] for b in bodies)  # the API takes 4; "e" is cut locally
    assert len({b["seed"] for b in bodies}) == 2
    assert all("e" not in t for t in out)  # " re:a seed=..." cut before its first "e"
    chat = make(api="chat").generate(["hi there"], max_tokens=4)
    assert chat == ["chat:hi there"]
    assert posts(server)[-1]["path"] == "/v1/chat/completions"


# ------------------------------------------------------------- scoring
def test_scoring_uses_top_logprobs_and_echo_for_absent_labels(server, make):
    lm = make()
    r = [ScoreRequest("Shots\n", "Text: x\nAnswer:", (" positive", " negative", " neutral"))]
    server.top = {" positive": -0.2, " negative": -1.9}  # " neutral" is not in the top list
    (row,) = lm.score(r)
    assert lm.scoring == "top_logprobs+echo"
    assert row[:2] == [-0.2, -1.9]
    # " neutral" is not among TOP's keys now, so the fake echo gives -0.1 per character.
    assert row[2] == pytest.approx(-0.1 * len(" neutral"))


def test_a_misaligned_echo_is_detected_and_absent_labels_get_the_bound(server, make, caplog):
    server.echo_shift = -0.7
    server.top = {" positive": -0.2, " negative": -1.9}
    lm = make()
    with caplog.at_level(logging.WARNING, logger="qdaif.lm"):
        (row,) = lm.score([ScoreRequest("", "Text: x\nAnswer:", (" positive", " neutral"))])
        lm.score([ScoreRequest("", "Text: y\nAnswer:", (" positive", " neutral"))])
    warnings = [r.getMessage() for r in caplog.records if "upper bound" in r.getMessage()]
    assert len(warnings) == 1 and "1 of 2 labels" in warnings[0]  # said once, not per call
    assert lm.scoring == "top_logprobs"
    assert row[0] == -0.2
    assert row[1] <= -1.9  # below the k-th value
    assert len([r for r in posts(server) if r["body"].get("echo")]) == 1  # the probe only


def test_a_server_answering_like_llama_server_scores_with_top_logprobs(server, make):
    """llama-server: top log-probs in the chat shape on /completions; echo=true ignored (no prompt tokens back)."""
    server.like_llama_server = True
    lm = make(max_retries=3)
    reqs = [ScoreRequest("", "Is it good? Answer:", (" positive", " negative", " meh"))]
    values = lm.score(reqs)[0]
    assert lm.scoring == "top_logprobs"
    assert values[:2] == [TOP[" positive"], TOP[" negative"]] and values[2] <= min(TOP.values())
    echoes = [r for r in server.requests if r["body"] and r["body"].get("echo")]
    assert len(echoes) == 1  # the probe's: its answer has no prompt tokens, so echo is not used
    assert lm.stats["retryable_errors"] == 0


def test_forced_echo_mode_scores_every_label_by_echo(server, make):
    lm = make(score_mode="echo")
    (row,) = lm.score([ScoreRequest("", "Answer:", (" positive", " negative"))])
    assert row == pytest.approx([-0.2, -1.9])
    assert all(r["body"].get("echo") for r in posts(server))


def test_a_server_without_logprobs_says_it_cannot_judge(server, make):
    server.default = "nologprobs"
    lm = make()
    assert lm.generate(["Hello"], max_tokens=2) == [" hi"]
    with pytest.raises(LMServerError, match="offers neither next-token log-probabilities .* nor prompt"):
        lm.score([ScoreRequest("", "Answer:", (" yes", " no"))])


def test_a_score_fault_mid_batch_is_retried(server, make):
    lm = make(score_mode="top_logprobs")
    server.script.extend(["ok", "500", "drop"])
    rows = lm.score([ScoreRequest("", f"Text: {i}\nAnswer:", (" positive", " negative")) for i in range(4)])
    assert rows == [[-0.2, -1.9]] * 4


@pytest.fixture
def sigint_raises():
    """A shell starts background jobs with SIGINT ignored (CI may run us so): restore
    Python's handler for the test, so that SIGINT becomes a KeyboardInterrupt."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_abandons_requests_in_flight_at_once(server, make, sigint_raises):
    server.default = "sleep:3"
    lm = make(max_concurrency=4, timeout=30)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        timer.start()
        lm.generate([f"p{i}" for i in range(8)], max_tokens=4)
    assert len(posts(server)) == 4  # the 4 queued prompts were never sent
    server.default = "ok"
    assert lm.generate(["after"], max_tokens=4)[0].startswith(" re:after")  # the backend still works
    # The workers were freed at once: not after the 3 s replies (or 30 s timeouts).
    assert time.perf_counter() - t0 < 2.0


def test_a_run_whose_server_fails_stops_cleanly_and_resumes(server, tmp_path):
    """Through the CLI: the server dies mid-run; the error names it; the run resumes later."""
    import json as _json

    from tests.helpers import run_cli

    args = ["model=openai", f"model.base_url={server.url}", "model.name=fault-model", "model.backoff=0.01",
            "model.max_retries=2", "model.api_key_env=QDAIF_TEST_NO_SUCH_KEY", "batch_size=3", "progress=false"]
    run_cli("run", *args, "iterations=2", "hydra.run.dir=out", cwd=tmp_path, check=True)
    server.default = "500"
    proc = run_cli("run", "resume=out", "iterations=4", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()[-1]
    assert server.url.split("//")[1].split("/")[0] in err and "resume with: python -m qdaif run resume=out" in err
    metrics = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    assert [_json.loads(m)["iteration"] for m in metrics] == [1, 2]  # nothing half-written, nothing lost
    server.default = "ok"
    run_cli("run", "resume=out", "iterations=4", cwd=tmp_path, check=True)
    metrics = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    assert [_json.loads(m)["iteration"] for m in metrics] == [1, 2, 3, 4]


# --------------------------------------------------------- chat scoring
def test_chat_api_scores_through_the_chat_endpoint(server, make):
    lm = make(api="chat")
    assert lm.scoring == "chat"
    out = lm.score([ScoreRequest("Review: good. Sentiment:", "", (" positive", " negative", " maybe"))])
    assert out[0][:2] == pytest.approx([TOP[" positive"], TOP[" negative"]])
    assert out[0][2] <= TOP[" neutral"]  # absent: the bound, below the k-th value
    post = posts(server)[-1]
    assert post["path"].endswith("/chat/completions") and post["body"]["logprobs"] is True
    assert post["body"]["max_tokens"] == 1 and post["body"]["top_logprobs"] == 20
    assert lm.stats["absent_labels"] == 1


def test_a_server_without_completions_is_scored_through_chat(server, make):
    server.no_completions = True
    lm = make()
    out = lm.score([ScoreRequest("Sentiment:", "", (" positive", " negative"))])
    assert lm.scoring == "chat"
    assert out[0] == pytest.approx([TOP[" positive"], TOP[" negative"]])


def test_a_chat_server_without_logprobs_says_it_cannot_judge(server, make):
    server.no_completions = True
    server.top = {}
    lm = make(max_retries=0)
    server.default = "400"
    with pytest.raises(LMServerError, match="cannot judge"):
        lm.score([ScoreRequest("Sentiment:", "", (" positive",))])


# ------------------------------------------------ chained prefixes
def _chain_requests(n: int) -> list[ScoreRequest]:
    """``n`` texts, each with a first query and a second that continues it (as the opinions judges)."""
    first = [ScoreRequest("Block. ", f"Text {i}: words\nTopic:", (" positive", " negative")) for i in range(n)]
    return first + [ScoreRequest(r.prefix, r.suffix + " food\nSentiment:", r.continuations) for r in first]


def test_a_request_that_extends_another_goes_after_it_to_the_same_server():
    a, b = FaultServer(), FaultServer()
    try:
        for s in (a, b):
            s.slow = lambda body: 0.1 if body.get("prompt", "").endswith("Topic:") else 0.0
        reqs = _chain_requests(6)
        lm = OpenAILM(name="m", base_urls=[a.url, b.url], max_concurrency=12, backoff=0.01, score_mode="top_logprobs")
        out = lm.score(reqs)
        assert len(out) == 12 and all(row == pytest.approx([TOP[" positive"], TOP[" negative"]]) for row in out)
        assert lm.stats["chained_requests"] == 6
        served = {r["body"]["prompt"]: (name, r) for name, s in (("a", a), ("b", b)) for r in posts(s)}
        for first, second in zip(reqs[:6], reqs[6:]):
            (s1, r1), (s2, r2) = served[first.prompt], served[second.prompt]
            assert s2 == s1, "the continuation went to another server"
            assert r2["t"] >= r1["end"], "the continuation was sent before its prefix was answered"
        assert {s for s, _ in served.values()} == {"a", "b"}  # the chains still spread over both
        lm.close()
    finally:
        a.close()
        b.close()


def test_without_chaining_every_request_goes_out_at_once(server, make):
    server.default = "sleep:0.2"
    lm = make(max_concurrency=12, score_mode="top_logprobs", chain_prefixes=False)
    out = lm.score(_chain_requests(6))
    assert len(out) == 12 and server.max_in_flight == 12 and lm.stats["chained_requests"] == 0


def test_a_failed_prefix_server_sends_the_continuation_elsewhere():
    a, b = FaultServer(), FaultServer()
    try:
        lm = OpenAILM(name="m", base_urls=[a.url, b.url], max_concurrency=1, backoff=0.01, score_mode="top_logprobs")
        lm.score(_chain_requests(1)[:1])  # the first request goes to one server; kill that one for the next
        first = a if posts(a) else b
        other = b if first is a else a
        lm.score([ScoreRequest("x", "y", (" positive",))])  # the rotation now points at the other...
        first.default = "500"  # ...and the server a chain starts on fails from here on
        out = lm.score(_chain_requests(2))
        assert all(row == pytest.approx([TOP[" positive"], TOP[" negative"]]) for row in out)
        assert len([p for p in posts(other) if p["body"]["prompt"].endswith("Sentiment:")]) == 2
        lm.close()
    finally:
        a.close()
        b.close()


def test_the_prompt_tokens_a_server_reports_are_counted(server, make):
    server.extra_reply = {"timings": {"prompt_n": 7, "cache_n": 30}}
    lm = make(score_mode="top_logprobs")
    lm.score(_chain_requests(2))
    assert lm.stats["server_prompt_tokens"] == 4 * 7 and lm.stats["server_cached_tokens"] == 4 * 30
    server.extra_reply = {"usage": {"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 4}}}
    lm.score(_chain_requests(1))
    assert lm.stats["server_prompt_tokens"] == 28 + 2 * 6 and lm.stats["server_cached_tokens"] == 120 + 2 * 4
