"""Pictures of an archive. matplotlib is imported lazily, with a file-only backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qdaif.archive import EdgeGridArchive

__all__ = ["plot_heatmap"]


def _edge_labels(edges: np.ndarray) -> list[str]:
    return [f"{e:g}" for e in edges]


def plot_heatmap(archive: EdgeGridArchive, *, axis_labels: list[str], path: str | Path, title: str = "") -> Path:
    """Draws the archive's elite quality per cell and saves it as a PNG.

    Cells are drawn with equal widths so that the narrow bins near 0 and 1 stay
    visible; tick labels give the true edges. A 1D archive is drawn as a strip.

    Args:
        archive: A 1D or 2D archive.
        axis_labels: One label per measure.
        path: Output file.
        title: Figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: The archive has more than two measures.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    dims = archive.dims
    if len(dims) > 2:
        raise ValueError(f"heatmaps are drawn for 1D or 2D archives, this one has {len(dims)} measures")
    grid = np.full(dims if len(dims) == 2 else (dims[0], 1), np.nan)
    data = archive.data(["objective", "index"])
    if len(data["index"]):
        cells = archive.int_to_grid_index(data["index"])
        for c, q in zip(cells, data["objective"]):
            grid[tuple(c) if len(dims) == 2 else (c[0], 0)] = q
    edges = archive.edges
    one_d = len(dims) == 1
    fig, ax = plt.subplots(figsize=(10, 2.2) if one_d else (7, 6))
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad("#eeeeee")
    mesh = ax.pcolormesh(np.ma.masked_invalid(grid.T), cmap=cmap, vmin=0.0, vmax=1.0, edgecolors="white", linewidth=0.5)
    ax.set_xticks(np.arange(dims[0] + 1), _edge_labels(edges[0]), rotation=90 if dims[0] > 10 else 0, fontsize=8)
    ax.set_xlabel(axis_labels[0])
    if one_d:
        ax.set_yticks([])
    else:
        ax.set_yticks(np.arange(dims[1] + 1), _edge_labels(edges[1]), fontsize=8)
        ax.set_ylabel(axis_labels[1])
    stats = archive.stats
    ax.set_title(
        f"{title}  QD score {float(stats.qd_score):.2f}, coverage {float(stats.coverage):.0%} "
        f"({stats.num_elites}/{archive.cells} cells)".strip(),
        fontsize=10,
    )
    fig.colorbar(mesh, ax=ax, label="elite quality", fraction=0.05 if one_d else 0.08, pad=0.02)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
