"""Domains as data: prompt templates, seed texts, judge label spaces and measure bins.

A domain is one YAML file in ``domains/`` (the Hydra ``domain`` group). This module
turns the composed config node into validated, typed objects; nothing here knows
about a particular domain.
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdaif.errors import ConfigError

__all__ = ["Generation", "CategoryGeneration", "LMXPrompt", "RewritePrompt", "LabelJudgeSpec", "Measure", "Domain", "domain_from_config",
           "project_root", "configs_dir", "domain_names", "literal_texts", "example_orders"]

TEXT = "{text}"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


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


# ----------------------------------------------------------- typed field readers
# Each reader names the field, the allowed values and what it got, in one line.
def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping of fields (key: value lines), got {_shown(value)}")
    return dict(value)


def _list(value: Any, where: str, what: str = "a list") -> list[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ConfigError(f"{where} must be {what}, got {_shown(value)}")
    return list(value)


def _text(value: Any, where: str) -> str:
    """A text field: a string (a number is taken as its digits), never a list or mapping."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{where} must be a text, got {_shown(value)}")
    return str(value)


def _texts(value: Any, where: str) -> tuple[str, ...]:
    return tuple(_text(x, f"{where}[{i}]") for i, x in enumerate(_list(value, where, "a list of texts")))


def _int(node: Mapping[str, Any], key: str, where: str, default: int, *, low: int) -> int:
    value = node.get(key, default)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{where}.{key} must be an integer >= {low}, got {_shown(value)}")
    return value


def _float(value: Any, where: str, allowed: str, ok: Any = lambda x: True) -> float:
    """A number for which ``ok`` holds; ``allowed`` says which numbers in the message."""
    x = value
    if isinstance(x, str):
        try:
            x = float(x)
        except ValueError:
            pass
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or not ok(x):
        raise ConfigError(f"{where} must be {allowed}, got {_shown(value)}")
    return float(x)


def _edges(value: Any, where: str) -> tuple[float, ...]:
    nums = [_float(x, where, "an increasing list of at least 2 numbers (bin boundaries)")
            for x in _list(value, where, "an increasing list of at least 2 numbers (bin boundaries)")]
    if len(nums) < 2 or not all(b > a for a, b in zip(nums, nums[1:])):
        raise ConfigError(f"{where} must be an increasing list of at least 2 numbers (bin boundaries), got {_shown(value)}")
    return tuple(nums)


_GENERATION_KEYS = {"max_tokens", "temperature", "top_p", "stop", "max_lines"}


def _generation(value: Any, where: str, default: Generation | None = None) -> Generation:
    """Reads generation settings; fields not given are ``default``'s (the dataclass defaults if none)."""
    node = _mapping(value, where)
    _check_keys(node, _GENERATION_KEYS, where)
    base = default or Generation()
    stop = node.get("stop", base.stop)
    return Generation(
        max_tokens=_int(node, "max_tokens", where, base.max_tokens, low=1),
        temperature=_float(node.get("temperature", base.temperature), f"{where}.temperature",
                           "a number >= 0 (0: greedy decoding)", lambda x: x >= 0),
        top_p=_float(node.get("top_p", base.top_p), f"{where}.top_p", "a number in (0, 1]", lambda x: 0 < x <= 1),
        stop=(_text(stop, f"{where}.stop"),) if isinstance(stop, str) else _texts(stop, f"{where}.stop"),
        max_lines=_int(node, "max_lines", where, base.max_lines, low=0),
    )


def _category_generation(value: Any, where: str, default: Generation,
                         measures: Sequence[Measure]) -> CategoryGeneration:
    """Reads ``generation.per_category``: a categorical measure and settings per category name."""
    node = _mapping(value, where)
    _check_keys(node, {"measure", "settings"}, where)
    name = _text(_require(node, "measure", where), f"{where}.measure")
    categorical = {m.name: m for m in measures if m.categories}
    if name not in categorical:
        raise ConfigError(f"{where}.measure must name a categorical measure ({', '.join(categorical) or 'none'}), got {name!r}")
    known = categorical[name].categories
    settings = _mapping(_require(node, "settings", where), f"{where}.settings")
    unknown = sorted(str(k) for k in settings if k not in known)
    if unknown:
        raise ConfigError(f"{where}.settings: unknown categor(ies) {', '.join(unknown)} of measure {name}; "
                          f"the categories are {', '.join(known)}")
    return CategoryGeneration(measure=name, settings=tuple(
        (str(k), _generation(v, f"{where}.settings.{k}", default)) for k, v in settings.items()))


_INTERPOLATION = re.compile(r"(\\*)\$\{")


def literal_texts(node: Any) -> Any:
    """Escapes ``${`` in every string of a domain node, so that OmegaConf keeps it as text.

    Domain files are data: ``${oc.env:VAR}`` in a prompt is sent as written, never
    resolved. The escape (``\\${``, backslashes before it doubled) is what OmegaConf
    unescapes when the config is resolved; :func:`domain_from_config` also reads it.
    """
    if isinstance(node, str):
        return _INTERPOLATION.sub(lambda m: m.group(1) * 2 + "\\${", node)
    if isinstance(node, Mapping):
        return {k: literal_texts(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [literal_texts(v) for v in node]
    return node


def _unescaped(node: Any) -> Any:
    """The inverse of :func:`literal_texts` on an unresolved config; other strings are kept."""
    if isinstance(node, str):
        return _INTERPOLATION.sub(lambda m: m.group(1)[: len(m.group(1)) // 2] + "${", node)
    if isinstance(node, Mapping):
        return {k: _unescaped(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unescaped(v) for v in node]
    return node


@dataclasses.dataclass(frozen=True)
class Generation:
    """Sampling settings of the domain's mutation prompts.

    ``max_lines`` > 0 keeps a generated text only up to its ``max_lines``-th non-blank line
    (blank lines between them are kept): a sonnet is cut after 14 lines even when the
    model, not stopped by a stop string, writes on. The engine applies it after ``generate``.
    """

    max_tokens: int = 50
    temperature: float = 0.8
    top_p: float = 0.95
    stop: tuple[str, ...] = ("\n",)
    max_lines: int = 0

    def cut(self, text: str) -> str:
        """Returns ``text`` up to its ``max_lines``-th non-blank line (all of it when ``max_lines`` is 0)."""
        if not self.max_lines:
            return text
        lines, seen = text.split("\n"), 0
        for k, line in enumerate(lines):
            seen += bool(line.strip())
            if seen == self.max_lines:
                return "\n".join(lines[: k + 1])
        return text


@dataclasses.dataclass(frozen=True)
class CategoryGeneration:
    """Generation settings per category of one categorical measure (``generation.per_category``).

    A proposal that targets a cell (the LMX-rewrite operator) is generated with the
    settings of that cell's category on ``measure``: a 14-line sonnet needs more tokens
    than a haiku. Categories without an entry, and proposals without a target, use the
    domain's default :class:`Generation`. Each entry holds complete settings (the fields
    it does not give are the default's).
    """

    measure: str
    settings: tuple[tuple[str, Generation], ...] = ()

    def get(self, category: str) -> Generation | None:
        """Returns the settings of ``category``, or ``None`` when it has none of its own."""
        return dict(self.settings).get(category)


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


def example_orders(n: int, k: int) -> list[tuple[int, ...]]:
    """``k <= n`` orders of ``range(n)``: the written order rotated by ``0..k-1``.

    Order ``j`` starts at index ``j``, so the ``k`` orders end with ``k`` different
    examples, and with ``k == n`` every example stands once in every position (a judge's
    recency bias toward the last example's label averages out).
    """
    if not 1 <= k <= max(n, 1):
        raise ValueError(f"need 1 <= k <= n for {k} orders of {n} examples")
    return [tuple((j + i) % n for i in range(n)) for j in range(k)]


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

    ``max_lines`` > 0 makes the judge read only the candidate's first ``max_lines``
    non-blank lines (blank lines dropped), so that a long text is judged on an opening
    as long as the few-shot examples (poetry's quality judge: docs/judges.md).
    """

    name: str
    query: str
    labels: tuple[str, ...]
    shots: str = ""
    logit_scale: float = 1.0
    kind: str = "label"
    values: tuple[float, ...] = ()
    examples: tuple[tuple[str, str], ...] = ()  # (text, label) few-shot examples, rendered with ``query``
    orders: int = 1  # average the label distribution over this many orders of ``examples``
    retrieve: int = 0  # per candidate, show only the ``retrieve`` examples most similar to it
    calibrate: bool = False  # contextual calibration against content-free inputs
    max_lines: int = 0  # the judge reads only the first max_lines non-blank lines of a text (0: all)
    last_sentences: int = 0  # the judge reads only the last last_sentences sentences of a text (0: all)

    def judged_text(self, text: str) -> str:
        """Returns the part of ``text`` the judge reads: all of it, its first ``max_lines`` non-blank lines,
        and/or its last ``last_sentences`` sentences (split after ``.``, ``!`` or ``?`` and a space)."""
        if self.max_lines:
            text = "\n".join([line for line in text.splitlines() if line.strip()][: self.max_lines])
        if self.last_sentences:
            sentences = _SENTENCE_END.split(text.strip())
            text = " ".join(sentences[-self.last_sentences:])
        return text

    def prompt_parts(self, text: str) -> tuple[str, str]:
        """Returns (shared prefix, candidate-specific suffix) of the judge prompt.

        With ``examples``, the prefix is ``shots`` then the examples in their written order
        (the first of :meth:`example_orders`); the judge itself may use other orders.
        """
        return self.shots + self.render_examples(range(len(self.examples))), self.query.format(text=self.judged_text(text))

    def render_examples(self, order: Sequence[int]) -> str:
        """The few-shot block of ``examples`` taken in ``order`` (indices into ``examples``)."""
        return "".join(self.query.format(text=self.examples[i][0]) + self.examples[i][1] + "\n\n" for i in order)

    def example_orders(self) -> list[tuple[int, ...]]:
        """``orders`` fixed orders of the examples (all of them, or the ``retrieve`` chosen ones).

        Indices into ``examples`` (or into the chosen examples with ``retrieve``); see
        :func:`example_orders`.
        """
        return example_orders(self.retrieve or len(self.examples), self.orders)

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
    allow_code: bool = False  # plugin may be any importable module, not only a registered one (see qdaif.plugin)
    per_category: CategoryGeneration | None = None  # generation settings per category of a measure

    def generation_for(self, names: Mapping[str, str] | None = None) -> Generation:
        """Returns the generation settings of a proposal that targets the cell named ``names``.

        Args:
            names: Measure name -> category name of the target cell; ``None`` (no target)
                gives the domain's default settings.
        """
        if self.per_category is None or not names or self.per_category.measure not in names:
            return self.generation
        return self.per_category.get(names[self.per_category.measure]) or self.generation

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(m.num_bins for m in self.measures)


_DOMAIN_KEYS = {"name", "version", "description", "lmx", "seeds", "generation", "quality", "measures", "mutation",
                "zero_shot", "rewrite", "plugin", "settings", "judges"}
MUTATIONS = ("lmx_near", "lmx_rewrite")
_JUDGE_KEYS = {"name", "query", "labels", "shots", "logit_scale", "kind", "values", "examples", "orders", "retrieve",
               "calibrate", "max_lines", "last_sentences"}
_MEASURE_KEYS = _JUDGE_KEYS | {"edges", "axis_label", "categories", "anchors"}
_COMPUTED_KEYS = {"name", "kind", "edges", "axis_label", "categories"}


def _judge(node: Mapping[str, Any], where: str, keys: set[str] = _JUDGE_KEYS,
           placeholders: frozenset[str] = frozenset({"text"})) -> LabelJudgeSpec:
    node = _mapping(node, where)
    _check_keys(node, keys, where)
    query = _text(_require(node, "query", where), f"{where}.query")
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
    labels = _texts(_require(node, "labels", where), f"{where}.labels")
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ConfigError(f"{where}.labels must be at least two distinct strings, got {list(labels)}")
    for a in labels:
        for b in labels:
            if a != b and b.startswith(a):
                # P(a) would include every continuation that starts like b (" 1" absorbs " 10").
                raise ConfigError(f"{where}.labels: {a!r} is a prefix of {b!r}, so its score includes {b!r}'s; "
                                  "use labels that differ before either ends (e.g. ' 1/' and ' 10/')")
    scale = _float(node.get("logit_scale", 1.0), f"{where}.logit_scale", "a number > 0", lambda x: x > 0)
    kind = _text(node.get("kind") or "label", f"{where}.kind")
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
        values = tuple(_float(v, f"{where}.values", "a list of numbers, one per label")
                       for v in _list(raw, f"{where}.values", "a list of numbers, one per label"))
        if len(values) != len(labels):
            raise ConfigError(f"{where}.values must have one number per label ({len(labels)}), got {len(values)}")
    elif node.get("values") is not None:
        raise ConfigError(f"{where}.values is only used by kind: rating")
    examples = _examples(node.get("examples"), f"{where}.examples", labels)
    orders = _int(node, "orders", where, 1, low=1)
    retrieve = _int(node, "retrieve", where, 0, low=0)
    calibrate = node.get("calibrate", False)
    if isinstance(calibrate, str) and calibrate.lower() in ("true", "false"):
        calibrate = calibrate.lower() == "true"
    if not isinstance(calibrate, bool):
        raise ConfigError(f"{where}.calibrate must be true or false, got {_shown(calibrate)}")
    if examples and fields - {"text", "", None}:
        raise ConfigError(f"{where}.examples are rendered with the query, so the query may hold only {TEXT}; "
                          "write this judge's few-shot block in 'shots' instead")
    if (orders > 1 or retrieve) and len(examples) < 2:
        raise ConfigError(f"{where}: orders and retrieve need at least 2 'examples' ({{text, label}} items) to reorder or choose from")
    if orders > (retrieve or len(examples)) and examples:
        raise ConfigError(f"{where}.orders must be at most the number of examples shown ({retrieve or len(examples)}), "
                          f"got {orders}")
    if retrieve >= len(examples) and retrieve:
        raise ConfigError(f"{where}.retrieve must be less than the number of examples ({len(examples)}), got {retrieve}")
    if retrieve and calibrate:
        raise ConfigError(f"{where}: calibrate needs one fixed few-shot block per order, so it cannot be combined with "
                          "retrieve (per-candidate examples); set one of them")
    return LabelJudgeSpec(
        name=_text(_require(node, "name", where), f"{where}.name"),
        query=query,
        labels=labels,
        shots=_text(node.get("shots") or "", f"{where}.shots"),
        logit_scale=scale,
        kind=kind,
        values=values,
        examples=examples,
        orders=orders,
        retrieve=retrieve,
        calibrate=calibrate,
        max_lines=_int(node, "max_lines", where, 0, low=0),
        last_sentences=_int(node, "last_sentences", where, 0, low=0),
    )


def _examples(value: Any, where: str, labels: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Few-shot examples: a list of ``{text, label}`` with each label one of ``labels`` (spaces optional)."""
    if value is None:
        return ()
    by_name = {x.strip(): x for x in labels}
    out = []
    for i, item in enumerate(_list(value, where, "a list of {text, label} items")):
        item = _mapping(item, f"{where}[{i}]")
        _check_keys(item, {"text", "label"}, f"{where}[{i}]")
        text = _text(_require(item, "text", f"{where}[{i}]"), f"{where}[{i}].text")
        label = _text(_require(item, "label", f"{where}[{i}]"), f"{where}[{i}].label")
        if label not in labels and label.strip() not in by_name:
            raise ConfigError(f"{where}[{i}].label must be one of the judge's labels "
                              f"({', '.join(sorted(by_name))}), got {label!r}")
        out.append((text, label if label in labels else by_name[label.strip()]))
    return tuple(out)


def _computed_measure(node: Mapping[str, Any], where: str) -> Measure:
    """A measure whose value a domain plugin computes (no judge prompt)."""
    _check_keys(node, _COMPUTED_KEYS, where)
    name = _text(_require(node, "name", where), f"{where}.name")
    names = _texts(node.get("categories") or (), f"{where}.categories")
    if names:
        if node.get("edges") is not None:
            raise ConfigError(f"{where}: a categorical measure has one bin per category; remove 'edges'")
        edges = tuple(float(k) for k in range(len(names) + 1))
    else:
        if node.get("edges") is None:
            raise ConfigError(f"{where}: a computed measure needs 'edges' (bin boundaries) or 'categories' (one name per bin)")
        edges = _edges(node["edges"], f"{where}.edges")
    judge = LabelJudgeSpec(name=name, query=TEXT, labels=(), kind="computed")
    return Measure(judge=judge, edges=edges, axis_label=str(node.get("axis_label") or name), categories=names)


def _measure(node: Mapping[str, Any], where: str) -> Measure:
    node = _mapping(node, where)
    if node.get("kind") == "computed":
        return _computed_measure(node, where)
    judge = _judge(node, where, _MEASURE_KEYS)
    if judge.kind == "categorical":
        # Bin k holds category k: the measure's value is the index of the argmax label.
        if node.get("edges") is not None:
            raise ConfigError(f"{where}: a categorical measure has one bin per label; remove 'edges'")
        names = _texts(node.get("categories") or judge.categories, f"{where}.categories")
        if len(names) != len(judge.labels):
            raise ConfigError(f"{where}.categories must name each of the {len(judge.labels)} labels")
        edges = tuple(float(k) for k in range(len(names) + 1))
        return Measure(judge=judge, edges=edges, axis_label=str(node.get("axis_label") or judge.name), categories=names,
                       anchors=_anchors(node, where))
    if node.get("categories") is not None:
        raise ConfigError(f"{where}.categories is only used by kind: categorical")
    edges = _edges(_require(node, "edges", where), f"{where}.edges")
    if judge.kind == "label" and (edges[0] > 0 or edges[-1] < 1):
        raise ConfigError(f"{where}.edges must span [0, 1] (first <= 0, last >= 1), got [{edges[0]}, {edges[-1]}]")
    label = _text(node.get("axis_label") or judge.name, f"{where}.axis_label")
    return Measure(judge=judge, edges=edges, axis_label=label, anchors=_anchors(node, where))


def _anchors(node: Mapping[str, Any], where: str) -> tuple[str, ...]:
    anchors = _texts(node.get("anchors") or (), f"{where}.anchors")
    if anchors and len(anchors) != 2:
        raise ConfigError(f"{where}.anchors must be two texts (for the first and the second label)")
    return anchors


def domain_from_config(node: Mapping[str, Any], *, allow_code: bool = False) -> Domain:
    """Validates a domain config node and builds a :class:`Domain`.

    A domain is data: its texts are taken literally (``${...}`` is not interpolated),
    and its ``plugin`` must be a registered one (:func:`qdaif.plugin.plugin_class`)
    unless ``allow_code`` is set.

    Args:
        node: The composed ``domain`` config (a mapping, e.g. an OmegaConf DictConfig).
        allow_code: Let ``plugin`` name any importable module (e.g. one in the current
            folder); its code runs when the domain is loaded.

    Raises:
        ConfigError: A field is missing, unknown, of the wrong type or out of range; the
            message names it and the allowed values.
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        node = _unescaped(OmegaConf.to_container(node, resolve=False))
    node = _mapping(node, "domain")
    where = f"domain {node.get('name', '?')}"
    _check_keys(node, _DOMAIN_KEYS, where)
    lmx_node = _mapping(_require(node, "lmx", where), f"{where}.lmx")
    _check_keys(lmx_node, {"instruction", "separator", "num_examples"}, f"{where}.lmx")
    lmx = LMXPrompt(
        instruction=_text(_require(lmx_node, "instruction", f"{where}.lmx"), f"{where}.lmx.instruction"),
        separator=_text(lmx_node.get("separator", "\n###\n"), f"{where}.lmx.separator"),
        num_examples=_int(lmx_node, "num_examples", f"{where}.lmx", 3, low=1),
    )
    plugin = _text(node.get("plugin") or "", f"{where}.plugin")
    raw_seeds = node.get("seeds")
    if raw_seeds is None and plugin:
        from qdaif.plugin import plugin_class

        raw_seeds = plugin_class(plugin, where, allow_code=allow_code).default_seeds(
            _mapping(node.get("settings") or {}, f"{where}.settings"))
    seeds = tuple(s.strip() for s in _texts(raw_seeds if raw_seeds is not None else _require(node, "seeds", where),
                                            f"{where}.seeds"))
    if len(seeds) < 1 or not all(seeds):
        raise ConfigError(f"{where}.seeds must be a non-empty list of non-empty texts")
    gen_node = _mapping(node.get("generation") or {}, f"{where}.generation")
    _check_keys(gen_node, _GENERATION_KEYS | {"per_category"}, f"{where}.generation")
    per_category_node = gen_node.pop("per_category", None)
    generation = _generation(gen_node, f"{where}.generation")
    measures_node = _list(_require(node, "measures", where), f"{where}.measures",
                          "a list of measures (each line starting with '- name:')")
    if not measures_node:
        raise ConfigError(f"{where}.measures must list at least one measure")
    measures = tuple(_measure(m, f"{where}.measures[{i}]") for i, m in enumerate(measures_node))
    per_category = None if per_category_node is None else _category_generation(
        per_category_node, f"{where}.generation.per_category", generation, measures)
    mutation = _text(node.get("mutation") or "lmx_near", f"{where}.mutation")
    if mutation not in MUTATIONS:
        raise ConfigError(f"{where}.mutation must be one of {', '.join(MUTATIONS)}, got {mutation!r}")
    rewrite = None
    if node.get("rewrite") is not None:
        rw = _mapping(node["rewrite"], f"{where}.rewrite")
        _check_keys(rw, {"header", "separator", "num_examples"}, f"{where}.rewrite")
        rewrite = RewritePrompt(header=_text(_require(rw, "header", f"{where}.rewrite"), f"{where}.rewrite.header"),
                                separator=_text(rw.get("separator", "\n###\n"), f"{where}.rewrite.separator"),
                                num_examples=_int(rw, "num_examples", f"{where}.rewrite", 2, low=1))
        names = {m.name: m.categories[0] if m.categories else "x" for m in measures}
        try:
            rewrite.header.format(**names)
        except (KeyError, IndexError) as e:
            raise ConfigError(f"{where}.rewrite.header has a placeholder {e} that is not a measure name "
                              f"(measures: {', '.join(names)})") from None
    settings = _mapping(node.get("settings") or {}, f"{where}.settings")
    if settings and not plugin:
        raise ConfigError(f"{where}.settings is only used by domains with a 'plugin'")
    placeholders = frozenset({"text"})
    if plugin:
        from qdaif.plugin import plugin_class

        placeholders = plugin_class(plugin, where, allow_code=allow_code).placeholders
    judges = {}
    for key, jn in _mapping(node.get("judges") or {}, f"{where}.judges").items():
        if not plugin:
            raise ConfigError(f"{where}.judges is only used by domains with a 'plugin'")
        jn = {"name": key, **_mapping(jn, f"{where}.judges.{key}")}
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
        zero_shot=_text(node.get("zero_shot") or "", f"{where}.zero_shot"),
        rewrite=rewrite,
        name=_text(_require(node, "name", where), f"{where}.name"),
        version=_int(node, "version", where, 1, low=0),
        description=_text(node.get("description") or "", f"{where}.description"),
        lmx=lmx,
        seeds=seeds,
        generation=generation,
        quality=quality,
        measures=measures,
        plugin=plugin,
        settings=settings,
        judges=judges,
        allow_code=allow_code,
        per_category=per_category,
    )
