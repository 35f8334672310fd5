"""The commands that read runs: ``plot``, ``report``, ``compare``, ``human-eval`` and ``export`` (argparse flags)."""

from __future__ import annotations

import sys

from qdaif.cli._args import command_parser, existing_dir, finite, folder_arg, number

__all__ = ["plot_command", "report_command", "compare_command", "human_eval_command", "export_command"]


def plot_command(args: list[str]) -> None:
    """``python -m qdaif plot DIR [--out OUT] [--equal-bins] [--animate --frames N]``."""
    from qdaif.plot import animate_run, plot_run
    from qdaif.runs import load_run

    p = command_parser("plot", "Draw a run's archive and progress.")
    p.add_argument("dir", metavar="DIR", help="run directory")
    p.add_argument("--out", help="output folder (default: DIR)")
    p.add_argument("--equal-bins", action="store_true", help="draw every bin with the same width")
    p.add_argument("--animate", action="store_true", help="write the archive's evolution (evolution.gif/.mp4)")
    p.add_argument("--frames", type=number(int, 1), default=40, help="snapshots in the animation (default 40)")
    p.add_argument("--format", choices=("gif", "mp4"), default="gif", help="animation format (mp4 needs ffmpeg)")
    p.add_argument("--fps", type=number(float, 0, strict=True), default=5.0, help="animation frames per second (> 0)")
    a = p.parse_args(args)
    run = load_run(existing_dir(a.dir))
    out = folder_arg(a.out, "--out") or run.path
    if a.animate:
        path = out / f"evolution.{a.format}"
        frames = animate_run(run, path=path, frames=a.frames, equal_bins=a.equal_bins, fps=a.fps)
        print(f"qdaif: wrote {path} ({frames} frames)")
        return
    for path in plot_run(run, out=out, equal_bins=a.equal_bins):
        print(f"qdaif: wrote {path}")


def report_command(args: list[str]) -> None:
    """``python -m qdaif report DIR [--out FILE]``."""
    from qdaif.report import write_report

    p = command_parser("report", "Write a run's self-contained HTML report.")
    p.add_argument("dir", metavar="DIR", help="run directory")
    p.add_argument("--out", help="output file (default: DIR/report.html); an existing folder gets report.html in it")
    a = p.parse_args(args)
    print(f"qdaif: wrote {write_report(existing_dir(a.dir), out=a.out)}")


def compare_command(args: list[str]) -> None:
    """``python -m qdaif compare DIR [DIR ...] --out OUT [--bootstrap N] [--seed S]``."""
    from qdaif.compare import CURVES, SUMMARY_CSV, SUMMARY_MD, compare_runs

    p = command_parser("compare", "Compare runs grouped by (domain, algorithm): curves and a final table.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories, or folders holding runs (e.g. a multirun folder)")
    p.add_argument("--out", required=True, help="output folder for curves.png, summary.md and summary.csv")
    p.add_argument("--bootstrap", type=number(int, 1), default=10000, metavar="N",
                   help="bootstrap resamples per 95%% CI (default 10000)")
    p.add_argument("--seed", type=number(int, 0), default=0, help="seed of the bootstrap (default 0)")
    a = p.parse_args(args)
    for d in a.dirs:
        existing_dir(d)
    folder_arg(a.out, "--out")
    comparison = compare_runs(a.dirs, out=a.out, n_resamples=a.bootstrap, seed=a.seed)
    print(comparison.to_markdown())
    runs = sum(g.n for g in comparison.groups)
    print(f"qdaif: compared {runs} run(s) in {len(comparison.groups)} group(s); "
          f"wrote {CURVES}, {SUMMARY_MD} and {SUMMARY_CSV} in {a.out}")


def human_eval_command(args: list[str]) -> None:
    """``python -m qdaif human-eval export|import ...``."""
    import warnings

    from qdaif import human_eval as he

    p = command_parser("human-eval", "Blinded human evaluation of runs.")
    sub = p.add_subparsers(dest="action", required=True, parser_class=type(p))
    e = sub.add_parser("export", help="sample elites of runs into a blinded rating set")
    e.add_argument("runs", nargs="+", metavar="DIR[=METHOD]", help="run directories; =METHOD names a run's method")
    e.add_argument("--per-cell", type=number(int, 1), default=1, help="texts per filled cell of each run (default 1)")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--seed", type=number(int, 0), default=0, help="seed of the shuffle")
    i = sub.add_parser("import", help="analyse raters' files for an export")
    i.add_argument("out", metavar="OUT", help="the export folder (holding key.json)")
    i.add_argument("ratings", nargs="+", metavar="RATINGS",
                   help="CSV files (qdaif's items.csv filled in, or Label Studio's CSV export) or Label Studio JSON / JSON-MIN exports")
    a = p.parse_args(args)
    if a.action == "export":
        folder_arg(a.out, "--out")
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


def export_command(args: list[str]) -> None:
    """``python -m qdaif export lm-eval DIR --out OUT [options]``."""
    from qdaif.export_lmeval import export_lm_eval

    p = command_parser("export", "Export a run's archive for other tools.")
    sub = p.add_subparsers(dest="format", required=True, parser_class=type(p))
    e = sub.add_parser("lm-eval", help="an lm-evaluation-harness task folder (lm_eval --include_path OUT --tasks NAME)")
    e.add_argument("dir", metavar="DIR", help="run directory")
    e.add_argument("--out", required=True, help="task folder to write (new or empty)")
    e.add_argument("--measure", help="label or categorical measure whose labels are the answers (default: the first)")
    e.add_argument("--min-quality", type=finite, default=None, metavar="X",
                   help="keep texts whose judged quality is >= X")
    e.add_argument("--per-cell", type=number(int, 1), default=1, metavar="N",
                   help="texts per filled cell: the elite, then the next best judged texts (default 1)")
    e.add_argument("--name", metavar="TASK", help="task name (default qdaif_<domain>_<measure>, multitask: qdaif_multitask_<mode>)")
    a = p.parse_args(args)
    result = export_lm_eval(existing_dir(a.dir), out=a.out, measure=a.measure, min_quality=a.min_quality,
                            per_cell=a.per_cell, name=a.name)
    what = (f"measure {result.measure}, choices {', '.join(repr(c) for c in result.choices)}" if result.measure
            else f"{result.left_out} without a checkable sub-task left out")
    print(f"qdaif: wrote task {result.task} ({result.output_type}, {result.docs} documents; {what}) to {result.out}: "
          f"lm_eval --include_path {result.out} --tasks {result.task}")
