"""``python -m qdaif run``: start, resume or sweep runs (Hydra overrides, ``key=value``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qdaif.cli._args import fail
from qdaif.cli._compose import (_register_resolvers, apply_domain_file, compose_config, normalise_overrides,
                                package_versions, parse_override, run_dir_of, validate_run_config)
from qdaif.cli._models import MODEL_INFOS, RunModels, build_run_models, model_infos
from qdaif.domain import configs_dir
from qdaif.errors import ConfigError, QDAIFError

if TYPE_CHECKING:
    from qdaif.domain import Domain
    from qdaif.plugin import DomainPlugin

__all__ = ["start_run", "resume_run", "run_command", "RESUMABLE_KEYS"]

# Keys that may change when a run is resumed; everything else is the run's own config.
RESUMABLE_KEYS = {"iterations", "progress", "plot_every", "cache", "allow_code", "pipeline"}


def _execute(search, cfg: Any, run_path: Path) -> None:
    from qdaif.search import Interrupted

    try:
        search.run(int(cfg.iterations), progress=bool(cfg.progress))
    except Interrupted as e:
        print(f"qdaif: {e}; resume with: python -m qdaif run resume={run_path}", file=sys.stderr)
        sys.exit(130)
    except QDAIFError as e:
        # e.g. an inference server that keeps failing, a full disk: the last finished iteration is on disk.
        fail(f"{e}; the run is saved after iteration {search.state.iteration}: "
             f"resume with: python -m qdaif run resume={run_path}")
    s = search.state
    stats = s.archive.stats
    print(
        f"qdaif: {s.iteration} iterations, {s.evaluations} evaluations: QD score {float(stats.qd_score):.3f}, "
        f"coverage {float(stats.coverage):.0%}, best quality "
        f"{float(stats.obj_max) if stats.obj_max is not None else float('nan'):.3f}; run directory {run_path}"
    )


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


def _search(cfg: Any, *, models: RunModels, plugin: "DomainPlugin | None", run_dir, state):
    """The run's :class:`qdaif.search.Search`, sharing the run's one plugin with its algorithm."""
    from qdaif.plot import draw_archive
    from qdaif.search import Search

    return Search(domain=models.domain, lm=models.lm, judge_lm=models.judge_lm, target_lm=models.target_lm,
                  run_dir=run_dir, state=state, plugin=plugin,
                  batch_size=int(cfg.batch_size), seed=int(cfg.seed), plot_every=int(cfg.plot_every),
                  refresh=draw_archive, pipeline=str(cfg.get("pipeline", "auto")))


def _algorithm(cfg: Any, *, domain: "Domain", plugin: "DomainPlugin | None"):
    from qdaif.algorithms import make_algorithm

    return make_algorithm(cfg.algorithm, domain=domain, plugin=plugin, init_evaluations=int(cfg.init_evaluations),
                          min_init_cells=int(cfg.min_init_cells))


def start_run(cfg: Any, run_path: str | Path, *, dir_key: str = "hydra.run.dir",
              checked: tuple["Domain", "DomainPlugin | None"] | None = None) -> None:
    """Starts a new run in ``run_path`` with a composed config.

    Args:
        cfg: The composed run config.
        run_path: The run directory (new or empty).
        dir_key: The setting that chose ``run_path``, named when it already holds a run.
        checked: What :func:`validate_run_config` returned for ``cfg``, when the caller
            already ran it (the plugin is then not built again).

    Raises:
        ConfigError: A bad value in ``cfg``.
        RunDirError: ``run_path`` is in use by another process or already holds a run.
    """
    from omegaconf import OmegaConf

    from qdaif.search import SearchState

    domain, plugin = checked or validate_run_config(cfg)
    run_dir = _claim_new_run_dir(run_path, dir_key=dir_key)
    models = build_run_models(cfg, domain=domain)
    record = OmegaConf.to_container(cfg, resolve=True)
    record.update(model_infos(models))
    record["versions"] = package_versions()
    run_dir.write_config(record)
    state = SearchState.new(domain, int(cfg.seed), _algorithm(cfg, domain=domain, plugin=plugin))
    search = _search(cfg, models=models, plugin=plugin, run_dir=run_dir, state=state)
    _execute(search, cfg, run_dir.path)


def _resume_override(text: str) -> tuple[str, Any]:
    """``key=value`` of a resumed run, typed as on the command line (``5`` an int, ``false`` a bool).

    Raises:
        ConfigError: Not one of :data:`RESUMABLE_KEYS`, or a value of the wrong type.
    """
    key, sep, raw = text.partition("=")
    if not sep or key not in RESUMABLE_KEYS:
        raise ConfigError(f"cannot change {key!r} when resuming: a resumed run keeps its own config "
                          f"(only {', '.join(sorted(RESUMABLE_KEYS))} may be given)")
    _, value = parse_override(text)
    if key in ("iterations", "plot_every") and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} must be an integer, got {raw!r}")
    if key == "progress" and not isinstance(value, bool):
        raise ConfigError(f"progress must be true or false, got {raw!r}")
    if key == "cache" and value is not None and not isinstance(value, str):
        value = raw
    return key, value


def _resumed_config(run_dir, overrides: Sequence[str]) -> tuple[dict[str, Any], Any]:
    """The run's recorded config with the resume overrides: (record to write back, config)."""
    from omegaconf import OmegaConf

    record = run_dir.read_config()
    record["allow_code"] = False  # trust is the user's to give again, never read from a run directory
    for text in overrides:
        key, value = _resume_override(text)
        record[key] = value
    # The recorded domain is the one the run used, even if its domain_file changed since.
    return record, OmegaConf.create({k: v for k, v in record.items()
                                     if k not in (*MODEL_INFOS, "versions")})


def resume_run(path: str | Path, overrides: Sequence[str] = ()) -> None:
    """Continues the run in ``path`` with its own config; only :data:`RESUMABLE_KEYS` may change.

    The run directory is locked first; temp files of an interrupted write are removed.

    Raises:
        RunDirError: ``path`` is not a resumable run, or another process writes it.
        ConfigError: An override other than :data:`RESUMABLE_KEYS`, or of the wrong type.
    """
    from qdaif.run_dir import ELITES, RunDir
    from qdaif.search import SearchState

    run_dir = RunDir.existing(path)
    run_dir.lock()
    run_dir.remove_orphans()
    record, cfg = _resumed_config(run_dir, overrides)
    domain, plugin = validate_run_config(cfg)
    algorithm = _algorithm(cfg, domain=domain, plugin=plugin)
    if run_dir.has_checkpoint():
        state = SearchState.from_checkpoint(run_dir.load_checkpoint(), domain=domain, algorithm=algorithm)
    else:  # stopped before its first checkpoint (RunDir.existing checked that nothing was recorded)
        state = SearchState.new(domain, int(cfg.seed), algorithm)
    if int(cfg.iterations) < state.iteration:
        raise ConfigError(f"the run already has {state.iteration} iterations; pass iterations >= {state.iteration}")
    models = build_run_models(cfg, domain=domain)  # the recorded model, judge_model and target_model
    record["versions"] = package_versions()
    run_dir.write_config(record)
    search = _search(cfg, models=models, plugin=plugin, run_dir=run_dir, state=state)
    run_dir.write_jsonl(ELITES, search.elites())  # a kill may have left it one iteration ahead
    print(f"qdaif: resuming {run_dir.path} at iteration {state.iteration} of {cfg.iterations}", file=sys.stderr)
    _execute(search, cfg, run_dir.path)


# ------------------------------------------------------------- Hydra entry
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


def _hydra_task(checked: tuple["Domain", "DomainPlugin | None"] | None = None):
    """Hydra's task function; ``checked``: the single run's config, already validated in this process."""

    def task(cfg) -> None:
        from hydra.core.hydra_config import HydraConfig

        from qdaif.run_dir import RunDir

        output_dir = HydraConfig.get().runtime.output_dir
        multirun = HydraConfig.get().mode.name == "MULTIRUN"
        try:
            apply_domain_file(cfg)
            start_run(cfg, output_dir, dir_key="hydra.sweep.dir" if multirun else "hydra.run.dir",
                      checked=None if multirun else checked)
        except QDAIFError as e:
            fail(str(e))
        finally:
            if multirun:
                # A launcher may run several jobs in one process, one after another (basic: all of
                # them; joblib: each worker runs several): each releases its directory when done.
                RunDir(output_dir).unlock()

    return task


def _hydra_quote(value: str) -> str:
    """``value`` as a quoted Hydra override value (spaces, quotes and ``=`` kept literally)."""
    return "'" + value.replace("'", "\\'") + "'"


def _run_single(args: list[str], overrides: list[str]) -> None:
    """A single run: validated and its directory locked before Hydra writes its .hydra/ and log there."""
    import hydra

    checked = validate_run_config(compose_config(overrides, validate=False))
    run_path = run_dir_of(overrides)
    _claim_new_run_dir(run_path)
    sys.argv = [sys.argv[0], *[a for a in args if not a.startswith("hydra.run.dir=")],
                f"hydra.run.dir={_hydra_quote(run_path)}"]
    hydra.main(config_path=str(configs_dir()), config_name="config", version_base="1.3")(_hydra_task(checked))()


def _run_sweep(args: list[str], overrides: list[str]) -> None:
    """A sweep: every job's config is validated before Hydra starts any job."""
    import os

    import hydra

    for combination in _sweep_combinations(overrides):
        compose_config(combination)
    sys.argv = [sys.argv[0], *args]
    # A job of a sweep that fails ends its process with one "qdaif: error:" line. The basic and joblib
    # launchers pass that exit on; submitit's reports the job's stderr in an exception, which Hydra
    # would print as a traceback: with HYDRA_FULL_ERROR it reaches us, and the job's line is shown.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        hydra.main(config_path=str(configs_dir()), config_name="config", version_base="1.3")(_hydra_task())()
    except Exception as e:  # noqa: BLE001 - only a failed job's own line is shortened; anything else is raised
        lines = [line for line in str(e).splitlines() if line.startswith("qdaif: error: ")]
        if not lines:
            raise
        print(lines[-1], file=sys.stderr)
        sys.exit(2)


def run_command(args: list[str]) -> None:
    """``python -m qdaif run [-m] [key=value ...]``: a run, a resumed run (``resume=DIR``) or a sweep."""
    args = normalise_overrides(args)
    overrides = [a for a in args if not a.startswith("-")]
    resume = [a for a in overrides if a.startswith("resume=")]
    if resume:
        path = resume[-1].split("=", 1)[1]
        if not path or path == "null":
            fail("resume= needs the path of a run directory")
        resume_run(path, [a for a in overrides if not a.startswith("resume=")])
        return
    _register_resolvers()
    if any(a in ("-m", "--multirun") for a in args):
        _run_sweep(args, overrides)
    else:
        _run_single(args, overrides)
