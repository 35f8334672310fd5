"""The one LM interface every backend implements, and the backend registry."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from qdaif.errors import ConfigError

__all__ = ["LM", "ScoreRequest", "PromptTooLongError", "register_backend", "make_lm", "backend_names"]


class PromptTooLongError(ConfigError):
    """A prompt (with the tokens to generate or score) does not fit the model's context window."""


def check_fits(lengths: Sequence[int], prompts: Sequence[str], *, extra: int, context: int | None, what: str) -> None:
    """Raises :class:`PromptTooLongError` for the first prompt whose ``length + extra`` exceeds ``context``.

    Args:
        lengths: Token count of each prompt.
        prompts: The prompts (their start is shown in the message).
        extra: Tokens added to each prompt (new tokens, or the longest label).
        context: The model's context window in tokens; ``None`` checks nothing.
        what: What ``extra`` is, for the message (e.g. ``"max_tokens=50"``).
    """
    if context is None:
        return
    for n, prompt in zip(lengths, prompts):
        if n + extra > context:
            start = " ".join(prompt[:50].split())
            raise PromptTooLongError(
                f"a prompt of {n} tokens (+ {what}) does not fit the model's context of {context} tokens, "
                f"so it was not sent (it starts {start!r}); shorten the domain's seeds, shots or lmx.num_examples, "
                "or use a model with a longer context")


@dataclasses.dataclass(frozen=True)
class ScoreRequest:
    """One label-scoring request: which continuation of a prompt is most likely?

    The prompt is ``prefix + suffix``. The split is a hint, not a semantic: a backend
    may compute the key-value cache of a ``prefix`` shared by many requests once and
    reuse it (a judge's few-shot block is the same for every candidate). Backends
    without such a cache simply concatenate the two.

    Attributes:
        prefix: Start of the prompt shared with other requests (may be empty).
        suffix: The rest of the prompt, specific to this request.
        continuations: Candidate continuations (labels), e.g. ``(" positive", " negative")``.
    """

    prefix: str
    suffix: str
    continuations: tuple[str, ...]

    @property
    def prompt(self) -> str:
        return self.prefix + self.suffix


class LM(abc.ABC):
    """A language model that generates and scores in batches.

    Every method takes a whole batch: the engine makes one ``generate`` call and one
    ``score`` call per iteration, and a backend decides how to split them up.
    """

    #: Registry name of the backend, recorded in the run's config.
    backend: str = "abstract"
    #: ``generate`` and ``score`` may be called from several threads at once, a row's
    #: result does not depend on the other rows of its call, and ``generate`` takes
    #: ``rows=`` (each prompt's row in the batch it stands for, which fixes its sampling
    #: seed). The engine then judges each candidate as soon as its generation returns.
    concurrent: bool = False

    @abc.abstractmethod
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
        """Samples one continuation per prompt.

        Args:
            prompts: Batch of ``n`` prompts, used as raw text (no chat template).
            max_tokens: Maximum number of new tokens per continuation.
            temperature: Sampling temperature; 0 means greedy decoding.
            top_p: Nucleus sampling mass.
            stop: Strings that end a continuation; the returned text is cut before
                the first of them.
            seed: Seed of this call's sampling; the same prompts, parameters and seed
                give the same texts.

        Returns:
            ``n`` continuations (without the prompt), possibly empty strings.
        """

    @abc.abstractmethod
    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        """Computes log-probabilities of candidate continuations.

        Args:
            requests: Batch of ``n`` requests.

        Returns:
            For request ``i``, a list of ``len(requests[i].continuations)`` floats:
            the summed log-probability of each continuation's tokens given the prompt
            (``-inf`` where impossible). Not normalised over the continuations.
        """

    def describe(self) -> dict[str, Any]:
        """Returns what a run records about this model (name, versions, settings)."""
        return {"backend": self.backend}

    def server_counters(self) -> dict[str, dict[str, Any]]:
        """Server name -> running counts (requests, errors, failovers, ...) and state, for server backends.

        A run writes each iteration's change of these counts to ``metrics.jsonl``.
        In-process backends have none.
        """
        return {}

    def abandon_requests(self) -> None:
        """Makes requests in flight fail at once (Ctrl-C or an error elsewhere); a no-op in process."""

    def accept_requests(self) -> None:
        """Undoes :meth:`abandon_requests` once the abandoned requests have returned."""

    def check_prompts(self, prompts: Sequence[str], *, max_tokens: int) -> None:
        """Checks, before anything is sent, that each prompt plus ``max_tokens`` fits the context.

        Backends that know their model's context window (in-process models) override
        it, and ``generate`` and ``score`` check their own requests too; a backend that
        does not (a server) checks nothing here, and the server refuses over-long
        prompts with its own one-line message.

        Raises:
            PromptTooLongError: A prompt does not fit.
        """


_BACKENDS: dict[str, Callable[..., LM]] = {}


def register_backend(name: str) -> Callable[[type[LM]], type[LM]]:
    """Class decorator that makes a backend available as ``model.backend=<name>``."""

    def deco(cls: type[LM]) -> type[LM]:
        _BACKENDS[name] = cls
        cls.backend = name
        return cls

    return deco


def backend_names() -> list[str]:
    """Returns the names of the registered backends, sorted."""
    _import_builtin_backends()
    return sorted(_BACKENDS)


def _import_builtin_backends() -> None:
    # Imported lazily so that `import qdaif` does not import torch. The vLLM backend
    # module imports vllm only when a VLLMLM is built, so it is safe without vllm.
    from qdaif.lm import _fake, _openai, _transformers, _vllm  # noqa: F401


def make_lm(cfg: Any, *, where: str = "model") -> LM:
    """Builds the LM described by a ``model`` config node.

    Args:
        cfg: Mapping with a ``backend`` key; its other keys go to the backend's
            keyword-only constructor.
        where: The config key of ``cfg`` (``model``, ``judge_model``, ``target_model``),
            named in errors.

    Raises:
        ConfigError: The backend is unknown or its settings are wrong.
    """
    _import_builtin_backends()
    settings = dict(cfg)
    name = settings.pop("backend", None)
    if name not in _BACKENDS:
        raise ConfigError(
            f"unknown {where}.backend {name!r}; known backends: {', '.join(sorted(_BACKENDS))}"
        )
    try:
        return _BACKENDS[name](**settings)
    except TypeError as e:
        raise ConfigError(f"bad settings for {where} (backend {name!r}): {e}") from None
