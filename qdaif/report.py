"""A run as one self-contained HTML file: clickable archive, elite texts and their lineage.

The page needs no server and no network: the plots are embedded PNGs, the archive is
an inline SVG, and the run's data (elites, their ancestors, config, metrics) is
embedded as JSON that a small inline script renders with ``textContent`` only. The
page is the Jinja template ``qdaif/templates/report.html.j2`` (autoescaped), with its
stylesheet and script in ``report.css`` and ``report.js`` beside it, inlined.

Texts written by the LM are never markup: in the JSON block ``<``, ``>`` and ``&``
are written as ``\\u003c``, ``\\u003e`` and ``\\u0026`` (so no ``</script>`` can end the
block), the script never assigns ``innerHTML``, and the page's Content-Security-Policy
admits only its own script (by hash), so even a bug could not run injected code.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from qdaif.plot import heatmap_figure, progress_figure
from qdaif.runs import Axis, RunData, as_run, drawable
from qdaif.run_dir import CONFIG, atomic_write

__all__ = ["REPORT", "write_report", "report_html", "json_for_html", "lineage_nodes"]

REPORT = "report.html"
#: The page's template, in ``qdaif/templates`` with its ``report.css`` and ``report.js``.
REPORT_TEMPLATE = "report.html.j2"


def json_for_html(obj: Any) -> str:
    """Serialises ``obj`` for a ``<script type="application/json">`` block.

    ``<``, ``>`` and ``&`` become JSON escapes, so the text cannot close the block or
    open a comment whatever the data holds; ``JSON.parse`` restores them.
    """
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _key(parent: Any) -> str:
    return str(parent)  # candidate ids become "12"; seed parents are already "seed:K"


def lineage_nodes(run: RunData) -> dict[str, dict[str, Any]]:
    """Collects the elites and all their ancestors (back to the seed texts).

    Args:
        run: A loaded run.

    Returns:
        Node key (a candidate id as a string, or ``"seed:K"``) to a dict with the
        node's ``kind`` (``candidate``, ``seed`` or ``missing``), ``text`` and, for
        candidates, ``id``, ``iteration``, ``operator``, ``quality``, ``measures``,
        ``cell`` and ``parents`` (node keys).
    """
    by_id = {int(h["id"]): h for h in run.history}
    seeds = [str(s) for s in (run.config.get("domain") or {}).get("seeds") or []]
    nodes: dict[str, dict[str, Any]] = {}
    todo = [_key(e["id"]) for e in run.elites]
    while todo:
        key = todo.pop()
        if key in nodes:
            continue
        if key.startswith("seed:"):
            nodes[key] = _seed_node(key, seeds)
            continue
        h = by_id.get(int(key)) if key.lstrip("-").isdigit() else None
        if h is None:  # an elite without history (history cut or copied apart): show what elites.jsonl has
            nodes[key] = _elite_without_history(key, run.elites)
            continue
        nodes[key] = _candidate_node(h)
        todo.extend(nodes[key]["parents"])
    return nodes


def _seed_node(key: str, seeds: list[str]) -> dict[str, Any]:
    """The node of ``"seed:K"``: the domain's seed text K, or ``missing`` where the config has no such seed."""
    k = key.split(":", 1)[1]
    ok = k.isdigit() and int(k) < len(seeds)
    return {"kind": "seed" if ok else "missing", "text": seeds[int(k)] if ok else ""}


def _elite_without_history(key: str, elites: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``missing`` node with what elites.jsonl holds of candidate ``key`` (no parents: they are unknown)."""
    e = next((e for e in elites if _key(e["id"]) == key), None)
    if e is None:
        return {"kind": "missing", "text": ""}
    return {"kind": "missing", "text": str(e["text"]), "id": e["id"], "iteration": e.get("iteration"),
            "quality": e["quality"], "measures": e["measures"], "cell": e["cell"], "parents": []}


def _candidate_node(h: dict[str, Any]) -> dict[str, Any]:
    """The node of a history row; its parents are node keys."""
    return {
        "kind": "candidate", "id": int(h["id"]), "iteration": h.get("iteration"), "operator": h.get("operator"),
        "quality": h["quality"], "measures": h.get("measures"), "cell": h["cell"],
        "parents": [_key(p) for p in h.get("parents") or []], "text": str(h["text"]),
    }


# ------------------------------------------------------------------- pieces
def _png_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _colour(q: float, vmin: float, vmax: float) -> str:
    import matplotlib
    from matplotlib.colors import to_hex

    return to_hex(matplotlib.colormaps["viridis"]((q - vmin) / (vmax - vmin) if vmax > vmin else 0.5))


def _archive_svg(run: RunData, vmin: float, vmax: float) -> str:
    """The archive as an SVG of equal-width cells (so that every cell can be clicked)."""
    axes = run.axes
    one_d = len(axes) == 1
    nx = axes[0].bins
    ny = 1 if one_d else axes[1].bins
    size = max(16.0, min(44.0, 720.0 / nx))
    ch = 56.0 if one_d else max(16.0, min(44.0, 560.0 / ny))
    def longest(axis: Axis) -> int:
        return max(len(t) for t in (axis.categories or axis.edge_labels()))

    # margins fit the tick labels: about 7 px a character, x labels turned by 60 degrees
    ml = 10.0 if one_d else 40.0 + 7.0 * longest(axes[1])
    mt, mr = 10.0, 30.0
    mb = 40.0 + 6.2 * longest(axes[0])
    w, h = ml + nx * size + mr, mt + ny * ch + mb
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="archive-svg" width="{w:.0f}" height="{h:.0f}" '
           f'viewBox="0 0 {w:.0f} {h:.0f}" role="group" aria-label="archive heatmap">']
    out.extend(_svg_cells(run, vmin, vmax, left=ml, top=mt, width=size, height=ch))
    base = mt + ny * ch
    out.extend(_svg_ticks(axes[0], "x", ml, base, size))
    out.append(f'<text class="axis" x="{ml + nx * size / 2:.1f}" y="{h - 8:.1f}" text-anchor="middle">'
               f"{html.escape(axes[0].label)}</text>")
    if not one_d:
        out.extend(_svg_ticks(axes[1], "y", ml, base, ch))
        out.append(f'<text class="axis" transform="rotate(-90 14 {mt + ny * ch / 2:.1f})" x="14" '
                   f'y="{mt + ny * ch / 2:.1f}" text-anchor="middle">{html.escape(axes[1].label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _svg_cells(run: RunData, vmin: float, vmax: float, *, left: float, top: float, width: float, height: float) -> list[str]:
    """One focusable ``<rect>`` per cell, coloured by its elite's quality, with a tooltip."""
    axes, grid = run.axes, run.grid()
    one_d = len(axes) == 1
    nx, ny = axes[0].bins, 1 if one_d else axes[1].bins
    out = []
    for i in range(nx):
        for j in range(ny):
            cell = (i,) if one_d else (i, j)
            q = grid[cell]
            x, y = left + i * width, top + (ny - 1 - j) * height
            filled = bool(np.isfinite(q))
            names = ", ".join(a.bin_names()[c] for a, c in zip(axes, cell))
            tip = f"cell {list(cell)} {names}: " + (f"quality {q:.3f}" if filled else "empty")
            out.append(
                f'<rect class="cell{"" if filled else " empty"}" data-cell="{",".join(map(str, cell))}" '
                f'x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" tabindex="0" '
                f'fill="{_colour(float(q), vmin, vmax) if filled else "#e6e6e6"}"><title>{html.escape(tip)}</title></rect>'
            )
    return out


def _svg_ticks(axis: Axis, which: str, left: float, base: float, step: float) -> list[str]:
    if axis.categorical:
        ticks = [(k + 0.5, name) for k, name in enumerate(axis.categories)]
    else:
        ticks = list(enumerate(axis.edge_labels()))
    out = []
    for pos, label in ticks:
        label = html.escape(str(label))
        if which == "x":
            x = left + pos * step
            out.append(f'<text class="tick" transform="rotate(-60 {x:.1f} {base + 8:.1f})" x="{x:.1f}" '
                       f'y="{base + 8:.1f}" text-anchor="end" dominant-baseline="middle">{label}</text>')
        else:
            y = base - pos * step
            out.append(f'<text class="tick" x="{left - 6:.1f}" y="{y:.1f}" text-anchor="end" '
                       f'dominant-baseline="middle">{label}</text>')
    return out


def _legend_svg(vmin: float, vmax: float) -> str:
    stops = "".join(f'<stop offset="{t:.2f}" stop-color="{_colour(vmin + t * (vmax - vmin), vmin, vmax)}"/>'
                    for t in np.linspace(0, 1, 11))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="34" aria-label="colour scale">'
            f'<defs><linearGradient id="qscale">{stops}</linearGradient></defs>'
            f'<rect x="10" y="2" width="200" height="12" fill="url(#qscale)"/>'
            f'<rect x="220" y="2" width="12" height="12" fill="#e6e6e6"/>'
            f'<text class="tick" x="10" y="28">{vmin:g}</text>'
            f'<text class="tick" x="110" y="28" text-anchor="middle">elite quality</text>'
            f'<text class="tick" x="210" y="28" text-anchor="end">{vmax:g}</text>'
            f'<text class="tick" x="236" y="12">empty</text></svg>')


def _template_file(name: str) -> str:
    """The text of a file of ``qdaif/templates`` (package data)."""
    from importlib.resources import files

    return files("qdaif").joinpath("templates", name).read_text(encoding="utf-8")


def _render(**context: Any) -> str:
    """Renders ``templates/report.html.j2``; every value is escaped unless it is :class:`markupsafe.Markup`."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("qdaif", "templates"), autoescape=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return env.get_template(REPORT_TEMPLATE).render(**context)


def _page_data(run: RunData) -> dict[str, Any]:
    """The run's data that the page's script renders: axes, elites, their lineage, last metrics, config."""
    config_file = run.path / CONFIG
    return {
        "axes": [{"name": a.name, "label": a.label, "bins": a.bin_names()} for a in run.axes],
        "elites": [_key(e["id"]) for e in run.elites],
        "nodes": lineage_nodes(run),
        "metrics": run.metrics[-1] if run.metrics else {},
        "config": config_file.read_text(encoding="utf-8") if config_file.is_file() else "",
    }


def _facts(run: RunData) -> str:
    """The run's headline figures, one line."""
    s = run.summary()
    last = run.metrics[-1] if run.metrics else {}
    return (f"{len(run.metrics)} iterations, {last.get('evaluations', '?')} evaluations; "
            f"QD score {s['qd_score']:.3f}, coverage {s['coverage']:.0%} ({s['num_elites']}/{run.cells} cells), "
            f"best quality {s['max_quality']:.3f}")


def report_html(run: RunData, *, title: str | None = None) -> str:
    """Builds the report page of a run.

    Args:
        run: A loaded run; with more than two measures the page shows the best elite
            over the leading measures per cell of the last two (:func:`qdaif.runs.drawable`).
        title: Page title (default: the domain and the run folder).

    Returns:
        The HTML text.
    """
    heat = heatmap_figure(run)
    run = drawable(run)
    grid = run.grid()
    finite = grid[np.isfinite(grid)]
    vmin = min(0.0, float(finite.min())) if len(finite) else 0.0
    vmax = max(1.0, float(finite.max())) if len(finite) else 1.0
    images = [("Archive, bins drawn to scale", _png_data_uri(heat))]
    if run.metrics:
        images.append(("Progress", _png_data_uri(progress_figure(run))))
    title = title or f"qdaif run: {run.domain_name} ({run.path.resolve().name})"
    script = _template_file("report.js")
    script_hash = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; "
           "base-uri 'none'; form-action 'none'")
    return _render(title=title, path=str(run.path.resolve()), facts=_facts(run), csp=Markup(csp), figures=images,
                   css=Markup(_template_file("report.css")), script=Markup(script),
                   archive_svg=Markup(_archive_svg(run, vmin, vmax)), legend_svg=Markup(_legend_svg(vmin, vmax)),
                   data_json=Markup(json_for_html(_page_data(run))))


def write_report(run: RunData | str | Path, *, out: str | Path | None = None, title: str | None = None) -> Path:
    """Writes the self-contained HTML report of a run.

    Args:
        run: A loaded run or its directory.
        out: Output file (default: ``report.html`` in the run directory); an existing
            folder gets ``report.html`` in it.
        title: Page title.

    Returns:
        The written file.

    Raises:
        RunDirError: The run directory is missing or incomplete.
    """
    run = as_run(run)
    path = Path(out) if out is not None else run.path / REPORT
    if path.is_dir():  # an existing folder: the report goes in it
        path = path / REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, report_html(run, title=title).encode("utf-8"))
    return path
