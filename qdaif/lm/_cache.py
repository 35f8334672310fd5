"""A persistent response cache around any LM: a repeated or resumed run re-uses answers it paid for."""

from __future__ import annotations

import collections
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qdaif.lm._base import LM, ScoreRequest

__all__ = ["CachingLM", "VOLATILE_KEYS"]

#: Bump when the meaning of a stored value changes: old entries then stop matching.
CACHE_FORMAT = 1
#: Keys of ``describe()`` that say where or how fast a model runs, not what it answers:
#: they are left out of the cache key, so moving a server or raising its concurrency
#: keeps the cache.
VOLATILE_KEYS = frozenset({"servers", "base_url", "base_urls", "max_concurrency", "timeout", "max_retries", "cache",
                           "chain_prefixes"})
_CHUNK = 500  # keys per SELECT (SQLite allows 999 parameters in old builds)


class CachingLM(LM):
    """Wraps an LM with an SQLite cache of its answers.

    ``generate`` is cached per call: the key is the model's identity, every prompt of
    the batch, ``max_tokens``, ``temperature``, ``top_p``, ``stop`` and ``seed``. The
    whole batch is one entry because a backend may sample a row differently in another
    batch (transformers shares one random stream over the batch); a resumed or
    repeated run makes the same calls and gets the same answers. Calls with
    ``seed=None`` and ``temperature > 0`` ask for fresh samples and are never cached.

    ``score`` is cached per request (prompt and continuations): a call sends only the
    requests it has not seen, in one call to the wrapped LM.

    The model's identity is its ``describe()`` at wrapping time without
    :data:`VOLATILE_KEYS` (server addresses, concurrency, timeouts): another model,
    dtype, backend version or scoring mode gives other keys. The file is in WAL mode
    with a busy timeout, so several processes (a sweep) can share it.

    Args:
        lm: The model to cache.
        path: SQLite file; its folder is created if needed.
        identity: What identifies the model in keys, instead of its ``describe()``.
        busy_timeout: Seconds to wait for another process's write lock.

    Attributes:
        stats: Counters ``generate_hits``, ``generate_misses``, ``score_hits``,
            ``score_misses`` (in answers: prompts and score requests) and
            ``uncached`` (prompts of unseeded sampling calls).
    """

    def __init__(self, *, lm: LM, path: str | Path, identity: Mapping[str, Any] | None = None, busy_timeout: float = 60.0) -> None:
        self.lm = lm
        self.backend = lm.backend
        self.path = Path(path)
        ident = dict(identity) if identity is not None else {k: v for k, v in lm.describe().items() if k not in VOLATILE_KEYS}
        self.identity = ident
        self._identity = json.dumps(ident, sort_keys=True, default=str)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL, created REAL NOT NULL)"
        )
        self.stats: collections.Counter[str] = collections.Counter()

    def check_prompts(self, prompts: Sequence[str], *, max_tokens: int) -> None:
        self.lm.check_prompts(prompts, max_tokens=max_tokens)

    # ------------------------------------------------------------ reporting
    @property
    def hits(self) -> int:
        """Answers served from the cache (generated texts and score rows)."""
        return self.stats["generate_hits"] + self.stats["score_hits"]

    @property
    def misses(self) -> int:
        """Answers the wrapped LM had to compute (unseeded sampling included)."""
        return self.stats["generate_misses"] + self.stats["score_misses"] + self.stats["uncached"]

    def describe(self) -> dict[str, Any]:
        return {**self.lm.describe(), "cache": str(self.path)}

    def close(self) -> None:
        """Closes the cache file (not the wrapped LM)."""
        with self._lock:
            self._db.close()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    # -------------------------------------------------------------- storage
    def _key(self, kind: str, payload: Any) -> str:
        text = json.dumps([CACHE_FORMAT, kind, self._identity, payload], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def _load(self, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, value in self._db.execute(f"SELECT key, value FROM answers WHERE key IN ({marks})", chunk):
                    found[key] = json.loads(value)
        return found

    def _store(self, kind: str, items: Sequence[tuple[str, Any]]) -> None:
        if not items:
            return
        now = time.time()
        rows = [(k, kind, json.dumps(v), now) for k, v in items]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO answers (key, kind, value, created) VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------ interface
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> list[str]:
        args = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop, seed=seed)
        if not prompts:
            return []
        if seed is None and temperature > 0:
            self.stats["uncached"] += len(prompts)
            return self.lm.generate(prompts, **args)
        key = self._key("generate", {"prompts": list(prompts), "max_tokens": int(max_tokens), "temperature": float(temperature),
                                     "top_p": float(top_p), "stop": list(stop), "seed": seed})
        cached = self._load([key]).get(key)
        if isinstance(cached, list) and len(cached) == len(prompts):
            self.stats["generate_hits"] += len(prompts)
            return [str(t) for t in cached]
        texts = self.lm.generate(prompts, **args)
        self.stats["generate_misses"] += len(prompts)
        self._store("generate", [(key, list(texts))])
        return texts

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        if not requests:
            return []
        keys = [self._key("score", {"prompt": r.prompt, "continuations": list(r.continuations)}) for r in requests]
        found = self._load(keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        self.stats["score_hits"] += len(requests) - len(todo)
        self.stats["score_misses"] += len(todo)
        out: list[list[float] | None] = [None] * len(requests)
        for i, k in enumerate(keys):
            if k in found:
                out[i] = [float(v) for v in found[k]]
        if todo:
            # One request per distinct key: the same text judged twice in a call is sent once.
            first: dict[str, int] = {}
            for i in todo:
                first.setdefault(keys[i], i)
            sent = list(first.values())
            values = self.lm.score([requests[i] for i in sent])
            by_key = {keys[i]: [float(x) for x in v] for i, v in zip(sent, values)}
            self._store("score", list(by_key.items()))
            for i in todo:
                out[i] = list(by_key[keys[i]])
        return out  # type: ignore[return-value]
