"""AI feedback: LM judges that turn texts into a quality and diversity measures."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from qdaif.domain import Domain, LabelJudgeSpec
from qdaif.lm import LM, ScoreRequest

__all__ = ["Evaluation", "LabelJudge", "label_probabilities"]


def label_probabilities(logps: Sequence[Sequence[float]], scale: float = 1.0) -> np.ndarray:
    """Softmax over each row of label log-probabilities, after multiplying by ``scale``.

    Args:
        logps: Shape ``(n, num_labels)``; ``nan`` entries make the row ``nan``.

    Returns:
        Shape ``(n, num_labels)``; each finite row sums to 1.
    """
    x = np.asarray(logps, dtype=np.float64) * scale
    with np.errstate(invalid="ignore"):
        x = x - np.max(x, axis=1, keepdims=True)
        p = np.exp(x)
        return p / p.sum(axis=1, keepdims=True)


@dataclasses.dataclass
class Evaluation:
    """Judge output for a batch of ``n`` texts.

    Attributes:
        quality: Shape ``(n,)``, the quality judge's value; ``nan`` where the judge failed.
        measures: Shape ``(n, measure_dim)``, each measure judge's value (see
            :meth:`LabelJudgeSpec.value`).
        label_probs: Judge name -> label distribution, shape ``(n, num_labels)``.
        details: Optional per-candidate JSON dicts (a plugin's sub-scores), ``n`` of them.
    """

    quality: np.ndarray
    measures: np.ndarray
    label_probs: dict[str, np.ndarray]
    details: list[dict] | None = None

    @property
    def finite(self) -> np.ndarray:
        """Mask of texts whose quality and measures are all finite, shape ``(n,)``."""
        return np.isfinite(self.quality) & np.all(np.isfinite(self.measures), axis=1)

    @classmethod
    def concat(cls, parts: Sequence["Evaluation"], *, like: "Evaluation") -> "Evaluation":
        """Stacks evaluations of consecutive texts into one, in order.

        Args:
            parts: Evaluations to stack (each of any ``n``).
            like: An evaluation of the same judges (e.g. of no texts), which gives the
                shapes when ``parts`` is empty.
        """
        parts = [like, *parts]
        details = None
        if any(p.details is not None for p in parts[1:]):
            details = [d for p in parts for d in (p.details or [{}] * len(p.quality))]
        return cls(quality=np.concatenate([p.quality for p in parts]),
                   measures=np.concatenate([p.measures for p in parts]),
                   label_probs={k: np.concatenate([p.label_probs[k] for p in parts]) for k in like.label_probs},
                   details=details)


CONTENT_FREE = ("N/A", "", "[MASK]")
"""Content-free inputs of contextual calibration (Zhao et al. 2021, "Calibrate before use")."""


class LabelJudge:
    """Scores quality and every measure of a domain in one batched ``score`` call.

    A judge spec's options (see :class:`LabelJudgeSpec`) change its requests:

    - ``orders: k``: each text is scored under ``k`` orders of the few-shot examples and
      the label distributions are averaged (``k`` fixed few-shot blocks, each cached once
      by a backend with a prefix cache);
    - ``retrieve: m``: each text sees the ``m`` examples most similar to it (MiniLM
      cosine similarity), the most similar last, next to the text;
    - ``calibrate``: label probabilities are divided by the judge's mean probabilities on
      :data:`CONTENT_FREE` inputs under the same few-shot block, then renormalised
      (before ``logit_scale``). The content-free distributions are computed once, on the
      first call, and kept in :attr:`calibration` (a run stores them in its directory).

    Args:
        domain: The domain whose judge specs are used.
        lm: The judge model.
        calibration: Judge name -> content-free label distributions, one row per example
            order, from an earlier :attr:`calibration` (a resumed run's); computed when absent.
        embedder: Sentence embedder for ``retrieve`` (built on first use when ``None``).
    """

    def __init__(self, *, domain: Domain, lm: LM, calibration: Mapping[str, Any] | None = None,
                 embedder: Any = None) -> None:
        if domain.quality is None or any(m.judge.kind == "computed" for m in domain.measures):
            raise ValueError(f"domain {domain.name} is judged by its plugin, not by label judges alone")
        self.specs: list[LabelJudgeSpec] = [domain.quality] + [m.judge for m in domain.measures]
        self.lm = lm
        self.calibration: dict[str, list[list[float]]] = {k: [list(map(float, r)) for r in v]
                                                         for k, v in (calibration or {}).items()}
        self._embedder = embedder
        self._example_vectors: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ prompts
    def _retrieved(self, spec: LabelJudgeSpec, texts: Sequence[str]) -> list[tuple[int, ...]]:
        """Per text, the indices of its ``retrieve`` nearest examples, least similar first."""
        if self._embedder is None:
            from qdaif.embeddings import SentenceEmbedder
            self._embedder = SentenceEmbedder()
        if spec.name not in self._example_vectors:
            self._example_vectors[spec.name] = self._embedder.embed([t for t, _ in spec.examples])
        sims = self._embedder.embed(list(texts)) @ self._example_vectors[spec.name].T
        # stable sort on -similarity: ties keep the written order; reversed: most similar last
        return [tuple(int(i) for i in np.argsort(-row, kind="stable")[: spec.retrieve][::-1]) for row in sims]

    def _requests(self, spec: LabelJudgeSpec, texts: Sequence[str]) -> list[ScoreRequest]:
        """``len(texts) * k`` requests, order-major (all texts under order 0, then order 1, ...)."""
        if not spec.examples:
            return [ScoreRequest(*spec.prompt_parts(t), spec.labels) for t in texts]
        if spec.retrieve:
            chosen = self._retrieved(spec, texts)
            return [ScoreRequest(spec.shots + spec.render_examples([c[i] for i in perm]), spec.query.format(text=spec.judged_text(t)), spec.labels)
                    for perm in spec.example_orders() for t, c in zip(texts, chosen)]
        return [ScoreRequest(spec.shots + spec.render_examples(order), spec.query.format(text=spec.judged_text(t)), spec.labels)
                for order in spec.example_orders() for t in texts]

    def _ensure_calibration(self) -> None:
        """Scores the content-free inputs of every ``calibrate`` judge not yet calibrated (one call)."""
        todo = [s for s in self.specs if s.calibrate and s.name not in self.calibration]
        if not todo:
            return
        blocks = [(s, self._requests(s, CONTENT_FREE)) for s in todo]
        logps = self.lm.score([r for _, reqs in blocks for r in reqs])
        at = 0
        for spec, reqs in blocks:
            p = label_probabilities(logps[at : at + len(reqs)]).reshape(-1, len(CONTENT_FREE), len(spec.labels))
            at += len(reqs)
            self.calibration[spec.name] = np.nanmean(p, axis=1).tolist()  # (orders, labels)

    # ------------------------------------------------------------------ scoring
    def evaluate(self, texts: Sequence[str]) -> Evaluation:
        """Judges ``n`` texts with ``n * sum(orders)`` requests in one ``score`` call.

        Returns:
            The judges' values; a text whose label log-probabilities are not finite under
            some order gets ``nan`` for that judge.
        """
        n = len(texts)
        if n == 0:
            return Evaluation(np.zeros(0), np.zeros((0, len(self.specs) - 1)), {s.name: np.zeros((0, len(s.labels))) for s in self.specs})
        self._ensure_calibration()
        blocks = [self._requests(spec, texts) for spec in self.specs]
        logps = self.lm.score([r for reqs in blocks for r in reqs])  # rows of each judge's label count
        probs, at = {}, 0
        for spec, reqs in zip(self.specs, blocks):
            k = len(reqs) // n
            x = np.asarray(logps[at : at + len(reqs)], dtype=np.float64).reshape(k, n, len(spec.labels))
            at += len(reqs)
            if spec.calibrate:
                with np.errstate(divide="ignore"):
                    x = x - np.log(np.asarray(self.calibration[spec.name], dtype=np.float64))[:, None, :]
            probs[spec.name] = np.mean([label_probabilities(x[j], spec.logit_scale) for j in range(k)], axis=0)
        values = [s.value(probs[s.name]) for s in self.specs]
        measures = np.stack(values[1:], axis=1) if len(values) > 1 else np.zeros((n, 0))
        return Evaluation(quality=values[0], measures=measures, label_probs=probs)

