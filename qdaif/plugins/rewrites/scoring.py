"""Deterministic parts of a rewrite's score: chrF distance, length ratio, embedding meaning, label-evidence check, quality."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["chrf_distance", "length_ratio", "words", "added_evidence", "embedding_meaning", "rewrite_quality",
           "EvidenceLexicon", "ANY_LABEL"]

ANY_LABEL = "*"  # the label of evidence words given as a plain list: they count whatever the target is

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


def embedding_meaning(cosine: np.ndarray, distance: np.ndarray, *, overlap: float) -> np.ndarray:
    """Meaning preservation from sentence-embedding similarity, credited for the surface change it survives.

    ``clip((cosine + overlap * distance) / (1 + overlap), 0, 1)``. Shared words make two
    texts' embeddings close whatever the changed words say, so a near-copy that changes a
    fact, a number or the sentiment keeps a high cosine. Crediting the character distance
    (``1 - chrF/100``) ranks such a near-copy below a rewrite with the same cosine that
    rewords everything. Within one cell of the distance axis the credit is almost
    constant, so it changes which cells score high, not which rewrite wins a cell.

    Args:
        cosine: Shape ``(n,)``, cosine similarity of the rewrite's and the original's embeddings.
        distance: Shape ``(n,)``, ``1 - chrF/100`` (:func:`chrf_distance`).
        overlap: Weight of the distance credit, ``>= 0`` (0: plain cosine).

    Returns:
        Shape ``(n,)``, in [0, 1]; a copy of the original scores ``1 / (1 + overlap)``.
    """
    cosine, distance = np.asarray(cosine, float), np.asarray(distance, float)
    return np.clip((cosine + float(overlap) * distance) / (1.0 + float(overlap)), 0.0, 1.0)


class EvidenceLexicon:
    """Words that argue for a label of a task; an entry ending in ``*`` matches any word with that prefix.

    Args:
        entries: Task name -> label -> list of words (or ``prefix*``). A task given a plain
            list instead has words of no particular label (:data:`ANY_LABEL`): they count
            against every target.
    """

    def __init__(self, *, entries: Mapping[str, Mapping[str, Sequence[str]] | Sequence[str]]) -> None:
        self.exact: dict[str, dict[str, frozenset[str]]] = {}
        self.prefixes: dict[str, dict[str, tuple[str, ...]]] = {}
        for task, by_label in entries.items():
            if not isinstance(by_label, Mapping):
                by_label = {ANY_LABEL: by_label}
            self.exact[task], self.prefixes[task] = {}, {}
            for label, items in by_label.items():
                items = [str(w).strip().lower() for w in items]
                self.exact[task][str(label)] = frozenset(w for w in items if not w.endswith("*"))
                self.prefixes[task][str(label)] = tuple(w[:-1] for w in items if w.endswith("*"))

    def labels_of(self, task: str, word: str) -> set[str]:
        """The labels of ``task`` that ``word`` (lower case) argues for (:data:`ANY_LABEL` for an unlabelled entry)."""
        exact, prefixes = self.exact.get(task, {}), self.prefixes.get(task, {})
        return {label for label in exact if word in exact[label] or any(word.startswith(p) for p in prefixes[label])}

    def matches(self, task: str, word: str, target: str | None = None) -> bool:
        """Whether ``word`` argues for a label of ``task`` other than ``target`` (any label when ``target`` is None).

        A word listed under the target as well as under another label does not count.
        """
        labels = self.labels_of(task, word)
        return bool(labels) and (target is None or target not in labels)


def added_evidence(rewrite: str, original: str, task: str, lexicon: EvidenceLexicon, target: str | None = None,
                   free: int = 0) -> list[str]:
    """The evidence words of ``task`` that the rewrite adds and that are penalised, in order, unique.

    An evidence word is added when its stem is absent from the original. Without
    ``target`` every added evidence word is penalised. With ``target``, an added word
    that argues for another label always is (``awful`` added to a positive review),
    while words that agree with the target are free up to ``free`` of them: a synonym
    (``superb`` for a positive "slaps") says nothing new, but piling praise onto a
    positive review to sway the classifier is still penalised past ``free`` words.

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
    agreeing = 0
    for w in dict.fromkeys(words(rewrite)):
        if present(w) or not lexicon.matches(task, w):
            continue
        if target is not None and not lexicon.matches(task, w, target):
            agreeing += 1
            if agreeing <= free:
                continue
        out.append(w)
    return out


def rewrite_quality(meaning: np.ndarray, p_target: np.ndarray, n_added: np.ndarray, *, floor: float,
                    penalty: float) -> np.ndarray:
    """Quality of rewrites: ``meaning * p_target * penalty ** n_added``, 0 where ``meaning < floor``.

    Args:
        meaning: Shape ``(n,)``, the meaning score in [0, 1] (``settings.meaning``).
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
