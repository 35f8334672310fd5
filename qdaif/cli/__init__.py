"""Command line: ``python -m qdaif <command> ...`` (also the ``qdaif`` script).

One argument rule: ``run`` takes Hydra overrides (``key=value``; it composes
``configs/``). Every other command takes argparse flags (``--out DIR``); those that load
a model (``judge``, the rewrites plugin's ``tta``) also take trailing ``key=value``
arguments, which are Hydra overrides of the model and domain config.

Modules, one per command group: :mod:`qdaif.cli.run` (start, resume, sweep),
:mod:`qdaif.cli.judge`, :mod:`qdaif.cli.analysis` (plot, report, compare, human-eval,
export), :mod:`qdaif.cli._compose` (Hydra composition and validation) and
:mod:`qdaif.cli._args` (argument helpers, also for plugins' commands). Plugins register
their own commands (entry-point group :data:`COMMAND_GROUP`): the engine's CLI knows no
particular plugin.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from qdaif.cli._args import command_parser, existing_dir, fail, finite, folder_arg, number, override, parse_int
from qdaif.cli._compose import (  # noqa: F401 - re-exported: tests and benchmarks import them from qdaif.cli
                                OPTIONAL_MODELS, SWEEP_EXTRA_LAUNCHERS, _explain_composition_error,
                                _register_resolvers, allow_code, apply_domain_file, apply_overrides, compose_config,
                                load_domain_file, model_choices, normalise_overrides, package_versions, parse_override,
                                run_dir_of, safe_dir_name, validate_run_config)
from qdaif.cli._models import MODEL_INFOS, RunModels, build_models, build_run_models, model_infos
from qdaif.cli.analysis import compare_command, export_command, human_eval_command, plot_command, report_command
from qdaif.cli.judge import judge_command, read_texts
from qdaif.cli.run import RESUMABLE_KEYS, resume_run, run_command, start_run
from qdaif.errors import QDAIFError

__all__ = ["main", "compose_config", "validate_run_config", "start_run", "resume_run", "run_dir_of", "safe_dir_name",
           "build_models", "build_run_models", "RunModels", "MODEL_INFOS", "normalise_overrides", "read_texts", "plugin_commands", "COMMANDS", "COMMAND_GROUP", "RESUMABLE_KEYS", "USAGE",
           # the helpers a plugin's command uses to behave like the engine's commands
           "fail", "parse_int", "command_parser", "number", "finite", "override", "folder_arg", "existing_dir",
           "apply_overrides", "parse_override"]

USAGE = """usage: python -m qdaif <command> ...

`run` takes Hydra overrides (key=value). Every other command takes flags (python -m qdaif COMMAND --help);
judge and tta also take trailing key=value Hydra overrides of the model and domain config.

commands:
  run      search: python -m qdaif run domain=opinions iterations=30 batch_size=16 seed=0
           resume: python -m qdaif run resume=runs/opinions/<date_time> [iterations=M]
           sweep:  python -m qdaif run -m seed=0,1,2
                   in parallel: python -m qdaif run -m hydra/launcher=joblib hydra.launcher.n_jobs=4 seed=0,1,2,3
                   on Slurm: python -m qdaif run -m hydra/launcher=slurm hydra.launcher.partition=P seed=0,1,2
  judge    python -m qdaif judge --input texts.jsonl [--output scores.jsonl] [--chunk 64] [domain=opinions ...]
           evaluate the judges: python -m qdaif judge --labels labelled.jsonl|.csv [--output report.json]
             [--bootstrap 1000] [--seed 0] [--positive JUDGE:CLASS] [--split NAME] [domain=opinions ...]
  plot     python -m qdaif plot DIR [--out OUT] [--equal-bins] [--animate --frames N]
  report   python -m qdaif report DIR [--out FILE]
  compare  python -m qdaif compare DIR [DIR ...] --out OUT [--bootstrap N] [--seed S]
  human-eval
           python -m qdaif human-eval export DIR[=METHOD] [DIR ...] --per-cell K --out OUT
           python -m qdaif human-eval import OUT RATINGS [RATINGS ...]
  export   python -m qdaif export lm-eval DIR --out OUT [--measure NAME] [--min-quality X] [--per-cell N] [--name TASK]
{plugins}
Any key of configs/config.yaml can be overridden (e.g. model=hf model.name=<folder>,
hydra.run.dir=DIR). Runs are written to runs/<domain>/<date_time>/.
"""

COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "run": run_command, "judge": judge_command, "plot": plot_command, "report": report_command,
    "human-eval": human_eval_command, "compare": compare_command, "export": export_command,
}
#: Entry-point group in which plugins register their own commands (``name = "module:function"``).
COMMAND_GROUP = "qdaif.commands"


def plugin_commands() -> dict[str, str]:
    """Commands registered by installed plugins: name -> ``module:function`` (taking the argument list)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=COMMAND_GROUP) if ep.name not in COMMANDS}


def _plugin_command(target: str) -> Callable[[list[str]], None]:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func or "command")


def _usage() -> str:
    extra = plugin_commands()
    lines = "".join(f"  {name:<8} a plugin's command: python -m qdaif {name} --help\n" for name in extra)
    return USAGE.format(plugins=lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m qdaif`` and the ``qdaif`` script."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return
    command, rest = args[0], args[1:]
    handler = COMMANDS.get(command)
    if handler is None:
        extra = plugin_commands()
        if command not in extra:
            fail(f"unknown command {command!r}; commands: {', '.join([*COMMANDS, *extra])}")
        handler = _plugin_command(extra[command])
    if command == "run" and any(a in ("-h", "--help") for a in rest):
        print(_usage())  # the other commands have their own argparse help
        return
    try:
        handler(rest)
    except QDAIFError as e:
        fail(str(e))
