"""OpenAI-compatible HTTP backend: any server with ``/v1/completions`` (llama.cpp, vLLM, TGI...).

Only the standard library is used: ``http.client`` for keep-alive connections and a
thread pool that bounds the number of requests in flight.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import email.utils
import hashlib
import http.client
import json
import logging
import math
import os
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from qdaif.errors import ConfigError, QDAIFError
from qdaif.lm._base import LM, ScoreRequest, register_backend
from qdaif.lm._routing import Router
from qdaif.lm._text import cut_at_stop

__all__ = [
    "LMServerError",
    "OpenAILM",
    "plain",
    "row_seed",
    "completion_body",
    "chat_body",
    "parse_generation",
    "parse_top_logprobs",
    "span_logprob",
    "absent_label_bound",
    "parse_chat_top_logprobs",
    "prefix_parents",
    "chat_label_logprobs",
]

log = logging.getLogger("qdaif.lm")

#: Scoring modes a server can be used in; ``auto`` picks one by probing the server.
SCORE_MODES = ("auto", "echo", "top_logprobs", "chat")
#: Prompt of the scoring probe; its greedy continuation is not certain, so a server
#: that misaligns echoed log-probabilities by one token is caught (see ``_probe``).
_PROBE_PROMPT = "My favourite fruit is the"
#: OpenAI's API accepts at most 4 stop strings; the rest are applied locally.
_MAX_SERVER_STOPS = 4


class LMServerError(QDAIFError):
    """An LM server refused a request, or kept failing after every retry.

    Attributes:
        server: Base URL of the server that gave the last error.
        status: HTTP status of the last error, ``None`` for a connection error or a
            malformed response.
    """

    def __init__(self, message: str, *, server: str, status: int | None = None) -> None:
        super().__init__(message)
        self.server = server
        self.status = status


class _Retryable(Exception):
    """One attempt failed in a way that another attempt may not (network, 429, 5xx).

    ``down`` says the failure points at the server rather than the request
    (connection error, timeout, 5xx): the router then leaves the server alone a while.
    """

    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None,
                 down: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after
        self.down = down


@dataclasses.dataclass(frozen=True)
class _Server:
    url: str  # as shown in messages and describe(): scheme://host:port/path
    https: bool
    host: str
    port: int
    path: str  # prefix of every endpoint, e.g. "/v1"


def _parse_server(url: str) -> _Server:
    parts = urllib.parse.urlsplit(str(url).strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"model.base_url {url!r} is not an http(s) URL; use e.g. http://127.0.0.1:8000/v1")
    if parts.username or parts.password:
        raise ConfigError(
            f"model.base_url {parts.hostname} carries credentials; remove them and put the API key "
            "in the environment variable named by model.api_key_env"
        )
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    path = parts.path.rstrip("/")
    return _Server(url=f"{parts.scheme}://{parts.hostname}:{port}{path}", https=https, host=parts.hostname, port=port, path=path)


# ------------------------------------------------------------ pure helpers
def plain(value: Any) -> Any:
    """Copies config containers (OmegaConf's included) into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


def row_seed(seed: int, row: int) -> int:
    """Returns the sampling seed of row ``row`` of a batch sampled with ``seed``.

    Every row gets its own seed, so equal prompts in one batch still get different
    samples, and a row's text does not depend on how the batch is split into requests.
    The value fits in 31 bits, which every server accepts.
    """
    digest = hashlib.sha256(f"qdaif-row-seed:{int(seed)}:{int(row)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def completion_body(
    *,
    model: str,
    prompt: str,
    max_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop: Sequence[str] = (),
    seed: int | None = None,
    logprobs: int | None = None,
    echo: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Builds the JSON body of a ``POST /completions`` request.

    Args:
        model: Model name the server serves.
        prompt: Raw prompt text.
        max_tokens: New tokens to generate (at least 1: llama.cpp reads 0 as "no limit").
        temperature: Sampling temperature; 0 is greedy.
        top_p: Nucleus mass.
        stop: Stop strings; only the first four are sent (the API's limit), the caller
            cuts the text at the others.
        seed: Sampling seed, or ``None`` for the server's choice.
        logprobs: Number of top log-probabilities per generated token, or ``None``.
        echo: Return the prompt's tokens (and their log-probabilities) too.
        extra: Further fields (server-specific samplers such as ``top_k``, ``min_p``).

    Returns:
        The request body.
    """
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max(1, int(max_tokens)),
        "temperature": float(temperature),
        "top_p": float(top_p),
    }
    stops = [s for s in stop if s][:_MAX_SERVER_STOPS]
    if stops:
        body["stop"] = stops
    if seed is not None:
        body["seed"] = int(seed)
    if logprobs is not None:
        body["logprobs"] = int(logprobs)
    if echo:
        body["echo"] = True
    if extra:
        body.update(extra)
    return body


def chat_body(
    *,
    model: str,
    prompt: str,
    max_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop: Sequence[str] = (),
    seed: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Builds the JSON body of a ``POST /chat/completions`` request: the prompt as one user message.

    Args: as :func:`completion_body`.

    Returns:
        The request body.
    """
    body = completion_body(model=model, prompt="", max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                           stop=stop, seed=seed, extra=extra)
    del body["prompt"]
    body["messages"] = [{"role": "user", "content": prompt}]
    return body


def _first_choice(response: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = response.get("choices") if isinstance(response, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise ValueError("the response has no 'choices'")
    return choices[0]


def parse_generation(response: Mapping[str, Any], *, chat: bool = False) -> str:
    """Returns the generated text of a completions or chat-completions response.

    Raises:
        ValueError: The response does not have the API's shape.
    """
    choice = _first_choice(response)
    if chat:
        message = choice.get("message")
        if not isinstance(message, Mapping):
            raise ValueError("the chat response has no 'message'")
        text = message.get("content")
        return "" if text is None else str(text)
    text = choice.get("text")
    if not isinstance(text, str):
        raise ValueError("the completion response has no 'text'")
    return text


def parse_top_logprobs(response: Mapping[str, Any]) -> dict[str, float]:
    """Returns the top log-probabilities of the first generated token, text -> log-prob.

    Two shapes are read: OpenAI's legacy completions shape (``logprobs.top_logprobs`` is
    a list of ``{text: log-prob}``, one per token), and the chat shape
    (``logprobs.content``, see :func:`parse_chat_top_logprobs`) that llama.cpp's
    ``llama-server`` also uses on ``/completions``.

    Raises:
        ValueError: The response holds no top log-probabilities.
    """
    lp = _first_choice(response).get("logprobs")
    if isinstance(lp, Mapping) and "content" in lp and "top_logprobs" not in lp:
        return parse_chat_top_logprobs(response)
    top = lp.get("top_logprobs") if isinstance(lp, Mapping) else None
    if not isinstance(top, list) or not top or not isinstance(top[0], Mapping) or not top[0]:
        raise ValueError("the response has no top log-probabilities")
    return {str(k): float(v) for k, v in top[0].items()}


def span_logprob(response: Mapping[str, Any], start: int, end: int) -> float:
    """Sums the echoed log-probabilities of the tokens covering characters ``[start, end)``.

    A token that straddles ``start`` (the tokenizer merged the end of the prompt with
    the start of the continuation) is counted: its log-probability is the closest
    available stand-in for the continuation's first piece.

    Args:
        response: A completions response made with ``echo=true`` and ``logprobs``.
        start: Offset of the continuation in the echoed text (the prompt's length).
        end: Offset of the continuation's end.

    Returns:
        The summed log-probability.

    Raises:
        ValueError: The response has no echoed tokens, or none covers the span, or
            the span's first token has no log-probability (empty prompt).
    """
    lp = _first_choice(response).get("logprobs")
    if not isinstance(lp, Mapping):
        raise ValueError("the response has no echoed log-probabilities")
    tokens, offsets, values = lp.get("tokens"), lp.get("text_offset"), lp.get("token_logprobs")
    if not (isinstance(tokens, list) and isinstance(offsets, list) and isinstance(values, list)) or not tokens:
        raise ValueError("the response has no echoed tokens")
    if not len(tokens) == len(offsets) == len(values):
        raise ValueError("the echoed tokens, offsets and log-probabilities differ in length")
    total, covered = 0.0, False
    for t, (tok, off) in enumerate(zip(tokens, offsets)):
        tok_end = offsets[t + 1] if t + 1 < len(offsets) else off + len(str(tok))
        if tok_end <= start or off >= end or tok_end <= off:
            continue
        if values[t] is None:
            raise ValueError("the continuation's first token has no log-probability (is the prompt empty?)")
        total += float(values[t])
        covered = True
    if not covered:
        raise ValueError("no echoed token covers the continuation")
    return total


def parse_chat_top_logprobs(response: Mapping[str, Any]) -> dict[str, float]:
    """Top log-probabilities of the first token of a chat reply, token text -> log-prob.

    The shape is OpenAI's: ``choices[0].logprobs.content[0].top_logprobs`` is a list of
    ``{"token", "logprob"}``. Tokens with the same text are merged (log-sum-exp).

    Raises:
        ValueError: The response holds no top log-probabilities.
    """
    lp = _first_choice(response).get("logprobs")
    content = lp.get("content") if isinstance(lp, Mapping) else None
    top = content[0].get("top_logprobs") if isinstance(content, list) and content and isinstance(content[0], Mapping) else None
    if not isinstance(top, list) or not top:
        raise ValueError("the chat response has no top log-probabilities")
    out: dict[str, float] = {}
    for t in top:
        if not isinstance(t, Mapping) or "token" not in t or "logprob" not in t:
            raise ValueError("a chat top log-probability lacks 'token' or 'logprob'")
        tok, v = str(t["token"]), float(t["logprob"])
        out[tok] = float(np.logaddexp(out[tok], v)) if tok in out else v
    return out


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def chat_label_logprobs(top: Mapping[str, float], labels: Sequence[str]) -> tuple[list[float], int]:
    """Scores labels from the top tokens of a chat reply's first position.

    A chat model starts its reply with the label's first token, without the leading
    space a completion prompt's label has, and often capitalised. So a top token counts
    for a label when its text, stripped and lower-cased, is a non-empty start of the
    label's (" positive" is matched by "positive", "Positive" and "pos"). A label's score
    is the log-sum-exp of its tokens; a label with none gets :func:`absent_label_bound`.
    A token that starts several labels (their first tokens coincide) counts for none.

    Returns:
        The labels' log-probabilities, and the number of labels that got the bound.
    """
    norms = [_norm(label) for label in labels]
    sums: list[list[float]] = [[] for _ in labels]
    for tok, v in top.items():
        t = _norm(tok)
        hits = [j for j, n in enumerate(norms) if t and n.startswith(t)]
        if len(hits) == 1:
            sums[hits[0]].append(v)
    bound = absent_label_bound(top)
    out = [float(np.logaddexp.reduce(x)) if x else bound for x in sums]
    return out, sum(not x for x in sums)


def absent_label_bound(top: Mapping[str, float]) -> float:
    """Upper bound of the log-probability of a token missing from a top-k list.

    It is below the k-th log-probability and below the log of the mass the top k leave
    over; every missing label gets this same value.
    """
    kth = min(top.values())
    rest = 1.0 - sum(math.exp(v) for v in top.values())
    return min(kth, math.log(rest)) if rest > 0 else kth


# ----------------------------------------------------------------- backend
@register_backend("openai")
class OpenAILM(LM):
    """A model behind one or more OpenAI-compatible servers.

    Generation sends one request per prompt to ``/completions`` (raw text; default) or
    ``/chat/completions`` (``api="chat"``: the prompt becomes one user message and the
    server applies its chat template). Scoring uses ``/completions``, or
    ``/chat/completions`` for chat-only servers, chosen with ``score_mode``:

    * ``top_logprobs``: one request per :class:`ScoreRequest` with ``max_tokens=1`` and
      ``logprobs=top_logprobs``; a label's score is the log-probability of the first
      generated token whose text equals the label. A label missing from the top k
      gets :func:`absent_label_bound` (for single-token labels it is an upper bound;
      multi-token labels are never found, so they always get it).
    * ``echo``: one request per continuation with ``echo=true``: the server returns
      the log-probability of every prompt token, and the continuation's tokens are
      summed. Exact for multi-token labels.
    * ``chat``: one request per :class:`ScoreRequest` to ``/chat/completions`` with the
      prompt as the user message, ``max_tokens=1``, ``logprobs=true`` and
      ``top_logprobs``; labels are read from the reply's first token by
      :func:`chat_label_logprobs` (single-token labels, or labels distinct in their first
      token; the others get the absent-label bound).
    * ``auto`` (default): ``chat`` when ``api="chat"``; else probes the server on the
      first ``score`` call (``chat`` if it has no ``/completions`` endpoint). If it returns
      top log-probabilities, those are used, with echo for labels missing from the top
      k when the server's echo is correct (checked against the top log-probabilities:
      llama-cpp-python 0.3.x shifts echoed log-probabilities by one token and fails
      the check). A server that offers neither raises :class:`LMServerError`.

    Requests run in a thread pool, at most ``max_concurrency`` at a time, each on a
    keep-alive connection. With ``chain_prefixes`` (default), a score request whose
    prompt extends another request's prompt in the same call (the opinions judges' second
    query continues the first) is sent after that one returns, to the same server, so a
    server with a prompt cache (llama-server, vLLM with prefix caching) reads the shared
    part once; see :func:`prefix_parents`. With several ``base_urls``, each request goes to the server
    with the fewest requests in flight (at most ``max_in_flight_per_server`` each); a
    server that fails with a connection error, a timeout or a 5xx is left alone for
    ``down_for`` seconds (doubling while it keeps failing) and its requests fail over to
    the others at once; it is health-checked (``GET /health`` at the server's root)
    before it gets requests again (see :mod:`qdaif.lm._routing`). Per-server counts are
    in :meth:`server_counters`. Connection errors, timeouts, malformed responses, HTTP
    408, 429 and 5xx are retried up to ``max_retries`` times, on another server when one
    is up, else with exponential backoff (or the server's ``Retry-After``); other HTTP
    errors fail at once.

    Args:
        name: Model name sent to the server; ``None`` asks the first server (``GET
            /models``) and uses the first model it lists.
        base_url: The server's API root, e.g. ``http://127.0.0.1:8000/v1``.
        base_urls: Several API roots serving the same model (instead of ``base_url``).
        api: ``"completions"`` or ``"chat"``: the endpoint of generation, and of
            scoring when ``score_mode="auto"``.
        score_mode: ``"auto"``, ``"top_logprobs"``, ``"echo"`` or ``"chat"``.
        top_logprobs: k of the top-k log-probabilities asked for when scoring
            (``auto`` falls back to 5 if the server refuses k).
        max_concurrency: Requests in flight at once, over all servers.
        max_in_flight_per_server: Requests in flight at once on one server; ``None``
            = only ``max_concurrency`` bounds them.
        down_for: Seconds a failing server is left alone before a health check.
        timeout: Seconds a connection may wait for the server (connect or each read).
        max_retries: Further attempts after a failed one.
        backoff: First retry delay in seconds; it doubles at each retry (with up to 25%
            random jitter), up to ``backoff_max``.
        backoff_max: Longest delay between attempts, unless the server's
            ``Retry-After`` asks for more (capped at ``retry_after_max``).
        retry_after_max: Longest ``Retry-After`` honoured, in seconds.
        api_key_env: Environment variable holding the API key, sent as a bearer token;
            unset or empty means no key. The key itself is never recorded.
        extra_body: Fields added to every generation request (server-specific
            samplers, e.g. ``{top_k: 0, min_p: 0, repeat_penalty: 1}`` for llama.cpp).
        chain_prefixes: Send a score request after the request whose prompt it
            extends, to the same server (see above); ``False`` sends all at once.

    Raises:
        ConfigError: A setting is invalid.
        LMServerError: ``name`` is ``None`` and the server cannot be asked.
    """

    concurrent = True

    def __init__(
        self,
        *,
        name: str | None = None,
        base_url: str | None = None,
        base_urls: Sequence[str] | None = None,
        api: str = "completions",
        score_mode: str = "auto",
        top_logprobs: int = 20,
        max_concurrency: int = 8,
        max_in_flight_per_server: int | None = None,
        down_for: float = 5.0,
        timeout: float = 300.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 120.0,
        api_key_env: str = "OPENAI_API_KEY",
        extra_body: Mapping[str, Any] | None = None,
        chain_prefixes: bool = True,
    ) -> None:
        urls = [str(u) for u in plain(base_urls or [])] + ([str(base_url)] if base_url else [])
        if not urls:
            raise ConfigError("model.base_url is missing; set model.base_url=http://HOST:PORT/v1 (or model.base_urls=[...])")
        if api not in ("completions", "chat"):
            raise ConfigError(f"model.api must be 'completions' or 'chat', got {api!r}")
        if score_mode not in SCORE_MODES:
            raise ConfigError(f"model.score_mode must be one of {', '.join(SCORE_MODES)}, got {score_mode!r}")
        for key, value, low in (("max_concurrency", max_concurrency, 1), ("top_logprobs", top_logprobs, 1), ("max_retries", max_retries, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"model.{key} must be an integer >= {low}, got {value!r}")
        if not timeout or timeout <= 0:
            raise ConfigError(f"model.timeout must be > 0 seconds, got {timeout!r}")
        if max_in_flight_per_server is not None and (isinstance(max_in_flight_per_server, bool) or not isinstance(max_in_flight_per_server, int) or max_in_flight_per_server < 1):
            raise ConfigError(f"model.max_in_flight_per_server must be an integer >= 1 or null, got {max_in_flight_per_server!r}")
        if isinstance(down_for, bool) or not isinstance(down_for, (int, float)) or not down_for > 0:
            raise ConfigError(f"model.down_for must be > 0 seconds, got {down_for!r}")
        self._servers = [_parse_server(u) for u in urls]
        self.api = api
        self.score_mode = score_mode
        self.top_logprobs = top_logprobs
        self.max_concurrency = max_concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.backoff_max = float(backoff_max)
        self.retry_after_max = float(retry_after_max)
        self.api_key_env = api_key_env
        self.extra_body = dict(plain(extra_body or {}))
        self.chain_prefixes = bool(chain_prefixes)
        self.__key = os.environ.get(api_key_env, "") if api_key_env else ""
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._conn_lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._cancel = threading.Event()  # set while in-flight requests are being abandoned
        self._router = Router(servers=[s.url for s in self._servers], max_in_flight=max_in_flight_per_server,
                              down_for=float(down_for))
        self._jitter = random.Random()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="qdaif-http")
        self._scoring: str | None = None if score_mode == "auto" else score_mode
        if score_mode == "auto" and api == "chat":
            self._scoring = "chat"
        self._k = top_logprobs
        self._warned_absent = False
        #: Counters of what was sent and what failed, for benchmarks and logs.
        self.stats: collections.Counter[str] = collections.Counter()
        self.name = name if name is not None else self._served_model()

    def _count(self, key: str, n: int) -> None:
        with self._stats_lock:
            self.stats[key] += n

    # ----------------------------------------------------------- reporting
    @property
    def servers(self) -> list[str]:
        """Base URLs in rotation (without credentials)."""
        return [s.url for s in self._servers]

    @property
    def scoring(self) -> str | None:
        """How scores are computed: ``echo``, ``top_logprobs`` or ``top_logprobs+echo``;
        ``None`` until the first ``score`` call of an ``auto`` backend."""
        return self._scoring

    def describe(self) -> dict[str, Any]:
        out = {
            "backend": self.backend,
            "name": self.name,
            "api": self.api,
            "score_mode": self.score_mode,
            "top_logprobs": self.top_logprobs,
            "servers": self.servers,
            "chain_prefixes": self.chain_prefixes,
        }
        if self.extra_body:
            out["extra_body"] = dict(self.extra_body)
        return out

    def __repr__(self) -> str:
        return f"OpenAILM(name={self.name!r}, servers={self.servers!r}, api={self.api!r})"

    def close(self) -> None:
        """Abandons requests in flight, stops the worker threads and closes the connections."""
        self._cancel.set()
        self._interrupt_connections()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._conn_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def _interrupt_connections(self) -> None:
        """Shuts the sockets of all connections, waking the threads blocked on them."""
        with self._conn_lock:
            for conn in self._connections:
                sock = conn.sock
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def __enter__(self) -> "OpenAILM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ transport
    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "qdaif"}
        if self.__key:
            h["Authorization"] = f"Bearer {self.__key}"
        return h

    def _connection(self, k: int) -> tuple[http.client.HTTPConnection, bool]:
        """Returns this thread's connection to server ``k`` and whether it was used before."""
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        if k in conns:
            return conns[k], True
        s = self._servers[k]
        cls = http.client.HTTPSConnection if s.https else http.client.HTTPConnection
        conn = cls(s.host, s.port, timeout=self.timeout)
        conns[k] = conn
        with self._conn_lock:
            self._connections.append(conn)
        return conn, False

    def _drop_connection(self, k: int) -> None:
        conn = self._local.conns.pop(k, None)
        if conn is not None:
            conn.close()
            with self._conn_lock:
                if conn in self._connections:
                    self._connections.remove(conn)

    def _attempt(self, k: int, method: str, path: str, body: Any, parse: Callable[[Any], Any]) -> Any:
        """Sends one request to server ``k`` and parses its JSON answer.

        Raises:
            _Retryable: A failure worth another attempt.
            LMServerError: The server refused the request (4xx other than 408 and 429).
        """
        s = self._servers[k]
        data = None if body is None else json.dumps(body).encode()
        for fresh_try in (False, True):
            conn, reused = self._connection(k)
            try:
                conn.request(method, s.path + path, body=data, headers=self._headers())
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (OSError, http.client.HTTPException) as e:
                self._drop_connection(k)
                # A keep-alive connection the server closed while idle fails on first
                # use; one immediate retry on a new connection is not an attempt.
                if reused and not fresh_try and isinstance(e, (ConnectionError, http.client.RemoteDisconnected)):
                    continue
                kind = "timed out" if isinstance(e, TimeoutError) else "connection failed"
                raise _Retryable(f"{kind} ({type(e).__name__}: {e or 'no response'})", down=True) from None
        if resp.will_close:
            self._drop_connection(k)
        self._count("requests", 1)
        status = resp.status
        if status != 200:
            message = _error_message(raw)
            if status in (408, 429) or status >= 500:
                raise _Retryable(f"HTTP {status}: {message}", status=status, down=status >= 500,
                                 retry_after=_retry_after(resp.getheader("Retry-After")))
            hint = " (check model.api_key_env)" if status in (401, 403) else ""
            raise LMServerError(f"LM server {s.url} refused {method} {path}: HTTP {status}: {message}{hint}", server=s.url, status=status)
        try:
            answer = json.loads(raw)
            result = parse(answer)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise _Retryable(f"malformed response ({e}): {raw[:200]!r}") from None
        self._count_prompt_tokens(answer)
        return result

    def _count_prompt_tokens(self, answer: Any) -> None:
        """Adds the prompt tokens the server processed and took from its cache, where it says.

        llama-server reports ``timings.prompt_n`` (processed) and ``timings.cache_n``
        (reused); OpenAI-style servers ``usage.prompt_tokens`` and
        ``usage.prompt_tokens_details.cached_tokens``. Others report nothing.
        """
        if not isinstance(answer, Mapping):
            return
        timings, usage = answer.get("timings"), answer.get("usage")
        if isinstance(timings, Mapping) and isinstance(timings.get("prompt_n"), int):
            self._count("server_prompt_tokens", timings["prompt_n"])
            self._count("server_cached_tokens", int(timings.get("cache_n") or 0))
        elif isinstance(usage, Mapping) and isinstance(usage.get("prompt_tokens"), int):
            details = usage.get("prompt_tokens_details")
            cached = int(details.get("cached_tokens") or 0) if isinstance(details, Mapping) else 0
            self._count("server_prompt_tokens", usage["prompt_tokens"] - cached)
            self._count("server_cached_tokens", cached)

    def _call(self, method: str, path: str, body: Any, parse: Callable[[Any], Any], prefer: int | None = None) -> Any:
        """Sends a request with retries, on the least-loaded server that is up (or ``prefer``).

        The server that answered is left in ``self._local.server`` for the calling thread.

        Raises:
            LMServerError: Every attempt failed, or the server refused the request.
        """
        tried: list[str] = []
        failed: int | None = None
        error: _Retryable | None = None
        for attempt in range(self.max_retries + 1):
            k = self._acquire(failed, prefer)
            url = self._servers[k].url
            try:
                result = self._attempt(k, method, path, body, parse)
            except _Retryable as e:
                self._router.release(k, ok=False, down=e.down)
                error, failed = e, k
                tried.append(url)
                self._count("retryable_errors", 1)
                if attempt == self.max_retries:
                    break
                self._wait_before_retry(k, attempt, e, method, path)
                continue
            except BaseException:
                self._router.release(k, ok=True)  # the server answered (a refusal) or we gave up
                raise
            self._router.release(k, ok=True)
            self._local.server = k
            return result
        last = tried[-1]
        others = sorted(set(tried) - {last})
        also = f" (also tried {', '.join(others)})" if others else ""
        raise LMServerError(
            f"LM server {last} failed on {method} {path} after {len(tried)} attempts{also}: {error}. "
            "Check that the server is running and reachable at model.base_url, or raise model.max_retries / model.timeout.",
            server=last, status=error.status,
        )

    def _acquire(self, failed: int | None, prefer: int | None = None) -> int:
        """A server slot for the next attempt; a down server due for a probe is health-checked first.

        Raises:
            LMServerError: The run is abandoning its requests (Ctrl-C or an error elsewhere).
        """
        while True:
            if self._cancel.is_set():
                raise LMServerError("request abandoned", server=self._servers[0].url)
            k, probe = self._router.acquire(failed=failed, prefer=prefer)
            if not probe:
                return k
            healthy = self._healthy(k)
            self._router.probed(k, healthy=healthy)
            if healthy:
                log.info("qdaif: %s answers its health check; sending it requests again", self._servers[k].url)
                return k

    def _wait_before_retry(self, k: int, attempt: int, e: _Retryable, method: str, path: str) -> None:
        """Fails over at once when another server is up; else backs off (or honours Retry-After).

        Raises:
            LMServerError: The run is abandoning its requests.
        """
        url = self._servers[k].url
        if self._router.any_other_up(k) and e.retry_after is None:
            log.info("qdaif: %s %s on %s failed (%s); failing over to another server", method, path, url, e)
            return
        delay = min(self.backoff_max, self.backoff * 2**attempt) * (1 + 0.25 * self._jitter.random())
        if e.retry_after is not None:
            delay = max(delay, min(e.retry_after, self.retry_after_max))
        log.info("qdaif: %s %s on %s failed (%s); retry %d in %.2f s", method, path, url, e, attempt + 1, delay)
        if self._cancel.wait(delay):
            raise LMServerError(f"request to {url} abandoned", server=url)

    def _healthy(self, k: int) -> bool:
        """``GET /health`` at server ``k``'s root: 200, or 404 (no such endpoint), counts as healthy."""
        s = self._servers[k]
        cls = http.client.HTTPSConnection if s.https else http.client.HTTPConnection
        conn = cls(s.host, s.port, timeout=min(self.timeout, 5.0))
        try:
            conn.request("GET", "/health", headers=self._headers())
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
        return status in (200, 404)

    def server_counters(self) -> dict[str, dict[str, int | bool]]:
        """Server URL -> requests, errors, failovers, downs, health_checks (totals so far) and ``up``."""
        return self._router.snapshot()

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """Runs ``fn`` over ``items`` in the pool, in order.

        The first error cancels the requests not yet sent. On Ctrl-C the requests in
        flight are abandoned too (their sockets are shut), so the interrupt takes effect
        at once instead of after ``timeout`` seconds and the retries.
        """
        futures = [self._pool.submit(fn, x) for x in items]
        try:
            return [f.result() for f in futures]
        except BaseException as e:
            for f in futures:
                f.cancel()
            if not isinstance(e, Exception):
                self.abandon_requests()
                try:
                    concurrent.futures.wait(futures, timeout=10)
                finally:
                    self.accept_requests()
            raise

    def abandon_requests(self) -> None:
        """Makes the requests in flight and those about to be sent fail at once (their sockets are shut)."""
        self._cancel.set()
        self._interrupt_connections()

    def accept_requests(self) -> None:
        """Lets requests be sent again after :meth:`abandon_requests`."""
        self._cancel.clear()

    def _served_model(self) -> str:
        def parse(r: Any) -> str:
            data = r.get("data")
            if not data or not isinstance(data[0], Mapping) or "id" not in data[0]:
                raise ValueError("the model list is empty")
            return str(data[0]["id"])

        return self._call("GET", "/models", None, parse)

    # ------------------------------------------------------------- generate
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        rows: Sequence[int] | None = None,
    ) -> list[str]:
        """Samples one continuation per prompt, one request each, ``max_concurrency`` at a time.

        Row ``i`` is sampled with seed :func:`row_seed` ``(seed, rows[i])`` (``rows``
        defaults to ``0..n-1``): a server that honours seeds returns the same texts for
        the same call, and a prompt sent alone with its row gets the text it gets in
        the whole batch.

        Raises:
            LMServerError: A request failed after every retry.
        """
        if max_tokens <= 0:
            return [""] * len(prompts)
        chat = self.api == "chat"
        make = chat_body if chat else completion_body
        path = "/chat/completions" if chat else "/completions"
        bodies = [
            make(model=self.name, prompt=p, max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop,
                 seed=None if seed is None else row_seed(seed, i if rows is None else rows[i]), extra=self.extra_body)
            for i, p in enumerate(prompts)
        ]
        self._count("generate_requests", len(bodies))
        texts = self._map(lambda b: self._call("POST", path, b, lambda r: parse_generation(r, chat=chat)), bodies)
        return [cut_at_stop(t, stop) for t in texts]

    # ---------------------------------------------------------------- score
    def _top(self, prompt: str, k: int, parse: Callable[[Any], Any] = parse_top_logprobs, prefer: int | None = None) -> Any:
        body = completion_body(model=self.name, prompt=prompt, max_tokens=1, temperature=1.0, top_p=1.0, seed=0, logprobs=k)
        return self._call("POST", "/completions", body, parse, prefer)

    def _echo(self, prompt: str, continuation: str, *, lenient: bool = False) -> float | None:
        body = completion_body(model=self.name, prompt=prompt + continuation, max_tokens=1, temperature=1.0, top_p=1.0,
                               seed=0, logprobs=1, echo=True)
        end = len(prompt) + len(continuation)
        parse = (lambda r: _or_none(span_logprob, r, len(prompt), end)) if lenient else (lambda r: span_logprob(r, len(prompt), end))
        return self._call("POST", "/completions", body, parse)

    def _probe(self) -> str:
        """Finds which scoring the server offers; see the class docstring.

        A server "does not offer" a feature when it refuses the request with a 4xx
        status or answers without the log-probabilities; connection errors, 5xx and
        authentication errors are raised as they are.
        """
        top: dict[str, float] | None = None
        for k in dict.fromkeys((self.top_logprobs, min(self.top_logprobs, 5))):
            try:
                top = self._top(_PROBE_PROMPT, k, lambda r: _or_none(parse_top_logprobs, r))
            except LMServerError as e:
                if e.status == 404:  # no /completions endpoint: a chat-only server or API
                    return self._probe_chat()
                if not _refused(e):
                    raise
                continue
            if top is not None:
                self._k = k
            break
        echo: float | None = None
        token, expected = max(top.items(), key=lambda kv: kv[1]) if top else (" apple", None)
        try:
            echo = self._echo(_PROBE_PROMPT, token, lenient=True)
        except LMServerError as e:
            if not _refused(e):
                raise
        if top is None and echo is None:
            raise LMServerError(
                f"LM server {self.servers[0]} offers neither next-token log-probabilities (logprobs) nor prompt "
                "log-probabilities (echo) on /completions, so it cannot judge; serve the judge elsewhere "
                "(a vLLM or llama.cpp server, model=vllm, or model=embedded)",
                server=self.servers[0],
            )
        if top is None:
            return "echo"
        # Echo must give the likeliest next token the log-probability the top list gives
        # it; a server that misaligns echoed values by one position fails this check.
        if echo is not None and abs(echo - expected) > 0.05 + 0.05 * abs(expected):
            log.info("qdaif: %s echoes log-probabilities that disagree with its top log-probabilities "
                     "(%.3f vs %.3f for %r); echo is not used", self.servers[0], echo, expected, token)
            echo = None
        return "top_logprobs+echo" if echo is not None else "top_logprobs"

    def _probe_chat(self) -> str:
        """``chat`` if the server's chat endpoint gives top log-probabilities.

        Raises:
            LMServerError: It does not (or fails).
        """
        try:
            self._chat_top(_PROBE_PROMPT, self._k)
        except LMServerError as e:
            if not _refused(e):
                raise
            raise LMServerError(
                f"LM server {self.servers[0]} has no /completions endpoint and its /chat/completions gives no "
                "top log-probabilities (logprobs, top_logprobs), so it cannot judge; serve the judge elsewhere",
                server=self.servers[0], status=e.status) from None
        return "chat"

    def _chat_top(self, prompt: str, k: int, prefer: int | None = None) -> dict[str, float]:
        body = chat_body(model=self.name, prompt=prompt, max_tokens=1, temperature=1.0, top_p=1.0, seed=0)
        body.update(logprobs=True, top_logprobs=int(k))
        return self._call("POST", "/chat/completions", body, parse_chat_top_logprobs, prefer)

    def _map_chained(self, fn: Callable[[ScoreRequest, int | None], Any], requests: Sequence[ScoreRequest]) -> list[Any]:
        """``fn(request, prefer)`` for every request, in order; see ``chain_prefixes``.

        A request whose prompt extends another's (:func:`prefix_parents`) runs after it
        in the same worker, with ``prefer`` the server that answered it; the chains run
        in the pool like independent requests.
        """
        if not self.chain_prefixes:
            return self._map(lambda r: fn(r, None), requests)
        parents = prefix_parents([r.prompt for r in requests])
        children: dict[int, list[int]] = collections.defaultdict(list)
        for i, p in enumerate(parents):
            if p >= 0:
                children[p].append(i)
        out: list[Any] = [None] * len(requests)

        def chain(root: int) -> None:
            todo: list[tuple[int, int | None]] = [(root, None)]
            while todo:
                i, prefer = todo.pop()
                out[i] = fn(requests[i], prefer)
                todo.extend((c, self._local.server) for c in reversed(children[i]))

        roots = [i for i, p in enumerate(parents) if p < 0]
        self._count("chained_requests", len(requests) - len(roots))
        self._map(chain, roots)
        return out

    def _score_chat(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        self._count("score_requests", len(requests))
        tops = self._map_chained(lambda r, prefer: self._chat_top(r.prompt, self._k, prefer), requests)
        out, absent = [], 0
        for r, top in zip(requests, tops):
            row, n = chat_label_logprobs(top, r.continuations)
            out.append(row)
            absent += n
        self._count("absent_labels", absent)
        if absent and not self._warned_absent:
            self._warned_absent = True
            log.warning("qdaif: %d of %d labels had no token among the top %d of %s's chat replies and got an upper "
                        "bound of their log-probability; see docs/serving.md (chat-model judges)",
                        absent, sum(len(r.continuations) for r in requests), self._k, self.servers[0])
        return out

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        """Log-probabilities of each request's continuations; see the class docstring for how.

        Raises:
            ValueError: A request has an empty prompt.
            LMServerError: A request failed after every retry, or the server cannot score.
        """
        for r in requests:
            if not r.prompt:
                raise ValueError("a score request needs a non-empty prompt")
        if not requests:
            return []
        with self._probe_lock:
            if self._scoring is None:
                self._scoring = self._probe()
                log.info("qdaif: %s scores with %s", self.servers[0], self._scoring)
        if self._scoring == "chat":
            return self._score_chat(requests)
        if self._scoring == "echo":
            pairs = [(r.prompt, c) for r in requests for c in r.continuations]
            self._count("score_requests", len(pairs))
            flat = iter(self._map(lambda pc: self._echo(*pc), pairs))
            return [[next(flat) for _ in r.continuations] for r in requests]
        return self._score_top(requests)

    def _score_top(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        """Scores by top log-probabilities; absent labels get the bound, or echo where the server's is correct."""
        self._count("score_requests", len(requests))
        tops = self._map_chained(lambda r, prefer: self._top(r.prompt, self._k, prefer=prefer), requests)
        out: list[list[float]] = []
        missing: list[tuple[int, int]] = []
        for i, (r, top) in enumerate(zip(requests, tops)):
            row = []
            for j, c in enumerate(r.continuations):
                if c in top:
                    row.append(top[c])
                else:
                    row.append(absent_label_bound(top))
                    missing.append((i, j))
            out.append(row)
        self._count("absent_labels", len(missing))
        if missing and self._scoring == "top_logprobs" and not self._warned_absent:
            self._warned_absent = True
            log.warning("qdaif: %d of %d labels were not among %s's top %d next tokens and got an upper bound of "
                        "their log-probability (the server has no usable echo); see docs/serving.md",
                        len(missing), sum(len(r.continuations) for r in requests), self.servers[0], self._k)
        if missing and self._scoring == "top_logprobs+echo":
            self._count("score_requests", len(missing))
            values = self._map(lambda ij: self._echo(requests[ij[0]].prompt, requests[ij[0]].continuations[ij[1]]), missing)
            for (i, j), v in zip(missing, values):
                out[i][j] = v
        return out


def prefix_parents(prompts: Sequence[str]) -> list[int]:
    """For each prompt, the index of the longest other prompt it starts with.

    Of equal prompts, each later one gets the one before it. O(n log n): in sorted
    order, every prompt between a prefix and its extension also extends the prefix, so
    a stack of the current prompt's prefixes suffices.

    Args:
        prompts: n prompts.

    Returns:
        n indices into ``prompts``; -1 where no other prompt is a prefix.
    """
    parents = [-1] * len(prompts)
    stack: list[int] = []
    for i in sorted(range(len(prompts)), key=lambda j: (prompts[j], j)):
        while stack and not prompts[i].startswith(prompts[stack[-1]]):
            stack.pop()
        if stack:
            parents[i] = stack[-1]
        stack.append(i)
    return parents


def _or_none(parse: Callable[..., Any], *args: Any) -> Any:
    """``parse(*args)``, or ``None`` where the response lacks what ``parse`` reads."""
    try:
        return parse(*args)
    except ValueError:
        return None


def _refused(e: LMServerError) -> bool:
    """Whether the server refused a request as unsupported (4xx but not an auth error)."""
    return e.status is not None and 400 <= e.status < 500 and e.status not in (401, 403, 408, 429)


def _error_message(raw: bytes) -> str:
    """The server's error message from a JSON error body, else the body's start."""
    try:
        body = json.loads(raw)
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message", err) if isinstance(err, dict) else err
        text = msg if isinstance(msg, str) else json.dumps(msg)
    except (ValueError, TypeError):
        text = raw.decode("utf-8", "replace")
    text = " ".join(text.split())
    return (text[:300] + "...") if len(text) > 300 else (text or "(empty body)")


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
