"""A scripted fake LM for fast, deterministic tests of the engine's logic. It is not a model."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from typing import Any

from qdaif.lm._base import LM, ScoreRequest, register_backend
from qdaif.lm._text import cut_at_stop

__all__ = ["ScriptedFakeLM"]

_WORDS = (
    "good great lovely fresh tasty awful bland bitter dull fine crisp green soup salad "
    "carrots kale beans rice stew market price weather cheap dear sweet sour"
).split()


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


@register_backend("scripted_fake")
class ScriptedFakeLM(LM):
    """Scripted stand-in for an LM: a pure function of its inputs, with call counters.

    ``generate`` returns a few words chosen by hashing (prompt, seed, row). ``score``
    gives each continuation a log-probability that depends only on the prompt's text
    after its last ``"Text:"`` and on the continuation, so the same text always lands
    in the same cell. In each ``generate`` batch, every ``empty_every``-th row is
    whitespace and every ``nonfinite_every``-th row gets NaN judge scores, to exercise
    the engine's handling of bad LM output. Use it for tests of the engine, never for
    results.

    Args:
        max_words: Longest fake generation, in words.
        empty_every: Make every k-th row of a batch whitespace-only (0: never).
        nonfinite_every: Give every k-th row of a batch NaN judge scores (0: never).
        delay: Seconds each call sleeps, to simulate a slow model.
        concurrent: Pose as a backend whose requests run concurrently (see
            :attr:`LM.concurrent`), so the engine pipelines its calls.
    """

    def __init__(self, *, max_words: int = 8, empty_every: int = 0, nonfinite_every: int = 0, delay: float = 0.0,
                 concurrent: bool = False) -> None:
        self.concurrent = concurrent
        self.max_words = max_words
        self.empty_every = empty_every
        self.nonfinite_every = nonfinite_every
        self.delay = delay
        self.generate_calls: list[int] = []  # batch size of each call
        self.score_calls: list[int] = []

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "name": "scripted_fake"}

    def generate(self, prompts, *, max_tokens, temperature=1.0, top_p=1.0, stop=(), seed=None, rows=None):
        self.generate_calls.append(len(prompts))
        time.sleep(self.delay)
        out = []
        for row, p in zip(range(len(prompts)) if rows is None else rows, prompts):
            if self.empty_every and (row + 1) % self.empty_every == 0:
                out.append("  \n ")
                continue
            h = _digest(p, seed, temperature, row)
            n = 2 + h % (self.max_words - 1)
            words = [_WORDS[(h >> (4 * k)) % len(_WORDS)] for k in range(min(n, max_tokens))]
            text = " " + " ".join(words) + "."
            if self.nonfinite_every and (row + 1) % self.nonfinite_every == 0:
                text += " [nonfinite]"
            out.append(cut_at_stop(text, stop))
        return out

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        self.score_calls.append(len(requests))
        time.sleep(self.delay)
        out = []
        for r in requests:
            text = r.prompt.rsplit("Text:", 1)[-1]
            if "[nonfinite]" in text:
                out.append([math.nan] * len(r.continuations))
                continue
            out.append([-((_digest(text, c) % 1000) / 250.0) for c in r.continuations])
        return out
