"""Pictures of a run: the archive heatmap, the search's progress, and the archive's evolution.

Everything here is drawn from what :mod:`qdaif.runs` reads from a run directory's plain
files, never from the checkpoint. matplotlib is imported lazily and only its file
backends are used.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdaif.errors import ConfigError, RunDirError
from qdaif.run_dir import HEATMAP, HISTORY, METRICS, atomic_write
from qdaif.runs import Axis, RunData, as_run, drawable

__all__ = ["draw_archive", "heatmap_figure", "progress_figure", "snapshots", "plot_run", "animate_run", "plot_heatmap", "PROGRESS"]

PROGRESS = "progress.png"
EMPTY_COLOUR = "#e6e6e6"


def _colormap():
    import matplotlib

    return matplotlib.colormaps["viridis"].with_extremes(bad=EMPTY_COLOUR)


def _colour_range(values: np.ndarray) -> tuple[float, float]:
    """Qualities are probabilities in [0, 1]; widen the scale only for a judge that leaves it."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return 0.0, 1.0
    return min(0.0, float(finite.min())), max(1.0, float(finite.max()))


def _coords(axis: Axis, equal_bins: bool) -> np.ndarray:
    if axis.categorical or equal_bins:
        return np.arange(axis.bins + 1, dtype=float)
    return np.asarray(axis.edges, dtype=float)


def _format_axis(ax, which: str, axis: Axis, equal_bins: bool) -> None:
    from matplotlib.ticker import FixedLocator

    set_ticks, set_lim, set_label = (
        (ax.set_xticks, ax.set_xlim, ax.set_xlabel) if which == "x" else (ax.set_yticks, ax.set_ylim, ax.set_ylabel)
    )
    coords = _coords(axis, equal_bins)
    set_lim(coords[0], coords[-1])
    set_label(axis.label)
    if axis.categorical:
        names = list(axis.categories)
        turn = which == "x" and (axis.bins > 6 or max(map(len, names)) > 10)
        set_ticks(np.arange(axis.bins) + 0.5, names, fontsize=8, **({"rotation": 45, "ha": "right"} if turn else {}))
    elif equal_bins:
        set_ticks(coords, axis.edge_labels(), rotation=90 if which == "x" and axis.bins > 10 else 0, fontsize=7)
    else:  # to scale: ordinary numeric ticks, bin boundaries as minor ticks
        (ax.xaxis if which == "x" else ax.yaxis).set_minor_locator(FixedLocator(coords))
        ax.tick_params(axis=which, which="minor", length=3)


def _draw_grid(ax, grid: np.ndarray, axes: Sequence[Axis], *, equal_bins: bool, vmin: float, vmax: float):
    """Draws ``grid`` (shape ``dims``) on ``ax``; returns the QuadMesh."""
    one_d = len(axes) == 1
    x = _coords(axes[0], equal_bins)
    y = np.array([0.0, 1.0]) if one_d else _coords(axes[1], equal_bins)
    c = grid[None, :] if one_d else grid.T  # pcolormesh wants (rows = y, columns = x)
    mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(c), cmap=_colormap(), vmin=vmin, vmax=vmax,
                         edgecolors="white", linewidth=0.3 if not equal_bins else 0.6)
    _format_axis(ax, "x", axes[0], equal_bins)
    if one_d:
        ax.set_yticks([])
        ax.set_ylim(0, 1)
    else:
        _format_axis(ax, "y", axes[1], equal_bins)
    return mesh


def _new_figure(axes: Sequence[Axis]):
    from matplotlib.figure import Figure

    one_d = len(axes) == 1
    fig = Figure(figsize=(10, 2.6) if one_d else (8, 6.5), layout="constrained")
    return fig, fig.add_subplot()


def _check_drawable(axes: Sequence[Axis]) -> None:
    if len(axes) > 2:
        raise ConfigError(f"heatmaps are drawn for 1 or 2 measures; this run has {len(axes)} "
                          f"({', '.join(a.name for a in axes)})")


def _stats_text(qd: float, filled: int, cells: int) -> str:
    return f"QD score {qd:.2f}, coverage {filled / cells:.0%} ({filled}/{cells} cells)"


def heatmap_figure(run: RunData, *, equal_bins: bool = False, title: str | None = None):
    """Draws the archive of ``elites.jsonl``: 1D as a strip, 2D as a grid.

    Numeric axes are drawn to scale (a bin's width is its share of the measure's range)
    unless ``equal_bins``, which gives each bin the same width and labels the ticks
    with the true edges. Categorical axes are labelled with the category names.

    Args:
        run: A loaded run.
        equal_bins: Draw every bin with the same width.
        title: Figure title (default: domain, QD score and coverage).

    Returns:
        A ``matplotlib.figure.Figure`` (not registered with pyplot; no need to close it).

    A run with more than two measures is drawn by :func:`drawable`: the best elite over
    the leading measures in each cell of the last two.
    """
    full, run = run, drawable(run)
    grid = run.grid()
    fig, ax = _new_figure(run.axes)
    vmin, vmax = _colour_range(grid)
    mesh = _draw_grid(ax, grid, run.axes, equal_bins=equal_bins, vmin=vmin, vmax=vmax)
    s = run.summary()
    if full is not run:
        s = full.summary()
        over = ", ".join(run.config["projected_over"])
        default = f"{run.domain_name}: {_stats_text(s['qd_score'], s['num_elites'], full.cells)}\nbest over {over}"
    else:
        default = f"{run.domain_name}: {_stats_text(s['qd_score'], s['num_elites'], run.cells)}"
    ax.set_title(title or default, fontsize=10)
    fig.colorbar(mesh, ax=ax, label="elite quality (grey: empty)", fraction=0.05, pad=0.02)
    return fig


def progress_figure(run: RunData):
    """Draws QD score, coverage and best quality against evaluations from ``metrics.jsonl``.

    Args:
        run: A loaded run.

    Returns:
        A ``matplotlib.figure.Figure`` with three stacked axes sharing the x axis.

    Raises:
        RunDirError: ``metrics.jsonl`` is empty or lacks a column.
    """
    from matplotlib.figure import Figure

    if not run.metrics:
        raise RunDirError(f"{run.path / METRICS} is empty or missing: no progress to draw yet")
    try:
        x = np.array([m["evaluations"] for m in run.metrics], dtype=float)
        series = [
            ("QD score", np.array([m["qd_score"] for m in run.metrics], dtype=float)),
            ("coverage (%)", 100 * np.array([m["coverage"] for m in run.metrics], dtype=float)),
            ("best quality", np.array([np.nan if m["max_quality"] is None else m["max_quality"]
                                       for m in run.metrics], dtype=float)),
        ]
    except KeyError as e:
        raise RunDirError(f"{run.path / METRICS} rows have no {e.args[0]!r}; it was not written by qdaif") from None
    fig = Figure(figsize=(7, 6.5), layout="constrained")
    axs = fig.subplots(3, 1, sharex=True)
    for ax, (label, y) in zip(axs, series):
        ax.plot(x, y, marker="o", markersize=2.5, linewidth=1.2, color="#31688e")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axs[1].set_ylim(0, 104)
    axs[-1].set_xlabel("evaluations (generated candidates)")
    axs[0].set_title(f"{run.domain_name}: search progress over {len(run.metrics)} iterations", fontsize=10)
    return fig


def snapshots(run: RunData, frames: int) -> list[tuple[int, int, np.ndarray]]:
    """Replays ``history.jsonl`` into ``frames`` archive snapshots, evenly spaced in candidates.

    The archive after the first ``n`` judged candidates holds, per cell, the best quality
    among them (MAP-Elites keeps the better text), so the last snapshot equals
    ``elites.jsonl``.

    Args:
        run: A loaded run.
        frames: Number of snapshots, 1 to the number of judged candidates.

    Returns:
        ``frames`` tuples ``(candidates seen, iteration, grid of shape dims)``.

    Raises:
        RunDirError: ``history.jsonl`` is empty.
        ConfigError: ``frames`` is out of range.
    """
    history = sorted(run.history, key=lambda h: (h["iteration"], h["id"]))
    if not history:
        raise RunDirError(f"{run.path / HISTORY} is empty or missing: nothing to animate")
    if not 1 <= frames <= len(history):
        raise ConfigError(f"--frames must be between 1 and {len(history)} (the run's judged candidates), got {frames}")
    ends = np.unique(np.round(np.linspace(0, len(history), frames + 1)[1:]).astype(int))
    grid = np.full(run.dims, np.nan)
    out, start = [], 0
    for end in ends:
        for h in history[start:end]:
            c = tuple(h["cell"])
            if not float(h["quality"]) <= grid[c]:
                grid[c] = float(h["quality"])
        out.append((int(end), int(history[end - 1]["iteration"]), grid.copy()))
        start = end
    return out


def _save(fig, path: Path, dpi: int = 120) -> Path:
    """Saves ``fig`` atomically: a reader (or a kill, or a full disk) never leaves half an image.

    Raises:
        RunDirError: The file cannot be written (disk full, permission denied).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create {path.parent}: {e.strerror}") from None
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    atomic_write(path, buf.getvalue())
    return path


def plot_run(run: RunData | str | Path, *, out: str | Path | None = None, equal_bins: bool = False) -> list[Path]:
    """Writes ``heatmap.png`` and ``progress.png`` of a run.

    Args:
        run: A loaded run or its directory.
        out: Output folder (default: the run directory).
        equal_bins: Draw every bin with the same width (see :func:`heatmap_figure`).

    Returns:
        The written files.

    Raises:
        RunDirError: The run directory is missing or incomplete.
    """
    run = as_run(run)
    out = Path(out) if out is not None else run.path
    paths = [_save(heatmap_figure(run, equal_bins=equal_bins), out / HEATMAP)]
    if run.metrics:
        paths.append(_save(progress_figure(run), out / PROGRESS))
    return paths


def animate_run(
    run: RunData | str | Path,
    *,
    path: str | Path,
    frames: int = 40,
    equal_bins: bool = False,
    fps: float = 5.0,
    dpi: int = 90,
) -> int:
    """Writes the archive's evolution over the run as a GIF or MP4 (chosen by ``path``'s suffix).

    Args:
        run: A loaded run or its directory.
        path: Output file ending in ``.gif`` (Pillow) or ``.mp4`` (needs ffmpeg).
        frames: Number of snapshots (see :func:`snapshots`); capped at the number of
            judged candidates.
        equal_bins: Draw every bin with the same width.
        fps: Frames per second.
        dpi: Resolution of the frames.

    Returns:
        The number of frames written.

    Raises:
        ConfigError: Unknown suffix, ffmpeg missing for MP4, ``frames`` < 1 or ``fps`` <= 0.
        RunDirError: The run has no history.
    """
    from matplotlib import animation

    run = drawable(as_run(run))
    if not fps > 0:
        raise ConfigError(f"--fps must be > 0 (frames per second), got {fps}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        writer = animation.PillowWriter(fps=fps)
    elif suffix == ".mp4":
        if not animation.writers.is_available("ffmpeg"):
            raise ConfigError("MP4 animations need ffmpeg on the PATH (apt-get install ffmpeg); or write a GIF")
        writer = animation.FFMpegWriter(fps=fps)
    else:
        raise ConfigError(f"animations are written as .gif or .mp4, not {path.name!r}")
    if frames < 1:
        raise ConfigError(f"--frames must be at least 1, got {frames}")
    snaps = snapshots(run, min(frames, len(run.history)))
    vmin, vmax = _colour_range(np.array([float(h["quality"]) for h in run.history]))
    fig, ax = _new_figure(run.axes)
    mesh = _draw_grid(ax, snaps[0][2], run.axes, equal_bins=equal_bins, vmin=vmin, vmax=vmax)
    fig.colorbar(mesh, ax=ax, label="elite quality (grey: empty)", fraction=0.05, pad=0.02)
    title = ax.set_title("", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writer.saving(fig, str(path), dpi=dpi):
        for seen, iteration, grid in snaps:
            mesh.set_array(np.ma.masked_invalid(grid[None, :] if grid.ndim == 1 else grid.T))
            filled = int(np.isfinite(grid).sum())
            title.set_text(f"{run.domain_name}, iteration {iteration} ({seen} judged candidates): "
                           f"{_stats_text(float(np.nansum(grid)), filled, run.cells)}")
            writer.grab_frame()
    return len(snaps)


def plot_heatmap(
    archive,
    *,
    axis_labels: Sequence[str],
    path: str | Path,
    title: str = "",
    equal_bins: bool = True,
    categories: Sequence[Sequence[str]] | None = None,
) -> Path:
    """Draws a live archive's elite quality per cell and saves it as a PNG (used during a run).

    Cells are drawn with equal widths by default so that the narrow bins near 0 and 1
    stay visible; tick labels give the true edges. A 1D archive is drawn as a strip.

    Args:
        archive: A 1D or 2D :class:`qdaif.archive.EdgeGridArchive`.
        axis_labels: One label per measure.
        path: Output file.
        title: Figure title prefix.
        equal_bins: Draw every bin with the same width; False draws them to scale.
        categories: Per measure, its category names, or an empty sequence for a numeric axis.

    Returns:
        ``path``.

    Raises:
        ConfigError: The archive has more than two measures.
    """
    cats = list(categories or [()] * len(axis_labels))
    axes = [Axis(name=str(lbl), label=str(lbl), categories=tuple(c)) if c
            else Axis(name=str(lbl), label=str(lbl), edges=tuple(float(x) for x in e))
            for lbl, e, c in zip(axis_labels, archive.edges, cats)]
    _check_drawable(axes)
    data = archive.data(["objective", "index"])
    grid = np.full(tuple(archive.dims), np.nan)
    if len(data["index"]):
        for c, q in zip(archive.int_to_grid_index(data["index"]), data["objective"]):
            grid[tuple(c)] = q
    fig, ax = _new_figure(axes)
    vmin, vmax = _colour_range(grid)
    mesh = _draw_grid(ax, grid, axes, equal_bins=equal_bins, vmin=vmin, vmax=vmax)
    filled = int(np.isfinite(grid).sum())
    stats = _stats_text(float(np.nansum(grid)), filled, grid.size)
    ax.set_title(f"{title}: {stats}" if title else stats, fontsize=10)
    fig.colorbar(mesh, ax=ax, label="elite quality", fraction=0.05, pad=0.02)
    return _save(fig, Path(path))


def draw_archive(*, archive: Any, domain: Any, iteration: int, path: str | Path) -> None:
    """Draws a running search's archive to ``path`` (the ``refresh`` callback of :class:`qdaif.search.Search`).

    An archive with more than two measures (e.g. one 2D slice per input text) is drawn as
    the best elite over the leading measures in each cell of the last two.
    """
    from qdaif.archive import project_archive

    measures, title = list(domain.measures), ""
    if len(measures) > 2:
        archive, measures = project_archive(archive, [len(measures) - 2, len(measures) - 1]), measures[-2:]
        title = f" (best over {', '.join(m.name for m in domain.measures[:-2])})"
    plot_heatmap(archive, axis_labels=[m.axis_label for m in measures], categories=[m.categories for m in measures],
                 path=path, title=f"{domain.name}, iteration {iteration}{title}")
