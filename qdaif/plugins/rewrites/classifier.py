"""Task models of the rewrites domain: class probabilities for texts of several tasks.

The default, :class:`LMClassifier`, is the judge LM as a few-shot classifier: the
domain's judge named after the task (``judges.sentiment`` …) gives the prompt and
label space, and the class distribution is the softmax of the label log-probabilities.
Another classifier (a fine-tuned encoder, an API) is a :class:`Classifier` subclass
named by its dotted path in ``settings.classifier``.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from qdaif.errors import ConfigError
from qdaif.feedback import label_probabilities
from qdaif.lm import ScoreRequest

if TYPE_CHECKING:
    from qdaif.domain import Domain
    from qdaif.lm import LM

__all__ = ["Classifier", "LMClassifier", "make_classifier"]


class Classifier(abc.ABC):
    """Class probabilities of texts, one label space per task.

    A classifier that scores through the judge LM returns its requests from
    :meth:`requests`, so that the plugin can send them in the same batched ``score``
    call as its judges, and turns the answers into probabilities in
    :meth:`probabilities`. Any other classifier returns no requests and computes the
    probabilities itself (``logps`` is then empty).

    Args:
        domain: The rewrites domain (its judges and settings).
    """

    def __init__(self, *, domain: "Domain") -> None:
        self.domain = domain

    @abc.abstractmethod
    def classes(self, task: str) -> tuple[str, ...]:
        """Class names of ``task``, in the order of the probabilities.

        Raises:
            ConfigError: The classifier does not know ``task``.
        """

    def requests(self, texts: Sequence[str], tasks: Sequence[str]) -> list[ScoreRequest]:
        """Score requests to send to the judge LM for ``texts`` (none by default)."""
        return []

    @abc.abstractmethod
    def probabilities(self, texts: Sequence[str], tasks: Sequence[str], logps: Sequence[Sequence[float]]) -> list[np.ndarray]:
        """Class distributions of ``texts``.

        Args:
            texts: ``n`` texts.
            tasks: The task of each text.
            logps: The judge LM's answers to :meth:`requests` (empty when it made none).

        Returns:
            ``n`` arrays, each of shape ``(len(classes(task)),)``; ``nan`` where unknown.
        """

    def predict_proba(self, texts: Sequence[str], tasks: Sequence[str], *, lm: "LM") -> list[np.ndarray]:
        """Class distributions of ``texts`` in at most one batched ``score`` call of ``lm``."""
        reqs = self.requests(texts, tasks)
        return self.probabilities(texts, tasks, lm.score(reqs) if reqs else [])


class LMClassifier(Classifier):
    """The judge LM as a few-shot classifier: one label judge per task (``judges.<task>``)."""

    def classes(self, task: str) -> tuple[str, ...]:
        return self._spec(task).categories

    def _spec(self, task: str):
        spec = self.domain.judges.get(task)
        if spec is None:
            raise ConfigError(f"domain {self.domain.name}: settings.classifier=lm needs a judge named {task!r} "
                              f"(judges: {', '.join(self.domain.judges)})")
        return spec

    def requests(self, texts, tasks):
        out = []
        for text, task in zip(texts, tasks):
            spec = self._spec(task)
            out.append(ScoreRequest(spec.shots, spec.query.format(text=text, original=""), spec.labels))
        return out

    def probabilities(self, texts, tasks, logps):
        return [label_probabilities([row], self._spec(task).logit_scale)[0] for row, task in zip(logps, tasks)]


def make_classifier(name: str, *, domain: "Domain") -> Classifier:
    """Builds the classifier named in ``settings.classifier``: ``lm`` or a dotted ``module.Class`` path.

    Raises:
        ConfigError: The path cannot be imported or is not a :class:`Classifier` subclass.
    """
    if name == "lm":
        return LMClassifier(domain=domain)
    module_name, _, cls_name = name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name) if module_name else None
    except ImportError as e:
        raise ConfigError(f"settings.classifier: cannot import {module_name!r} ({e})") from None
    if not (isinstance(cls, type) and issubclass(cls, Classifier)):
        raise ConfigError(f"settings.classifier must be 'lm' or the dotted path of a "
                          f"qdaif.plugins.rewrites.classifier.Classifier subclass, got {name!r}")
    return cls(domain=domain)
