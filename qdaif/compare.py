"""Comparing runs: curves and a final table, per (domain, algorithm), with bootstrap CIs.

Runs are read from their plain files (``config.yaml`` and ``metrics.jsonl``) and grouped
by their config's ``domain.name`` and ``algorithm`` (a name, or a node with a ``name``;
``qdaif`` where the config has none). The runs of a group are its seeds. Each estimate is
the mean over a group's runs with a 95 % percentile bootstrap confidence interval of that
mean, drawn from a numpy Generator seeded from ``seed`` and the group's name alone, so a
group's interval does not change when other groups are added to the comparison.

``metrics.jsonl`` holds one row per iteration: a run's archive between two rows is the
archive of the earlier row, so a run's value at ``e`` evaluations is a step function, the
value of its last row with at most ``e`` evaluations (the empty archive before its first).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdaif.errors import ConfigError, RunDirError
from qdaif.human_eval import method_of
from qdaif.runs import read_jsonl
from qdaif.run_dir import CONFIG, METRICS, RunDir, atomic_write

__all__ = [
    "RunMetrics",
    "Estimate",
    "GroupSummary",
    "Comparison",
    "find_runs",
    "load_metrics",
    "bootstrap_ci",
    "summarize",
    "curves_figure",
    "compare_runs",
    "METRICS_COMPARED",
    "CURVES",
    "SUMMARY_MD",
    "SUMMARY_CSV",
]

CURVES = "curves.png"
SUMMARY_MD = "summary.md"
SUMMARY_CSV = "summary.csv"
# Columns of metrics.jsonl in the table, and their value before a run's first row (empty archive).
METRICS_COMPARED = ("qd_score", "coverage", "max_quality")
_EMPTY = {"qd_score": 0.0, "coverage": 0.0, "max_quality": float("nan")}
CONFIDENCE = 0.95
# Most points of a curve; a longer union of evaluation counts is thinned to this many.
MAX_CURVE_POINTS = 400


# --------------------------------------------------------------------- runs
@dataclasses.dataclass(frozen=True)
class RunMetrics:
    """The progress of one run, as ``metrics.jsonl`` records it.

    Attributes:
        path: The run directory.
        domain: ``domain.name`` of its config.
        algorithm: Its config's algorithm name (``qdaif`` where none is given).
        seed: Its config's ``seed`` (None where missing).
        evaluations: Evaluations after each iteration, shape ``(rows,)``, non-decreasing.
        values: Each of :data:`METRICS_COMPARED` after each iteration, shape ``(rows,)``;
            NaN where a row has no value (``max_quality`` of an empty archive).
    """

    path: Path
    domain: str
    algorithm: str
    seed: int | None
    evaluations: np.ndarray
    values: Mapping[str, np.ndarray]

    @property
    def final_evaluations(self) -> int:
        return int(self.evaluations[-1])

    def final(self, metric: str) -> float:
        """The value of ``metric`` in the run's last row."""
        return float(self.values[metric][-1])

    def at(self, metric: str, evaluations: np.ndarray | float) -> np.ndarray:
        """The step-function value of ``metric`` at given evaluation counts.

        Args:
            metric: One of :data:`METRICS_COMPARED`.
            evaluations: Evaluation counts, any shape.

        Returns:
            Array of the shape of ``evaluations``: the value of the last row with at most
            that many evaluations, or the empty archive's value before the first row.
        """
        e = np.asarray(evaluations, dtype=float)
        row = np.searchsorted(self.evaluations, e, side="right") - 1
        padded = np.concatenate([[_EMPTY[metric]], self.values[metric]])
        return padded[row + 1]


def _is_run(path: Path) -> bool:
    return (path / CONFIG).is_file()


def _check_run(path: Path) -> Path:
    if not (path / METRICS).is_file():
        raise RunDirError(f"{str(path)!r} has {CONFIG} but no {METRICS}: the run has not finished an iteration; "
                          "resume it or move it out of the folders being compared")
    return path


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Finds the run directories in ``paths``.

    A path holding ``config.yaml`` is a run; any other folder is searched recursively for
    runs (e.g. a Hydra multirun folder ``runs/multirun/<date_time>`` holding ``0/``,
    ``1/``, ...). Hidden folders (Hydra's ``.hydra/``) and the inside of a run are skipped.

    Args:
        paths: Run directories or folders holding runs.

    Returns:
        The run directories, each once, in the order given (sorted within a folder).

    Raises:
        RunDirError: A path does not exist, holds no run, or a run has no ``metrics.jsonl``.
    """
    found: dict[Path, None] = {}
    for given in paths:
        root = Path(given)
        if not root.is_dir():
            raise RunDirError(f"{str(root)!r} does not exist or is not a folder")
        if _is_run(root):
            found.setdefault(_check_run(root).resolve(), None)
            continue
        here = []
        for folder, subdirs, _ in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            if _is_run(Path(folder)):
                here.append(_check_run(Path(folder)))
                subdirs[:] = []
        if not here:
            raise RunDirError(f"no qdaif runs under {str(root)!r} (no folder holds {CONFIG} and {METRICS}); "
                              "pass run directories or a folder holding them, e.g. runs/multirun/<date_time>")
        for p in sorted(here, key=_natural_key):
            found.setdefault(p.resolve(), None)
    return list(found)


def _natural_key(path: Path) -> list[list[Any]]:
    """Sorts ``.../2_x`` before ``.../10_x`` (Hydra's job numbers): text and numbers alternate in each part."""
    return [[int(x) if k % 2 else x for k, x in enumerate(re.split(r"(\d+)", part))] for part in path.parts]


def load_metrics(path: str | Path) -> RunMetrics:
    """Reads the config and ``metrics.jsonl`` of a run directory.

    Args:
        path: A run directory.

    Returns:
        The run's progress.

    Raises:
        RunDirError: ``config.yaml`` or ``metrics.jsonl`` is missing, unreadable, empty, has
            no ``domain.name``, or rows lack a column or go back in evaluations.
    """
    p = Path(path)
    if not _is_run(p):
        raise RunDirError(f"{str(p)!r} is not a qdaif run directory (no {CONFIG})")
    _check_run(p)
    config = RunDir(p).read_config()
    node = config.get("domain")
    domain = node.get("name") if isinstance(node, Mapping) else None
    if not domain:
        raise RunDirError(f"{p / CONFIG} has no domain.name; is this a qdaif run directory?")
    rows = read_jsonl(p / METRICS)
    if not rows:
        raise RunDirError(f"{p / METRICS} is empty: the run has not finished an iteration; "
                          "resume it or leave it out of the comparison")
    try:
        evaluations = np.array([r["evaluations"] for r in rows], dtype=float)
        values = {m: np.array([np.nan if r[m] is None else r[m] for r in rows], dtype=float)
                  for m in METRICS_COMPARED}
    except KeyError as e:
        raise RunDirError(f"{p / METRICS} rows have no {e.args[0]!r}; it was not written by qdaif") from None
    if np.any(np.diff(evaluations) < 0):
        raise RunDirError(f"{p / METRICS}: evaluations go down between rows; the file is damaged")
    seed = config.get("seed")
    return RunMetrics(path=p, domain=str(domain), algorithm=method_of(config),
                      seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
                      evaluations=evaluations, values=values)


# ---------------------------------------------------------------- bootstrap
def _rng(seed: int, *key: str) -> np.random.Generator:
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in key)])


def bootstrap_ci(values: np.ndarray, *, n_resamples: int, rng: np.random.Generator,
                 confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap confidence interval of the mean over axis 0.

    A column with one value, or with all values equal, has the interval ``[x, x]``; a
    column with a NaN has ``[nan, nan]``.

    Args:
        values: Shape ``(runs,)`` or ``(runs, points)``.
        n_resamples: Bootstrap resamples.
        rng: The generator of the resamples (consumed).
        confidence: Confidence level.

    Returns:
        ``(low, high)``, each of shape ``values.shape[1:]``.

    Raises:
        ConfigError: ``n_resamples`` is below 1.
    """
    from scipy.stats import bootstrap

    if n_resamples < 1:
        raise ConfigError(f"--bootstrap must be at least 1 resample, got {n_resamples}")
    v = np.asarray(values, dtype=float)
    flat = v.reshape(len(v), -1)
    with np.errstate(invalid="ignore"):
        mean = flat.mean(axis=0)
    low, high = mean.copy(), mean.copy()  # the degenerate columns: [x, x], or NaN
    spread = np.all(np.isfinite(flat), axis=0) & (np.ptp(flat, axis=0) > 0)
    if len(flat) > 1 and spread.any():
        ci = bootstrap((flat[:, spread],), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                       method="percentile", axis=0, vectorized=True, rng=rng,
                       batch=max(1, 2_000_000 // (len(flat) * int(spread.sum())))).confidence_interval
        low[spread], high[spread] = ci.low, ci.high
    return low.reshape(v.shape[1:]), high.reshape(v.shape[1:])


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean over runs with its bootstrap confidence interval.

    Attributes:
        mean: The mean.
        low: Lower end of the interval.
        high: Upper end of the interval.
        n: Number of runs.
    """

    mean: float
    low: float
    high: float
    n: int

    def format(self) -> str:
        return f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}]"


def _estimate(values: Sequence[float], *, n_resamples: int, rng: np.random.Generator) -> Estimate:
    v = np.asarray(values, dtype=float)
    low, high = bootstrap_ci(v, n_resamples=n_resamples, rng=rng)
    with np.errstate(invalid="ignore"):
        return Estimate(mean=float(v.mean()), low=float(low), high=float(high), n=len(v))


# -------------------------------------------------------------------- table
@dataclasses.dataclass(frozen=True)
class GroupSummary:
    """The runs of one (domain, algorithm) and their final estimates.

    Attributes:
        domain: The domain's name.
        algorithm: The algorithm's name.
        runs: The group's runs.
        final: Per metric of :data:`METRICS_COMPARED`, the estimate over each run's last row.
        common_evaluations: The largest evaluation count every run of the domain reached
            (the smallest final evaluation count of the domain's runs).
        at_common: Per metric, the estimate over the runs' values at ``common_evaluations``.
    """

    domain: str
    algorithm: str
    runs: tuple[RunMetrics, ...]
    final: Mapping[str, Estimate]
    common_evaluations: int
    at_common: Mapping[str, Estimate]

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list[int | None]:
        return sorted((r.seed for r in self.runs), key=lambda s: (s is None, s or 0))

    @property
    def evaluations(self) -> tuple[int, int]:
        """Smallest and largest final evaluation count of the group's runs."""
        finals = [r.final_evaluations for r in self.runs]
        return min(finals), max(finals)

    @property
    def curve_end(self) -> int:
        """The group's curves end at its smallest final evaluation count."""
        return self.evaluations[0]


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Groups of runs compared, sorted by domain and algorithm.

    Attributes:
        groups: One summary per (domain, algorithm).
        n_resamples: Bootstrap resamples of every interval.
        seed: The bootstrap seed.
    """

    groups: tuple[GroupSummary, ...]
    n_resamples: int
    seed: int

    def rows(self) -> list[dict[str, Any]]:
        """The table as plain rows (the columns of ``summary.csv``)."""
        out = []
        for g in self.groups:
            lo, hi = g.evaluations
            row: dict[str, Any] = {"domain": g.domain, "algorithm": g.algorithm, "runs": g.n,
                                   "seeds": " ".join("?" if s is None else str(s) for s in g.seeds),
                                   "evaluations_min": lo, "evaluations_max": hi}
            for m in METRICS_COMPARED:
                e = g.final[m]
                row.update({f"{m}_mean": e.mean, f"{m}_ci_low": e.low, f"{m}_ci_high": e.high})
            row["N"] = g.common_evaluations
            for m in METRICS_COMPARED:
                e = g.at_common[m]
                row.update({f"{m}@N_mean": e.mean, f"{m}@N_ci_low": e.low, f"{m}@N_ci_high": e.high})
            out.append(row)
        return out

    def to_csv(self) -> str:
        """``summary.csv``: one row per group, full precision."""
        rows = self.rows()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["domain", "algorithm"],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()

    def to_markdown(self) -> str:
        """``summary.md``: the table, how to read it, and the runs compared."""
        header = ["domain", "algorithm", "runs", "evaluations", *METRICS_COMPARED, "N",
                  *(f"{m}@N" for m in METRICS_COMPARED)]
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for g in self.groups:
            lo, hi = g.evaluations
            seeds = ", ".join("?" if s is None else str(s) for s in g.seeds)
            cells = [_escape(g.domain), _escape(g.algorithm), f"n={g.n}: seed{'s' if g.n > 1 else ''} {seeds}",
                     str(lo) if lo == hi else f"{lo}-{hi}", *(g.final[m].format() for m in METRICS_COMPARED),
                     str(g.common_evaluations), *(g.at_common[m].format() for m in METRICS_COMPARED)]
            lines.append("| " + " | ".join(cells) + " |")
        notes = [
            "",
            f"Each value: mean over the group's runs [{CONFIDENCE:.0%} percentile bootstrap CI of the mean, "
            f"{self.n_resamples} resamples, seed {self.seed}].",
            "`qd_score`, `coverage`, `max_quality`: each run's last row of metrics.jsonl, after its own budget "
            "(`evaluations`).",
            "`N`: the largest evaluation count that every run of the domain reached; the `@N` columns hold each "
            "run's values after its last iteration with at most N evaluations. Compare groups on these when "
            "their budgets differ.",
        ]
        if any(g.n == 1 for g in self.groups):
            notes.append("n=1: a single run; its CI is [x, x] and says nothing about the spread across seeds.")
        runs = ["", "## Runs", "", "| domain | algorithm | seed | evaluations | run directory |",
                "| --- | --- | --- | --- | --- |"]
        for g in self.groups:
            for r in sorted(g.runs, key=lambda r: (r.seed is None, r.seed or 0, str(r.path))):
                runs.append(f"| {_escape(g.domain)} | {_escape(g.algorithm)} | {'?' if r.seed is None else r.seed} "
                            f"| {r.final_evaluations} | {_escape(_shown(r.path))} |")
        return "\n".join(["# Comparison", "", *lines, *notes, *runs]) + "\n"


def summarize(runs: Sequence[RunMetrics], *, n_resamples: int = 10_000, seed: int = 0) -> Comparison:
    """Groups runs by (domain, algorithm) and estimates their final metrics.

    Args:
        runs: Loaded runs (see :func:`load_metrics`).
        n_resamples: Bootstrap resamples per interval.
        seed: Seed of the bootstrap generators.

    Returns:
        The comparison, groups sorted by domain and algorithm.

    Raises:
        RunDirError: ``runs`` is empty.
        ConfigError: ``n_resamples`` is below 1.
    """
    if not runs:
        raise RunDirError("no runs to compare; pass run directories or a folder holding them")
    if n_resamples < 1:
        raise ConfigError(f"--bootstrap must be at least 1 resample, got {n_resamples}")
    by_group: dict[tuple[str, str], list[RunMetrics]] = {}
    for r in runs:
        by_group.setdefault((r.domain, r.algorithm), []).append(r)
    common = {}
    for r in runs:
        common[r.domain] = min(common.get(r.domain, r.final_evaluations), r.final_evaluations)
    groups = []
    for (domain, algorithm), members in sorted(by_group.items()):
        n_common = common[domain]
        final = {m: _estimate([r.final(m) for r in members], n_resamples=n_resamples,
                              rng=_rng(seed, domain, algorithm, m, "final")) for m in METRICS_COMPARED}
        at = {m: _estimate([float(r.at(m, n_common)) for r in members], n_resamples=n_resamples,
                           rng=_rng(seed, domain, algorithm, m, "common")) for m in METRICS_COMPARED}
        groups.append(GroupSummary(domain=domain, algorithm=algorithm, runs=tuple(members), final=final,
                                   common_evaluations=n_common, at_common=at))
    return Comparison(groups=tuple(groups), n_resamples=n_resamples, seed=seed)


# ------------------------------------------------------------------- curves
def _grid(group: GroupSummary) -> np.ndarray:
    """Evaluation counts where the group's mean curve can change, from 0 to its curve end."""
    end = group.curve_end
    points = np.unique(np.concatenate([[0.0], *(r.evaluations for r in group.runs)]))
    points = points[points <= end]
    if len(points) > MAX_CURVE_POINTS:
        points = np.unique(np.round(np.linspace(0, end, MAX_CURVE_POINTS)))
    return points


_CURVE_METRICS = (("qd_score", "QD score", 1.0), ("coverage", "coverage (%)", 100.0))


def curves_figure(comparison: Comparison):
    """Draws QD score and coverage against evaluations, one line per group.

    Each line is the mean over the group's runs of their step curves, from 0 to the
    group's smallest final evaluation count, shaded with the pointwise 95 % bootstrap CI.
    A dotted line marks a domain's ``N`` where some group goes beyond it.

    Args:
        comparison: See :func:`summarize`.

    Returns:
        A ``matplotlib.figure.Figure`` with one row of two axes (QD score, coverage) per
        domain (not registered with pyplot; no need to close it).
    """
    import matplotlib
    from matplotlib.figure import Figure

    domains = sorted({g.domain for g in comparison.groups})
    algorithms = sorted({g.algorithm for g in comparison.groups})
    colours = matplotlib.colormaps["tab10"].colors
    colour = {a: colours[k % len(colours)] for k, a in enumerate(algorithms)}
    fig = Figure(figsize=(10, 0.6 + 3.2 * len(domains)), layout="constrained")
    axs = fig.subplots(len(domains), 2, squeeze=False)
    for row, domain in zip(axs, domains):
        groups = [g for g in comparison.groups if g.domain == domain]
        for g in groups:
            x = _grid(g)
            for ax, (metric, _, scale) in zip(row, _CURVE_METRICS):
                y = np.stack([r.at(metric, x) for r in g.runs]) * scale
                low, high = bootstrap_ci(y, n_resamples=comparison.n_resamples,
                                         rng=_rng(comparison.seed, domain, g.algorithm, metric, "curve"))
                ax.step(x, y.mean(axis=0), where="post", color=colour[g.algorithm], linewidth=1.5,
                        label=f"{g.algorithm} (n={g.n})")
                ax.fill_between(x, low, high, step="post", color=colour[g.algorithm], alpha=0.2, linewidth=0)
        n_common = groups[0].common_evaluations
        for ax, (_, label, _) in zip(row, _CURVE_METRICS):
            if any(g.curve_end > n_common for g in groups):
                ax.axvline(n_common, color="0.4", linestyle=":", linewidth=1, label=f"N={n_common} (all reached)")
            ax.set_title(f"{domain}: {label.split(' (')[0]}", fontsize=10)
            ax.set_xlabel("evaluations (generated candidates)")
            ax.set_ylabel(label)
            ax.set_xlim(left=0)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8, loc="best")
    fig.suptitle(f"mean over seeds; shaded: {CONFIDENCE:.0%} bootstrap CI of the mean", fontsize=10)
    return fig


# ---------------------------------------------------------------- all of it
def compare_runs(paths: Iterable[str | Path], *, out: str | Path, n_resamples: int = 10_000,
                 seed: int = 0) -> Comparison:
    """Compares runs and writes ``curves.png``, ``summary.md`` and ``summary.csv`` to ``out``.

    Args:
        paths: Run directories or folders holding runs (see :func:`find_runs`).
        out: Output folder (created if missing).
        n_resamples: Bootstrap resamples per interval.
        seed: Seed of the bootstrap.

    Returns:
        The comparison written.

    Raises:
        RunDirError: No runs found, or a run is incomplete or damaged.
        ConfigError: ``n_resamples`` is below 1.
    """
    if n_resamples < 1:
        raise ConfigError(f"--bootstrap must be at least 1 resample, got {n_resamples}")
    runs = [load_metrics(p) for p in find_runs(paths)]
    comparison = summarize(runs, n_resamples=n_resamples, seed=seed)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    curves_figure(comparison).savefig(folder / CURVES, dpi=120)
    atomic_write(folder / SUMMARY_MD, comparison.to_markdown().encode("utf-8"))
    atomic_write(folder / SUMMARY_CSV, comparison.to_csv().encode("utf-8"))
    return comparison


def _shown(path: Path) -> str:
    """A run's path for tables: relative to the working directory when it lies below it."""
    try:
        return str(Path(path).relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
