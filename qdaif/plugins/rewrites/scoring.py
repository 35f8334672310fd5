"""Deterministic parts of a rewrite's score: chrF distance, length ratio, label-evidence check, quality."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["chrf_distance", "length_ratio", "words", "added_evidence", "rewrite_quality", "EvidenceLexicon"]

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (letters, digits, apostrophes)."""
    return _WORD.findall(text.lower())


def chrf_distance(rewrite: str, original: str) -> float:
    """Character-level distance ``1 - chrF(rewrite, original) / 100`` (sacrebleu), in [0, 1].

    A copy of the original gives 0; a text sharing no character n-gram with it gives 1.
    """
    import sacrebleu

    score = sacrebleu.sentence_chrf(rewrite, [original]).score
    return float(min(1.0, max(0.0, 1.0 - score / 100.0)))


def length_ratio(rewrite: str, original: str, *, clip: float = 1.5) -> float:
    """``log2`` of the rewrite's word count over the original's, clipped to ``[-clip, clip]``."""
    a, b = max(1, len(words(rewrite))), max(1, len(words(original)))
    return float(np.clip(np.log2(a / b), -clip, clip))


class EvidenceLexicon:
    """Words that argue for a label of a task; an entry ending in ``*`` matches any word with that prefix.

    Args:
        entries: Task name -> list of words (or ``prefix*``).
    """

    def __init__(self, *, entries: Mapping[str, Sequence[str]]) -> None:
        self.exact: dict[str, frozenset[str]] = {}
        self.prefixes: dict[str, tuple[str, ...]] = {}
        for task, items in entries.items():
            items = [str(w).strip().lower() for w in items]
            self.exact[task] = frozenset(w for w in items if not w.endswith("*"))
            self.prefixes[task] = tuple(w[:-1] for w in items if w.endswith("*"))

    def matches(self, task: str, word: str) -> bool:
        """Whether ``word`` (lower case) is an evidence word of ``task``."""
        return word in self.exact.get(task, ()) or any(word.startswith(p) for p in self.prefixes.get(task, ()))


def added_evidence(rewrite: str, original: str, task: str, lexicon: EvidenceLexicon) -> list[str]:
    """Evidence words of ``task`` in the rewrite whose stem is absent from the original, in order, unique.

    A word counts as present in the original when the original has the same word, one
    that it extends or that extends it (``love``, ``loved``), or one with the same first
    five letters (``loved``, ``loves``), so that a faithful rewrite may inflect the
    original's own words.
    """
    have = set(words(original))

    def present(w: str) -> bool:
        if w in have:
            return True
        return any(len(w) >= 4 and len(h) >= 4 and (w.startswith(h) or h.startswith(w) or (w[:5] == h[:5] and len(w) >= 5))
                   for h in have)

    out: list[str] = []
    for w in words(rewrite):
        if w in out or present(w):
            continue
        if lexicon.matches(task, w):
            out.append(w)
    return out


def rewrite_quality(meaning: np.ndarray, p_target: np.ndarray, n_added: np.ndarray, *, floor: float,
                    penalty: float) -> np.ndarray:
    """Quality of rewrites: ``meaning * p_target * penalty ** n_added``, 0 where ``meaning < floor``.

    Args:
        meaning: Shape ``(n,)``, the meaning-preservation judge's P(same meaning).
        p_target: Shape ``(n,)``, the classifier's probability of the target label.
        n_added: Shape ``(n,)``, label-evidence words the rewrite adds.
        floor: Hard floor on ``meaning``.
        penalty: Factor per added evidence word, in [0, 1].

    Returns:
        Shape ``(n,)``; ``nan`` where an input is ``nan``.
    """
    meaning, p_target = np.asarray(meaning, float), np.asarray(p_target, float)
    q = meaning * p_target * np.power(float(penalty), np.asarray(n_added, float))
    with np.errstate(invalid="ignore"):
        return np.where(meaning < floor, 0.0 * q, q)
