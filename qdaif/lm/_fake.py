"""A scripted fake LM for fast, deterministic tests of the engine's logic. It is not a model."""

from __future__ import annotations

import hashlib
import math
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

    ``generate`` returns a few words chosen by hashing (prompt, seed); prompts that
    contain ``"<empty>"`` give an empty string and ``"<nan>"`` a text the fake judge
    scores as NaN, so the engine's handling of bad generations can be tested.
    ``score`` gives each continuation a log-probability that depends on the text after
    the prompt's last ``"Text:"`` and on the continuation, so the same text always lands
    in the same cell. Use it only for tests of the engine, never for results.

    Args:
        vocabulary: Words the fake generator samples from.
        max_words: Longest fake generation, in words.
    """

    def __init__(self, *, vocabulary: Sequence[str] = _WORDS, max_words: int = 8) -> None:
        self.vocabulary = list(vocabulary)
        self.max_words = max_words
        self.generate_calls: list[int] = []  # batch size of each call
        self.score_calls: list[int] = []

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "name": "scripted_fake"}

    def generate(self, prompts, *, max_tokens, temperature=1.0, top_p=1.0, stop=(), seed=None):
        self.generate_calls.append(len(prompts))
        out = []
        for row, p in enumerate(prompts):
            if "<empty>" in p:
                out.append("   ")
                continue
            h = _digest(p, seed, temperature, row)
            n = 2 + h % (self.max_words - 1)
            words = [self.vocabulary[(h >> (4 * k)) % len(self.vocabulary)] for k in range(min(n, max_tokens))]
            text = " " + " ".join(words) + "."
            if "<nan>" in p:
                text += " <nan>"
            out.append(cut_at_stop(text, stop))
        return out

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        self.score_calls.append(len(requests))
        out = []
        for r in requests:
            text = r.prompt.rsplit("Text:", 1)[-1]
            if "<nan>" in text:
                out.append([math.nan] * len(r.continuations))
                continue
            out.append([-((_digest(text, c) % 1000) / 250.0) for c in r.continuations])
        return out
