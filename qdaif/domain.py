"""Domains as data: prompt templates, seed texts, judge label spaces and measure bins.

A domain is one YAML file in ``domains/`` (the Hydra ``domain`` group). This module
turns the composed config node into validated, typed objects; nothing here knows
about a particular domain.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdaif.errors import ConfigError

__all__ = ["Generation", "LMXPrompt", "RewritePrompt", "LabelJudgeSpec", "Measure", "Domain", "domain_from_config", "project_root", "configs_dir", "domain_names"]

TEXT = "{text}"


def project_root() -> Path:
    """Returns the source checkout's root (benchmarks and tests keep their data there).

    Installed from a wheel there is no checkout; runs need only :func:`configs_dir`.
    """
    return Path(__file__).resolve().parents[1]


def configs_dir() -> Path:
    """Returns the Hydra config folder that ships inside the package.

    In a checkout ``qdaif/configs`` links to the repository's ``configs/`` (whose
    ``domain`` group links to ``domains/``); a wheel carries copies of both.

    Raises:
        ConfigError: The folder is missing (a broken install).
    """
    path = Path(__file__).resolve().parent / "configs"
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"qdaif's configs are missing from {path}; reinstall qdaif (pip install --force-reinstall qdaif)")
    return path


def domain_names() -> list[str]:
    """Returns the names of the built-in domains (``domain=<name>``), sorted."""
    return sorted(p.stem for p in (configs_dir() / "domain").glob("*.yaml"))


def _require(node: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in node or node[key] is None:
        raise ConfigError(f"{where}: missing required field {key!r}")
    return node[key]


def _check_keys(node: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(node) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


@dataclasses.dataclass(frozen=True)
class Generation:
    """Sampling settings of the domain's mutation prompts."""

    max_tokens: int = 50
    temperature: float = 0.8
    top_p: float = 0.95
    stop: tuple[str, ...] = ("\n",)


@dataclasses.dataclass(frozen=True)
class LMXPrompt:
    """Few-shot LMX prompt: each example after ``instruction`` and a space, joined by ``separator``.

    The rendered prompt ends with the bare ``instruction`` (no trailing space, which
    BPE models handle badly) so that the LM writes one more example.
    """

    instruction: str
    separator: str = "\n###\n"
    num_examples: int = 3

    def render(self, examples: Sequence[str]) -> str:
        """Returns the LMX prompt for ``examples`` (in that order)."""
        parts = [f"{self.instruction} {e}" for e in examples] + [self.instruction]
        return self.separator.join(parts)


JUDGE_KINDS = ("label", "categorical", "rating")  # measures may also be kind: computed (by a plugin)


@dataclasses.dataclass(frozen=True)
class LabelJudgeSpec:
    """A judge that compares the log-probabilities of label continuations.

    The prompt is ``shots + query`` with ``{text}`` in ``query`` replaced by the
    candidate; ``shots`` (few-shot examples) is the same for every candidate, so a
    backend can cache it. The label distribution is a softmax over
    ``logit_scale * log P(label)`` (``logit_scale`` > 1 spreads a weak judge's
    probabilities towards 0 and 1, where the paper's bins are dense). Its value:

    - ``label``: the probability of ``labels[0]``, in [0, 1];
    - ``categorical``: the index of the most likely label (an unknown label cannot occur);
    - ``rating``: the expected value of ``values`` (the number each label stands for);
    - ``computed``: no prompt; a domain plugin computes the value (used for measures only).
    """

    name: str
    query: str
    labels: tuple[str, ...]
    shots: str = ""
    logit_scale: float = 1.0
    kind: str = "label"
    values: tuple[float, ...] = ()

    def prompt_parts(self, text: str) -> tuple[str, str]:
        """Returns (shared prefix, candidate-specific suffix) of the judge prompt."""
        return self.shots, self.query.format(text=text)

    def value(self, probs: np.ndarray) -> np.ndarray:
        """Maps label distributions, shape ``(n, num_labels)``, to values, shape ``(n,)``.

        Rows with a non-finite probability give ``nan``.
        """
        bad = ~np.all(np.isfinite(probs), axis=1)
        if self.kind == "categorical":
            out = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1).astype(np.float64)
        elif self.kind == "rating":
            out = probs @ np.asarray(self.values, dtype=np.float64)
        else:
            out = probs[:, 0].astype(np.float64)
        out[bad] = np.nan
        return out

    @property
    def categories(self) -> tuple[str, ...]:
        """Label names without surrounding whitespace."""
        return tuple(x.strip() for x in self.labels)


@dataclasses.dataclass(frozen=True)
class Measure:
    """A diversity axis: a label judge and the bin edges of its value in [0, 1]."""

    judge: LabelJudgeSpec
    edges: tuple[float, ...]
    axis_label: str
    categories: tuple[str, ...] = ()  # names of the bins of a categorical measure
    anchors: tuple[str, ...] = ()  # texts for the first and second label (embedding feedback)

    @property
    def name(self) -> str:
        return self.judge.name

    @property
    def num_bins(self) -> int:
        return len(self.edges) - 1


@dataclasses.dataclass(frozen=True)
class RewritePrompt:
    """LMX-rewrite prompt: elites shown under a header naming their cell, then a target header.

    ``header`` has one ``{measure}`` placeholder per categorical measure, filled with the
    category names of a cell, e.g. ``"A {tone} {genre}:"``.
    """

    header: str
    separator: str = "\n###\n"
    num_examples: int = 2

    def render(self, examples: Sequence[tuple[dict[str, str], str]], target: dict[str, str]) -> str:
        """Returns the prompt for ``(cell names, text)`` examples and a target cell's names."""
        parts = [f"{self.header.format(**names)}\n{text}" for names, text in examples]
        return self.separator.join(parts + [self.header.format(**target) + "\n"])


@dataclasses.dataclass(frozen=True)
class Domain:
    """Everything the engine needs to know about one kind of text."""

    name: str
    version: int
    description: str
    lmx: LMXPrompt
    seeds: tuple[str, ...]
    generation: Generation
    quality: LabelJudgeSpec | None
    measures: tuple[Measure, ...]
    mutation: str = "lmx_near"
    zero_shot: str = ""
    rewrite: RewritePrompt | None = None
    plugin: str = ""  # module of a DomainPlugin, for domains that need code (see qdaif.plugin)
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the plugin's own options
    judges: Mapping[str, LabelJudgeSpec] = dataclasses.field(default_factory=dict)  # extra judges a plugin uses

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(m.num_bins for m in self.measures)


_DOMAIN_KEYS = {"name", "version", "description", "lmx", "seeds", "generation", "quality", "measures", "mutation",
                "zero_shot", "rewrite", "plugin", "settings", "judges"}
MUTATIONS = ("lmx_near", "lmx_rewrite")
_JUDGE_KEYS = {"name", "query", "labels", "shots", "logit_scale", "kind", "values"}
_MEASURE_KEYS = _JUDGE_KEYS | {"edges", "axis_label", "categories", "anchors"}
_COMPUTED_KEYS = {"name", "kind", "edges", "axis_label", "categories"}


def _judge(node: Mapping[str, Any], where: str, keys: set[str] = _JUDGE_KEYS,
           placeholders: frozenset[str] = frozenset({"text"})) -> LabelJudgeSpec:
    _check_keys(node, keys, where)
    query = str(_require(node, "query", where))
    if TEXT not in query:
        raise ConfigError(f"{where}.query must contain the placeholder {TEXT} (where the candidate text goes)")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(query)}
    except ValueError as e:
        raise ConfigError(f"{where}.query: {e} (write {{{{ and }}}} for literal braces)") from None
    unknown = sorted(f for f in fields if f and f not in placeholders)
    if unknown:
        known = ", ".join("{" + p + "}" for p in sorted(placeholders))
        raise ConfigError(f"{where}.query has unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                          f"the placeholders are {known} (write {{{{ and }}}} for literal braces)")
    labels = tuple(str(x) for x in _require(node, "labels", where))
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ConfigError(f"{where}.labels must be at least two distinct strings, got {list(labels)}")
    for a in labels:
        for b in labels:
            if a != b and b.startswith(a):
                # P(a) would include every continuation that starts like b (" 1" absorbs " 10").
                raise ConfigError(f"{where}.labels: {a!r} is a prefix of {b!r}, so its score includes {b!r}'s; "
                                  "use labels that differ before either ends (e.g. ' 1/' and ' 10/')")
    scale = float(node.get("logit_scale", 1.0))
    if not scale > 0:
        raise ConfigError(f"{where}.logit_scale must be > 0, got {scale}")
    kind = str(node.get("kind") or "label")
    if kind not in JUDGE_KINDS:
        raise ConfigError(f"{where}.kind must be one of {', '.join(JUDGE_KINDS)}, got {kind!r}")
    values: tuple[float, ...] = ()
    if kind == "rating":
        raw = node.get("values")
        if raw is None:
            try:
                raw = [float(x) for x in labels]
            except ValueError:
                raise ConfigError(f"{where}.values is needed when the rating labels are not numbers") from None
        values = tuple(float(v) for v in raw)
        if len(values) != len(labels):
            raise ConfigError(f"{where}.values must have one number per label ({len(labels)}), got {len(values)}")
    elif node.get("values") is not None:
        raise ConfigError(f"{where}.values is only used by kind: rating")
    return LabelJudgeSpec(
        name=str(_require(node, "name", where)),
        query=query,
        labels=labels,
        shots=str(node.get("shots") or ""),
        logit_scale=scale,
        kind=kind,
        values=values,
    )


def _computed_measure(node: Mapping[str, Any], where: str) -> Measure:
    """A measure whose value a domain plugin computes (no judge prompt)."""
    _check_keys(node, _COMPUTED_KEYS, where)
    name = str(_require(node, "name", where))
    names = tuple(str(c) for c in (node.get("categories") or ()))
    if names:
        if node.get("edges") is not None:
            raise ConfigError(f"{where}: a categorical measure has one bin per category; remove 'edges'")
        edges = tuple(float(k) for k in range(len(names) + 1))
    else:
        e = np.asarray(_require(node, "edges", where), dtype=float)
        if e.ndim != 1 or len(e) < 2 or not np.all(np.diff(e) > 0):
            raise ConfigError(f"{where}.edges must be an increasing list of at least 2 numbers (bin boundaries)")
        edges = tuple(float(x) for x in e)
    judge = LabelJudgeSpec(name=name, query=TEXT, labels=(), kind="computed")
    return Measure(judge=judge, edges=edges, axis_label=str(node.get("axis_label") or name), categories=names)


def _measure(node: Mapping[str, Any], where: str) -> Measure:
    if node.get("kind") == "computed":
        return _computed_measure(node, where)
    judge = _judge(node, where, _MEASURE_KEYS)
    if judge.kind == "categorical":
        # Bin k holds category k: the measure's value is the index of the argmax label.
        if node.get("edges") is not None:
            raise ConfigError(f"{where}: a categorical measure has one bin per label; remove 'edges'")
        names = tuple(str(c) for c in (node.get("categories") or judge.categories))
        if len(names) != len(judge.labels):
            raise ConfigError(f"{where}.categories must name each of the {len(judge.labels)} labels")
        edges = tuple(float(k) for k in range(len(names) + 1))
        return Measure(judge=judge, edges=edges, axis_label=str(node.get("axis_label") or judge.name), categories=names,
                       anchors=_anchors(node, where))
    if node.get("categories") is not None:
        raise ConfigError(f"{where}.categories is only used by kind: categorical")
    edges = np.asarray(_require(node, "edges", where), dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or not np.all(np.diff(edges) > 0):
        raise ConfigError(f"{where}.edges must be an increasing list of at least 2 numbers (bin boundaries)")
    if judge.kind == "label" and (edges[0] > 0 or edges[-1] < 1):
        raise ConfigError(f"{where}.edges must span [0, 1] (first <= 0, last >= 1), got [{edges[0]}, {edges[-1]}]")
    label = str(node.get("axis_label") or judge.name)
    return Measure(judge=judge, edges=tuple(float(e) for e in edges), axis_label=label, anchors=_anchors(node, where))


def _anchors(node: Mapping[str, Any], where: str) -> tuple[str, ...]:
    anchors = tuple(str(a) for a in (node.get("anchors") or ()))
    if anchors and len(anchors) != 2:
        raise ConfigError(f"{where}.anchors must be two texts (for the first and the second label)")
    return anchors


def domain_from_config(node: Mapping[str, Any]) -> Domain:
    """Validates a domain config node and builds a :class:`Domain`.

    Args:
        node: The composed ``domain`` config (a mapping, e.g. an OmegaConf DictConfig).

    Raises:
        ConfigError: A field is missing, unknown or invalid; the message names it.
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    where = f"domain {node.get('name', '?')}"
    _check_keys(node, _DOMAIN_KEYS, where)
    lmx_node = dict(_require(node, "lmx", where))
    _check_keys(lmx_node, {"instruction", "separator", "num_examples"}, f"{where}.lmx")
    lmx = LMXPrompt(
        instruction=str(_require(lmx_node, "instruction", f"{where}.lmx")),
        separator=str(lmx_node.get("separator", "\n###\n")),
        num_examples=int(lmx_node.get("num_examples", 3)),
    )
    raw_seeds = node.get("seeds")
    if raw_seeds is None and node.get("plugin"):
        from qdaif.plugin import plugin_class

        raw_seeds = plugin_class(str(node["plugin"]), where).default_seeds(dict(node.get("settings") or {}))
    seeds = tuple(str(s).strip() for s in (raw_seeds if raw_seeds is not None else _require(node, "seeds", where)))
    if len(seeds) < 1 or not all(seeds):
        raise ConfigError(f"{where}.seeds must be a non-empty list of non-empty texts")
    if lmx.num_examples < 1:
        raise ConfigError(f"{where}.lmx.num_examples must be >= 1")
    gen_node = dict(node.get("generation") or {})
    _check_keys(gen_node, {f.name for f in dataclasses.fields(Generation)}, f"{where}.generation")
    if "stop" in gen_node:
        gen_node["stop"] = tuple(gen_node["stop"])
    generation = Generation(**gen_node)
    if generation.max_tokens < 1:
        raise ConfigError(f"{where}.generation.max_tokens must be >= 1")
    measures_node = _require(node, "measures", where)
    if not measures_node:
        raise ConfigError(f"{where}.measures must list at least one measure")
    measures = tuple(_measure(m, f"{where}.measures[{i}]") for i, m in enumerate(measures_node))
    mutation = str(node.get("mutation") or "lmx_near")
    if mutation not in MUTATIONS:
        raise ConfigError(f"{where}.mutation must be one of {', '.join(MUTATIONS)}, got {mutation!r}")
    rewrite = None
    if node.get("rewrite") is not None:
        rw = dict(node["rewrite"])
        _check_keys(rw, {"header", "separator", "num_examples"}, f"{where}.rewrite")
        rewrite = RewritePrompt(header=str(_require(rw, "header", f"{where}.rewrite")),
                                separator=str(rw.get("separator", "\n###\n")), num_examples=int(rw.get("num_examples", 2)))
        names = {m.name: m.categories[0] if m.categories else "x" for m in measures}
        try:
            rewrite.header.format(**names)
        except (KeyError, IndexError) as e:
            raise ConfigError(f"{where}.rewrite.header has a placeholder {e} that is not a measure name "
                              f"(measures: {', '.join(names)})") from None
    plugin = str(node.get("plugin") or "")
    settings = dict(node.get("settings") or {})
    if settings and not plugin:
        raise ConfigError(f"{where}.settings is only used by domains with a 'plugin'")
    placeholders = frozenset({"text"})
    if plugin:
        from qdaif.plugin import plugin_class

        placeholders = plugin_class(plugin, where).placeholders
    judges = {}
    for key, jn in dict(node.get("judges") or {}).items():
        if not plugin:
            raise ConfigError(f"{where}.judges is only used by domains with a 'plugin'")
        jn = {"name": key, **dict(jn)}
        judges[str(key)] = _judge(jn, f"{where}.judges.{key}", placeholders=placeholders)
    computed = [m.name for m in measures if m.judge.kind == "computed"]
    if computed and not plugin:
        raise ConfigError(f"{where}: measure(s) {', '.join(computed)} are kind: computed, which needs a 'plugin' that computes them")
    if node.get("quality") is None and not plugin:
        raise ConfigError(f"{where}: missing required field 'quality'")
    quality = None if node.get("quality") is None else _judge(node["quality"], f"{where}.quality", placeholders=placeholders)
    if mutation == "lmx_rewrite":
        if rewrite is None:
            raise ConfigError(f"{where}: mutation lmx_rewrite needs a 'rewrite' section with a header")
        if not all(m.categories for m in measures):
            raise ConfigError(f"{where}: mutation lmx_rewrite needs categorical measures (kind: categorical)")
    return Domain(
        mutation=mutation,
        zero_shot=str(node.get("zero_shot") or ""),
        rewrite=rewrite,
        name=str(_require(node, "name", where)),
        version=int(node.get("version", 1)),
        description=str(node.get("description", "")),
        lmx=lmx,
        seeds=seeds,
        generation=generation,
        quality=quality,
        measures=measures,
        plugin=plugin,
        settings=settings,
        judges=judges,
    )
