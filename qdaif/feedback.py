"""AI feedback: LM judges that turn texts into a quality and diversity measures."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

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


class LabelJudge:
    """Scores quality and every measure of a domain in one batched ``score`` call.

    Args:
        domain: The domain whose judge specs are used.
        lm: The judge model.
    """

    def __init__(self, *, domain: Domain, lm: LM) -> None:
        if domain.quality is None or any(m.judge.kind == "computed" for m in domain.measures):
            raise ValueError(f"domain {domain.name} is judged by its plugin, not by label judges alone")
        self.specs: list[LabelJudgeSpec] = [domain.quality] + [m.judge for m in domain.measures]
        self.lm = lm

    def evaluate(self, texts: Sequence[str]) -> Evaluation:
        """Judges ``n`` texts with ``n * (1 + measure_dim)`` requests in one call."""
        n = len(texts)
        if n == 0:
            return Evaluation(np.zeros(0), np.zeros((0, len(self.specs) - 1)), {s.name: np.zeros((0, len(s.labels))) for s in self.specs})
        requests = [ScoreRequest(*spec.prompt_parts(t), spec.labels) for spec in self.specs for t in texts]
        logps = self.lm.score(requests)
        probs = {}
        for k, spec in enumerate(self.specs):
            probs[spec.name] = label_probabilities(logps[k * n : (k + 1) * n], spec.logit_scale)
        values = [s.value(probs[s.name]) for s in self.specs]
        measures = np.stack(values[1:], axis=1) if len(values) > 1 else np.zeros((n, 0))
        return Evaluation(quality=values[0], measures=measures, label_probs=probs)
