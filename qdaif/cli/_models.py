"""The models of a run: generator, judge and target, each model config built once."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qdaif.cli._compose import allow_code

if TYPE_CHECKING:
    from qdaif.domain import Domain

__all__ = ["RunModels", "build_run_models", "build_models", "model_infos", "MODEL_INFOS"]

#: Keys of a run's config.yaml that describe the built models (not config: left out when a run is resumed).
MODEL_INFOS = ("model_info", "judge_model_info", "target_model_info")


@dataclasses.dataclass(frozen=True)
class RunModels:
    """The models of a run: ``judge_lm`` and ``target_lm`` are ``lm`` itself unless configured apart."""

    domain: Any
    lm: Any
    judge_lm: Any
    target_lm: Any


def build_run_models(cfg: Any, *, domain: "Domain | None" = None, target: bool = True) -> RunModels:
    """Builds the run's models, each model config loaded once.

    ``judge_model`` and ``target_model`` are the generator itself unless set; a target
    whose config equals ``model`` (or ``judge_model``) reuses that object. With
    ``cache``, each distinct model is wrapped once, so shared objects stay shared.

    Args:
        cfg: The run config.
        domain: The run's domain when already built (else it is built from ``cfg.domain``).
        target: Also build ``target_model`` (else ``target_lm`` is ``lm``).

    Raises:
        ConfigError: A model's settings are wrong (naming its key), or a seeded-init
            prompt is longer than the model's context.
    """
    from qdaif.domain import domain_from_config
    from qdaif.lm import make_lm

    domain = domain or domain_from_config(cfg.domain, allow_code=allow_code(cfg))
    lm = make_lm(cfg.model, where="model")
    judge_lm = make_lm(cfg.judge_model, where="judge_model") if cfg.get("judge_model") is not None else lm
    target_lm = _target_lm(cfg, lm, judge_lm) if target else lm
    if not domain.plugin:  # the longest seeded-init prompt must fit the model, before anything is sent
        longest = sorted(domain.seeds, key=len, reverse=True)[: domain.lmx.num_examples]
        lm.check_prompts([domain.lmx.render(longest)], max_tokens=domain.generation.max_tokens)
    if cfg.get("cache"):
        from qdaif.lm._cache import CachingLM

        path, wrapped = Path(str(cfg.cache)).expanduser(), {}
        for m in (lm, judge_lm, target_lm):
            wrapped.setdefault(id(m), CachingLM(lm=m, path=path))
        lm, judge_lm, target_lm = (wrapped[id(m)] for m in (lm, judge_lm, target_lm))
    return RunModels(domain=domain, lm=lm, judge_lm=judge_lm, target_lm=target_lm)


def _target_lm(cfg: Any, lm: Any, judge_lm: Any) -> Any:
    """``target_model``'s LM: the generator when unset, an already built model when its config is the same."""
    from omegaconf import OmegaConf

    from qdaif.lm import make_lm

    node = cfg.get("target_model")
    if node is None:
        return lm
    plain = OmegaConf.to_container(node, resolve=True)
    if plain == OmegaConf.to_container(cfg.model, resolve=True):
        return lm
    if cfg.get("judge_model") is not None and plain == OmegaConf.to_container(cfg.judge_model, resolve=True):
        return judge_lm
    return make_lm(node, where="target_model")


def build_models(cfg: Any, *, domain: "Domain | None" = None):
    """Returns (domain, generator LM, judge LM) of a config, for commands without a target model.

    Raises:
        ConfigError: As :func:`build_run_models`.
    """
    m = build_run_models(cfg, domain=domain, target=False)
    return m.domain, m.lm, m.judge_lm


def model_infos(models: RunModels) -> dict[str, Any]:
    """``model_info``, plus ``judge_model_info``/``target_model_info`` for models other than the generator."""
    out = {"model_info": models.lm.describe()}
    if models.judge_lm is not models.lm:
        out["judge_model_info"] = models.judge_lm.describe()
    if models.target_lm is not models.lm:
        out["target_model_info"] = models.target_lm.describe()
    return out
