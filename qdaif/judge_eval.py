"""Judge evaluation: how well a domain's judges agree with hand labels.

``python -m qdaif judge --labels FILE [--output OUT.json] [--bootstrap 1000] [--seed 0] [domain=NAME]``
reads a labelled JSONL or CSV file, judges its texts and reports, per judge:

- a label judge (the value is P(first label)): AUC of the positive class against the
  other, accuracy at the archive's threshold (0.5), expected calibration error (ECE)
  of P(positive), and the bins of the domain each class falls in;
- a categorical judge: accuracy, macro-F1, ECE of the top probability, the confusion
  matrix (rows: true category, columns: predicted);
- a rating judge: Spearman correlation with a labelled number and accuracy within one
  point; with boolean labels (good / not good) instead: AUC, accuracy at the middle of the
  value range and ECE of the value scaled to [0, 1];
- 95 % percentile bootstrap intervals (rows resampled, seeded) of every headline metric.

Measures are evaluated on the texts whose quality label is true (when the file has a
quality column) and on all texts labelled for the measure. The metrics are plain
functions of arrays (ranks from :func:`scipy.stats.rankdata`), checked against
scikit-learn in the tests.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdaif.domain import Domain, LabelJudgeSpec, Measure
from qdaif.errors import ConfigError

__all__ = [
    "auc", "accuracy", "macro_f1", "confusion_matrix", "expected_calibration_error", "spearman", "bootstrap_ci",
    "read_utf8", "Target", "LabelledSet", "read_labelled", "parse_positive", "JudgeReport", "evaluate_judges",
    "format_reports", "reports_to_json",
]

QUALITY_ALIASES = ("good", "on_topic")  # quality columns of the project's labelled sets
META_COLUMNS = ("split", "id")  # columns that label no judge and are not reported as unknown
ECE_BINS = 10
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


# ------------------------------------------------------------------ metrics
def auc(y: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count 1/2.

    The Mann-Whitney U statistic from average ranks, so tied scores are handled exactly.

    Args:
        y: Shape ``(n,)``, true for the positive class.
        scores: Shape ``(n,)``, higher means more positive.

    Returns:
        The AUC in [0, 1], or ``nan`` when ``y`` holds only one class.
    """
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def accuracy(y: Sequence[Any], pred: Sequence[Any]) -> float:
    """Fraction of ``pred`` equal to ``y`` (``nan`` for no rows)."""
    y, pred = np.asarray(y), np.asarray(pred)
    return float(np.mean(y == pred)) if len(y) else float("nan")


def confusion_matrix(y: Sequence[int], pred: Sequence[int], k: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Args:
        y: Shape ``(n,)``, true class indices in ``[0, k)``.
        pred: Shape ``(n,)``, predicted class indices in ``[0, k)``.
        k: The number of classes.

    Returns:
        Shape ``(k, k)``, int: rows are true classes, columns predicted ones.
    """
    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def macro_f1(y: Sequence[int], pred: Sequence[int], k: int) -> float:
    """Unweighted mean of the per-class F1 over the classes that occur in ``y`` or ``pred``.

    A present class that is never predicted right has F1 0 (as scikit-learn's
    ``f1_score(average="macro")``).

    Returns:
        Macro-F1 in [0, 1], or ``nan`` for no rows.
    """
    if len(y) == 0:
        return float("nan")
    cm = confusion_matrix(y, pred, k)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    present = (support + predicted) > 0
    f1 = 2 * tp[present] / (support[present] + predicted[present])
    return float(f1.mean())


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[float], bins: int = ECE_BINS) -> float:
    """Expected calibration error with equal-width bins on [0, 1].

    ``sum_b (n_b / n) * |mean(correct in b) - mean(confidence in b)|``; bin ``b`` holds
    confidences in ``[b/bins, (b+1)/bins)`` and the last one also holds 1.

    Args:
        confidence: Shape ``(n,)``, predicted probabilities of the event in [0, 1].
        correct: Shape ``(n,)``, 1 where the event happened, else 0.
        bins: The number of bins.

    Returns:
        The ECE in [0, 1], or ``nan`` for no rows.
    """
    p = np.asarray(confidence, dtype=np.float64)
    c = np.asarray(correct, dtype=np.float64)
    if len(p) == 0:
        return float("nan")
    b = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(b, minlength=bins)
    gap = np.abs(np.bincount(b, weights=c, minlength=bins) - np.bincount(b, weights=p, minlength=bins))
    return float(gap.sum() / len(p))  # per bin: n_b * |mean(c) - mean(p)| = |sum(c) - sum(p)|


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); ``nan`` if either is constant."""
    from scipy.stats import rankdata

    if len(x) < 2:
        return float("nan")
    rx, ry = rankdata(np.asarray(x, dtype=np.float64)), rankdata(np.asarray(y, dtype=np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def bootstrap_ci(statistic: Callable[[np.ndarray], Mapping[str, float]], n: int, *, resamples: int, seed: int,
                 level: float = 0.95) -> dict[str, tuple[float, float] | None]:
    """Percentile bootstrap intervals of several statistics of the same rows.

    Each resample draws ``n`` row indices with replacement (one generator seeded with
    ``seed``) and evaluates every statistic on them. Resamples where a statistic is
    undefined (``nan``, e.g. an AUC with one class) are left out of its interval.

    Args:
        statistic: Maps row indices, shape ``(n,)``, to named values.
        n: The number of rows.
        resamples: The number of bootstrap resamples (0: no intervals).
        seed: Seed of the resampling.
        level: Coverage of the interval.

    Returns:
        Name -> (low, high), or ``None`` where no resample defined the statistic.
    """
    if resamples <= 0 or n == 0:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        for name, value in statistic(rng.integers(0, n, size=n)).items():
            draws.setdefault(name, []).append(value)
    out: dict[str, tuple[float, float] | None] = {}
    tail = 100 * (1 - level) / 2
    for name, values in draws.items():
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        out[name] = (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) if len(v) else None
    return out


# -------------------------------------------------------------- reading files
def read_utf8(path: str | Path, what: str) -> str:
    """Reads a UTF-8 text file (a leading byte-order mark is dropped).

    Args:
        path: The file.
        what: How the user named it (e.g. ``"labels file"``), for the error message.

    Raises:
        ConfigError: The file does not exist or is not UTF-8 (naming the line).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist")
    data = p.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{p} line {line}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                          "save the file with UTF-8 encoding") from None


def _raw_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs of a JSONL or CSV file."""
    text = read_utf8(path, "labels file")
    suffix = path.suffix.lower()
    rows: list[tuple[int, dict[str, Any]]] = []
    if suffix in (".jsonl", ".ndjson", ".json"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path} line {n}: invalid JSON ({e.msg}); write one JSON object per line") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path} line {n}: expected a JSON object such as {{\"text\": ...}}, "
                                  f"got {type(row).__name__}")
            rows.append((n, row))
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames:
            raise ConfigError(f"{path} is empty; the first line must be a header with a 'text' column")
        try:
            for row in reader:
                if None in row:
                    raise ConfigError(f"{path} line {reader.line_num}: more fields than the header has columns "
                                      "(quote a text that holds commas)")
                rows.append((reader.line_num, dict(row)))
        except csv.Error as e:
            raise ConfigError(f"{path} line {reader.line_num}: invalid CSV ({e})") from None
    else:
        raise ConfigError(f"labels file {str(path)!r} must be .jsonl (one JSON object per line) or .csv (with a header)")
    if not rows:
        raise ConfigError(f"labels file {str(path)!r} holds no rows")
    return rows


@dataclasses.dataclass(frozen=True)
class Target:
    """The hand labels of one judge.

    Attributes:
        judge: The judge's name (the quality judge's or a measure's).
        role: ``"quality"`` or ``"measure"``.
        column: The file's column holding the labels.
        kind: The judge's kind: ``label``, ``categorical`` or ``rating``.
        values: Shape ``(n_rows,)``: 1/0 for boolean labels, the category index
            (categorical), or the labelled number (rating); ``nan`` where a row is unlabelled.
        boolean: The labels are true/false (always for ``label``; for ``rating`` when the
            column holds booleans).
        classes: Names of the classes: (positive, negative) for boolean labels, the
            categories for a categorical judge, empty for numbers.
    """

    judge: str
    role: str
    column: str
    kind: str
    values: np.ndarray
    boolean: bool
    classes: tuple[str, ...]

    @property
    def labelled(self) -> np.ndarray:
        """Mask of the rows that carry a label, shape ``(n_rows,)``."""
        return np.isfinite(self.values)


@dataclasses.dataclass(frozen=True)
class LabelledSet:
    """Texts and their hand labels, per judge.

    Attributes:
        path: The file read.
        texts: The ``n_rows`` texts.
        lines: The line of each row in the file.
        targets: Judge name -> its labels, quality judge first, then measures in domain order.
        warnings: Messages about the file that are not errors (e.g. ignored columns).
    """

    path: str
    texts: list[str]
    lines: list[int]
    targets: dict[str, Target]
    warnings: list[str]


def parse_positive(value: str) -> dict[str, str]:
    """Parses ``--positive judge:class[,judge:class...]``.

    Raises:
        ConfigError: An item is not ``judge:class``.
    """
    out = {}
    for item in (x.strip() for x in value.split(",")):
        name, sep, cls = item.partition(":")
        if not item or not sep or not name.strip() or not cls.strip():
            raise ConfigError(f"--positive {value!r}: write judge:class pairs separated by commas, e.g. --positive genre:horror")
        out[name.strip()] = cls.strip()
    return out


def _is_blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _as_bool(v: Any, allow_numbers: bool) -> bool | None:
    """True/False for a boolean-like value, else None."""
    if isinstance(v, bool):
        return v
    if allow_numbers and isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _TRUE and (allow_numbers or s != "1"):
            return True
        if s in _FALSE and (allow_numbers or s != "0"):
            return False
    return None


def _declared_positive(measure: Measure | None) -> list[str]:
    """Classes an ``axis_label`` such as ``"Genre: P(horror)"`` names as the value's event."""
    if measure is None:
        return []
    m = re.search(r"P\(([^)]+)\)", measure.axis_label)
    if not m:
        return []
    event = m.group(1).strip()
    return [event, event.split()[0]]


class _Column:
    """Parses one column's values for one judge; errors name the row."""

    def __init__(self, *, path: Path, column: str, spec: LabelJudgeSpec, role: str, measure: Measure | None,
                 positive: str | None) -> None:
        self.path, self.column, self.spec, self.role, self.measure = path, column, spec, role, measure
        self.positive = positive

    def _fail(self, line: int, value: Any, why: str) -> ConfigError:
        return ConfigError(f"{self.path} line {line}: {self.column}={json.dumps(value, ensure_ascii=False)} {why}")

    def parse(self, cells: Sequence[tuple[int, Any]]) -> Target:
        kind = self.spec.kind
        if kind == "categorical":
            return self._categorical(cells)
        if kind == "rating":
            return self._rating(cells)
        return self._label(cells)

    def _target(self, values: list[float], boolean: bool, classes: tuple[str, ...]) -> Target:
        return Target(judge=self.spec.name, role=self.role, column=self.column, kind=self.spec.kind,
                      values=np.asarray(values, dtype=np.float64), boolean=boolean, classes=classes)

    def _categorical(self, cells: Sequence[tuple[int, Any]]) -> Target:
        names = tuple(self.measure.categories) if self.measure and self.measure.categories else self.spec.categories
        index = {c.lower(): k for k, c in enumerate(names)}
        index.update({c.lower(): k for k, c in enumerate(self.spec.categories)})
        values = []
        for line, v in cells:
            if _is_blank(v):
                values.append(np.nan)
            elif isinstance(v, str) and v.strip().lower() in index:
                values.append(index[v.strip().lower()])
            else:
                why = "is not a category" if isinstance(v, str) else f"is a {type(v).__name__}, not a category name"
                raise self._fail(line, v, f"{why} of judge {self.spec.name}; write one of: {', '.join(names)} "
                                          "(or leave it empty)")
        return self._target(values, False, names)

    def _rating(self, cells: Sequence[tuple[int, Any]]) -> Target:
        values, mode = [], None
        for line, v in cells:
            if _is_blank(v):
                values.append(np.nan)
                continue
            b = _as_bool(v, allow_numbers=False)
            x = None
            if b is None and not isinstance(v, bool):
                try:
                    x = float(v) if isinstance(v, (int, float, str)) else None
                except ValueError:
                    x = None
                if x is not None and not math.isfinite(x):
                    x = None
            if b is None and x is None:
                raise self._fail(line, v, f"is neither a number nor true/false; the rating judge {self.spec.name} "
                                          f"needs a number (its range is {min(self.spec.values):g}..{max(self.spec.values):g}) "
                                          "or true/false for good/not good")
            this = "boolean" if b is not None else "number"
            if mode is None:
                mode = this
            elif this != mode:
                raise self._fail(line, v, f"is a {this} but the column's first label is a {mode}; "
                                          f"use only numbers or only true/false in {self.column}")
            values.append(float(b) if b is not None else x)
        boolean = mode == "boolean"
        return self._target(values, boolean, ("true", "false") if boolean else ())

    def _label(self, cells: Sequence[tuple[int, Any]]) -> Target:
        labels = [c.lower() for c in self.spec.categories]
        strings = [v.strip() for _, v in cells if isinstance(v, str) and not _is_blank(v)
                   and _as_bool(v, allow_numbers=True) is None]
        positive = self.positive
        if positive is None and any(s.lower() not in labels for s in strings):
            seen = {s.lower() for s in strings}
            positive = next((c for c in _declared_positive(self.measure) if c.lower() in seen), None)
        negatives: dict[str, int] = {}
        values = []
        for line, v in cells:
            if _is_blank(v):
                values.append(np.nan)
                continue
            b = _as_bool(v, allow_numbers=True)
            if b is not None:
                values.append(float(b))
                continue
            if not isinstance(v, str):
                raise self._fail(line, v, f"is a {type(v).__name__}; the label judge {self.spec.name} needs "
                                          f"true/false or a class name ({', '.join(self.spec.categories)})")
            s = v.strip()
            if positive is not None:
                if s.lower() == positive.lower():
                    values.append(1.0)
                    continue
                negatives.setdefault(s.lower(), line)
                if len(negatives) > 1:
                    first, other = list(negatives)
                    raise self._fail(line, v, f"is a third class: with {positive!r} as the class P({labels[0]}) stands "
                                              f"for, {self.column} may hold one other class, and it already holds "
                                              f"{first!r}; use true/false for more classes")
                values.append(0.0)
            elif s.lower() in labels:
                values.append(float(s.lower() == labels[0]))
            else:
                raise self._fail(line, v, f"is not a label of judge {self.spec.name} ({', '.join(self.spec.categories)}); "
                                          f"write one of them or true/false, or name the class P({self.spec.categories[0]}) "
                                          f"stands for with positive={self.spec.name}:{s}")
        if positive is None:
            pos = self.spec.categories[0]
            neg = self.spec.categories[1] if len(self.spec.categories) == 2 else f"not {pos}"
        else:
            pos = positive
            neg = next(iter(negatives), f"not {positive}")
        if self.role == "quality" and not strings:
            pos, neg = "true", "false"
        return self._target(values, True, (pos, neg))


def _judges(domain: Domain) -> list[tuple[LabelJudgeSpec, str, Measure | None]]:
    if domain.plugin or domain.quality is None:
        raise ConfigError(f"judge evaluation needs a domain judged by label judges; domain {domain.name} is judged "
                          f"by its plugin ({domain.plugin})")
    return [(domain.quality, "quality", None)] + [(m.judge, "measure", m) for m in domain.measures]


def read_labelled(path: str | Path, domain: Domain, *, positive: Mapping[str, str] | None = None,
                  split: str | None = None) -> LabelledSet:
    """Reads a labelled JSONL or CSV file for a domain's judges.

    Columns: ``text``; one per judge, named as the judge (the quality judge's ``name``,
    or ``good``/``on_topic``; each measure's ``name``); optionally ``split`` and ``id``.
    An empty or null value leaves the row unlabelled for that judge. Label judges take
    true/false (or 1/0, yes/no) or a class name: one of the judge's labels, or the class
    their first label's probability stands for (``positive``, else the ``P(...)`` in the
    measure's ``axis_label``); categorical judges a category name; rating judges a
    number, or true/false for good/not good.

    Args:
        path: A ``.jsonl`` or ``.csv`` file.
        domain: The domain whose judges are evaluated.
        positive: Judge name -> the class P(first label) stands for.
        split: Keep only the rows whose ``split`` column equals this.

    Returns:
        The texts and each labelled judge's targets.

    Raises:
        ConfigError: The file is missing, not UTF-8, not JSONL/CSV, has a row without
            text, a value of the wrong type or an unknown category, no judge column, or
            ``positive`` names no label judge. The message names the file and line.
    """
    path = Path(path)
    judges = _judges(domain)
    by_name = {spec.name: (spec, role, m) for spec, role, m in judges}
    positive = dict(positive or {})
    for name in positive:
        if name not in by_name or by_name[name][0].kind != "label":
            label_names = [s.name for s, _, _ in judges if s.kind == "label"]
            raise ConfigError(f"positive= names {name!r}, which is not a label judge of domain {domain.name}; "
                              f"label judges: {', '.join(label_names) or 'none'}")
    rows = _raw_rows(path)
    if split is not None:
        kept = [(n, r) for n, r in rows if str(r.get("split")) == split]
        if not kept:
            splits = sorted({str(r.get("split")) for _, r in rows if not _is_blank(r.get("split"))})
            raise ConfigError(f"{path} has no rows with split={split!r}; splits in the file: {', '.join(splits) or 'none'}")
        rows = kept
    columns: list[str] = []
    for _, r in rows:
        columns += [c for c in r if c not in columns]
    # Column -> judge; the quality judge also answers to the labelled sets' good/on_topic.
    owner: dict[str, str] = {}
    for c in columns:
        if c in by_name:
            owner[c] = c
        elif c in QUALITY_ALIASES:
            owner[c] = domain.quality.name
    quality_cols = [c for c, j in owner.items() if j == domain.quality.name]
    if len(quality_cols) > 1:
        raise ConfigError(f"{path}: columns {' and '.join(repr(c) for c in quality_cols)} both label the quality judge "
                          f"{domain.quality.name}; keep one")
    warnings = []
    unknown = [c for c in columns if c not in owner and c != "text" and c not in META_COLUMNS]
    names = [f"{domain.quality.name} (or good)"] + [m.name for m in domain.measures]
    if unknown:
        hints = [f"{c!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(c, list(by_name) + ["good"], n=1))
                 else repr(c) for c in unknown]
        warnings.append(f"{path}: ignoring column(s) {', '.join(hints)}: not a judge of domain {domain.name}; "
                        f"its judges are {', '.join(names)}")
    if "text" not in columns:
        raise ConfigError(f"{path} has no 'text' column; every row needs the text the judges score")
    if not owner:
        raise ConfigError(f"{path} has no column for any judge of domain {domain.name}; name the label columns "
                          f"after its judges: {', '.join(names)}")
    texts, lines = [], []
    for n, r in rows:
        t = r.get("text")
        if not isinstance(t, str) or not t.strip():
            what = "missing" if t is None else ("empty" if isinstance(t, str) else f"a {type(t).__name__}")
            raise ConfigError(f"{path} line {n}: 'text' is {what}; every row needs the text the judges score "
                              "(remove the row or fill it in)")
        texts.append(t)
        lines.append(n)
    targets = {}
    for spec, role, measure in judges:
        col = next((c for c, j in owner.items() if j == spec.name), None)
        if col is None:
            continue
        parser = _Column(path=path, column=col, spec=spec, role=role, measure=measure, positive=positive.get(spec.name))
        targets[spec.name] = parser.parse([(n, r.get(col)) for n, r in rows])
    return LabelledSet(path=str(path), texts=texts, lines=lines, targets=targets, warnings=warnings)


# ---------------------------------------------------------------- evaluating
@dataclasses.dataclass
class JudgeReport:
    """How one judge agrees with the labels on one subset of the texts.

    Attributes:
        judge: The judge's name.
        role: ``quality`` or ``measure``.
        kind: ``label``, ``categorical`` or ``rating``.
        column: The labels' column.
        subset: ``all`` (every text labelled for the judge) or ``good`` (those whose
            quality label is true, too).
        subset_note: The subset in words.
        n: Texts evaluated.
        metrics: Headline metric name -> value.
        ci95: Headline metric name -> 95 % bootstrap interval (None where undefined).
        details: Everything else: threshold, classes, confusion matrix, bins, cells.
    """

    judge: str
    role: str
    kind: str
    column: str
    subset: str
    subset_note: str
    n: int
    metrics: dict[str, float]
    ci95: dict[str, tuple[float, float] | None]
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: each metric as ``{"value": x, "ci95": [low, high]}``."""
        metrics = {k: {"value": _finite(v), "ci95": list(self.ci95[k]) if self.ci95.get(k) else None}
                   for k, v in self.metrics.items()}
        return {"judge": self.judge, "role": self.role, "kind": self.kind, "column": self.column, "subset": self.subset,
                "subset_note": self.subset_note, "n": self.n, "metrics": metrics, "details": self.details}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _label_stats(y: np.ndarray, score: np.ndarray, prob: np.ndarray, threshold: float) -> Callable[[np.ndarray], dict]:
    def stats(idx: np.ndarray) -> dict[str, float]:
        return {"auc": auc(y[idx], score[idx]), "accuracy": accuracy(y[idx], score[idx] >= threshold),
                "ece": expected_calibration_error(prob[idx], y[idx])}
    return stats


def _categorical_stats(y: np.ndarray, probs: np.ndarray) -> Callable[[np.ndarray], dict]:
    k = probs.shape[1]
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)

    def stats(idx: np.ndarray) -> dict[str, float]:
        return {"accuracy": accuracy(y[idx], pred[idx]), "macro_f1": macro_f1(y[idx], pred[idx], k),
                "ece": expected_calibration_error(conf[idx], y[idx] == pred[idx])}
    return stats


def _rating_stats(y: np.ndarray, v: np.ndarray) -> Callable[[np.ndarray], dict]:
    def stats(idx: np.ndarray) -> dict[str, float]:
        return {"spearman": spearman(v[idx], y[idx]), "within_one": float(np.mean(np.abs(v[idx] - y[idx]) <= 1))}
    return stats


def _bin_names(measure: Measure) -> list[str]:
    if measure.categories:
        return list(measure.categories)
    e = measure.edges
    return [f"[{e[k]:g}, {e[k + 1]:g}" + ("]" if k == len(e) - 2 else ")") for k in range(len(e) - 1)]


def _cells(domain: Domain, measures: np.ndarray) -> dict[str, Any]:
    """Counts of the domain's cells that rows of measure values fall in."""
    from qdaif.archive import cells_of, make_archive

    archive = make_archive([m.edges for m in domain.measures])
    names = [_bin_names(m) for m in domain.measures]
    counts: dict[str, int] = {}
    if len(measures):
        for cell in cells_of(archive, measures):
            key = " × ".join(names[a][int(b)] for a, b in enumerate(cell))
            counts[key] = counts.get(key, 0) + 1
    return {"filled": len(counts), "of": int(np.prod(domain.dims)),
            "counts": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}


def _bins(measure: Measure, values: np.ndarray) -> list[int]:
    e = np.asarray(measure.edges)
    return np.bincount(np.searchsorted(e[1:-1], values, side="right"), minlength=measure.num_bins).tolist()


def _evaluate_one(domain: Domain, spec: LabelJudgeSpec, measure: Measure | None, target: Target, ev: Any,
                  mask: np.ndarray, subset: str, note: str, resamples: int, seed: int) -> JudgeReport:
    k = None if measure is None else [m.name for m in domain.measures].index(measure.name)
    value = ev.quality if k is None else ev.measures[:, k]
    probs = ev.label_probs[spec.name]
    mask = mask & np.isfinite(value)
    failed = int((target.labelled & ~np.isfinite(value)).sum())
    y = target.values[mask]
    details: dict[str, Any] = {}
    if failed:
        details["judge_failed"] = failed
    if spec.kind == "categorical":
        y = y.astype(np.int64)
        p = probs[mask]
        stats = _categorical_stats(y, p)
        cats = list(target.classes)
        details.update(chance=1 / len(cats), classes=cats,
                       confusion={"rows": "true", "columns": "predicted", "classes": cats,
                                  "matrix": confusion_matrix(y, p.argmax(axis=1), len(cats)).tolist()})
    elif spec.kind == "rating" and not target.boolean:
        stats = _rating_stats(y, value[mask])
        details.update(values=[float(v) for v in spec.values])
    else:
        yb = y.astype(bool)
        v = value[mask]
        if spec.kind == "rating":
            lo, hi = min(spec.values), max(spec.values)
            threshold = (lo + hi) / 2
            prob = (v - lo) / (hi - lo)
            details.update(threshold=threshold, ece_of="the value scaled to [0, 1]")
        else:
            threshold, prob = 0.5, v
            details.update(threshold=threshold, ece_of=f"P({spec.categories[0]})")
        stats = _label_stats(yb, v, prob, threshold)
        pos, neg = target.classes
        details.update(positive=pos, negative=neg, n_positive=int(yb.sum()), n_negative=int((~yb).sum()),
                       mean_value={pos: _finite(float(v[yb].mean())) if yb.any() else None,
                                   neg: _finite(float(v[~yb].mean())) if (~yb).any() else None})
        if measure is not None:
            details["bins"] = {"bins": _bin_names(measure), pos: _bins(measure, v[yb]), neg: _bins(measure, v[~yb])}
        elif spec.kind in ("label", "rating"):
            idx = np.flatnonzero(mask)[yb]
            finite = idx[np.all(np.isfinite(ev.measures[idx]), axis=1)]
            details["cells_of_positive"] = _cells(domain, ev.measures[finite])
    metrics = stats(np.arange(len(y)))
    ci = bootstrap_ci(stats, len(y), resamples=resamples, seed=seed)
    return JudgeReport(judge=spec.name, role="quality" if measure is None else "measure", kind=spec.kind,
                       column=target.column, subset=subset, subset_note=note, n=int(len(y)), metrics=metrics,
                       ci95=ci, details=details)


def evaluate_judges(domain: Domain, data: LabelledSet, evaluation: Any, *, resamples: int = 1000,
                    seed: int = 0) -> list[JudgeReport]:
    """Compares a domain's judges with the labels of ``data``.

    Args:
        domain: The domain whose judges produced ``evaluation``.
        data: The labelled texts (:func:`read_labelled`).
        evaluation: A :class:`qdaif.feedback.Evaluation` of ``data.texts`` (same order).
        resamples: Bootstrap resamples per interval (0: none).
        seed: Seed of every bootstrap (each report draws from its own generator).

    Returns:
        One report per labelled judge and subset: the quality judge on all its labelled
        texts; each measure on the texts whose quality label is true (when there is a
        quality column) and on all texts labelled for it.
    """
    reports = []
    quality = data.targets.get(domain.quality.name)
    good = None
    if quality is not None:
        good = quality.values > (0.5 if quality.boolean else
                                 (min(domain.quality.values) + max(domain.quality.values)) / 2)
        good &= quality.labelled
        reports.append(_evaluate_one(domain, domain.quality, None, quality, evaluation, quality.labelled, "all",
                                     f"every text with a {quality.column!r} label", resamples, seed))
    for m in domain.measures:
        t = data.targets.get(m.name)
        if t is None:
            continue
        if good is not None:
            word = "true" if quality.boolean else "above the middle of the range"
            reports.append(_evaluate_one(domain, m.judge, m, t, evaluation, t.labelled & good, "good",
                                         f"the measure's labelled texts whose {quality.column!r} label is {word}",
                                         resamples, seed))
        reports.append(_evaluate_one(domain, m.judge, m, t, evaluation, t.labelled, "all",
                                     f"every text with a {t.column!r} label", resamples, seed))
    return reports


# ------------------------------------------------------------------- output
_METRIC_NAMES = {"auc": "AUC", "accuracy": "accuracy", "macro_f1": "macro-F1", "ece": "ECE", "spearman": "Spearman",
                 "within_one": "within 1 point"}


def _fmt(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.3f}"


def format_reports(reports: Sequence[JudgeReport], *, header: str = "") -> str:
    """The reports as a Markdown table, then each judge's confusion matrix, bins or cells."""
    lines = [header, ""] if header else []
    lines += ["| judge | texts | n | metric | value | 95 % CI |", "|---|---|---|---|---|---|"]
    for r in reports:
        for j, (name, value) in enumerate(r.metrics.items()):
            label = _METRIC_NAMES.get(name, name)
            if name == "accuracy" and "threshold" in r.details:
                label += f" @{r.details['threshold']:g}"
            ci = r.ci95.get(name)
            ci_text = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "—"
            first = j == 0
            judge = f"{r.judge} ({r.role}, {r.kind})" if first else ""
            lines.append(f"| {judge} | {r.subset if first else ''} | {r.n if first else ''} | {label} | {_fmt(value)} | {ci_text} |")
    lines.append("")
    notes = {"all": "every text labelled for the judge"}
    notes.update({r.subset: r.subset_note for r in reports if r.subset != "all"})
    lines.append("texts: " + "; ".join(f"{k} = {v}" for k, v in notes.items()))
    for r in reports:
        d = r.details
        tag = f"{r.judge} ({r.subset})"
        if "confusion" in d:
            cats = d["confusion"]["classes"]
            width = max(len(c) for c in cats) + 1
            lines.append(f"{tag}: confusion matrix, rows true, columns predicted (chance accuracy {d['chance']:.2f})")
            lines.append(" " * (width + 2) + " ".join(f"{c[:width]:>{width}}" for c in cats))
            for c, row in zip(cats, d["confusion"]["matrix"]):
                lines.append(f"  {c:>{width}}" + " ".join(f"{x:>{width}}" for x in row))
        if "bins" in d:
            pos, neg = d["positive"], d["negative"]
            lines.append(f"{tag}: bins {d['bins']['bins'][0]} .. {d['bins']['bins'][-1]}: {pos} {d['bins'][pos]}, "
                         f"{neg} {d['bins'][neg]}")
        if "cells_of_positive" in d:
            c = d["cells_of_positive"]
            top = ", ".join(f"{k}: {v}" for k, v in list(c["counts"].items())[:8])
            lines.append(f"{tag}: the {d['n_positive']} {d['positive']} texts fill {c['filled']} of {c['of']} cells"
                         + (f" ({top}{', ...' if len(c['counts']) > 8 else ''})" if top else ""))
        if d.get("judge_failed"):
            lines.append(f"{tag}: the judge gave no finite value for {d['judge_failed']} labelled text(s), left out")
    return "\n".join(lines)


def reports_to_json(reports: Sequence[JudgeReport], **info: Any) -> dict[str, Any]:
    """The JSON document written by ``--output``: ``info`` (domain, model, file, ...) and the reports."""
    return {**info, "judges": [r.to_dict() for r in reports]}


def judge_texts(judge: Any, texts: Sequence[str], chunk: int) -> Any:
    """Evaluates ``texts`` with a :class:`qdaif.feedback.LabelJudge` in chunks; one :class:`Evaluation`."""
    from qdaif.feedback import Evaluation

    parts = [judge.evaluate(texts[s : s + chunk]) for s in range(0, len(texts), chunk)]
    return Evaluation(quality=np.concatenate([p.quality for p in parts]),
                      measures=np.concatenate([p.measures for p in parts]),
                      label_probs={k: np.concatenate([p.label_probs[k] for p in parts]) for k in parts[0].label_probs})


def evaluate_file(*, domain: Domain, build_lm: Callable[[], Any], labels: str | Path, output: str | Path | None = None, resamples: int = 1000,
                  seed: int = 0, positive: Mapping[str, str] | None = None, split: str | None = None, chunk: int = 64,
                  warn: Callable[[str], None] = print) -> list[JudgeReport]:
    """Reads a labelled file, judges its texts, prints the table and writes the JSON report.

    Args:
        domain: The domain whose judges are evaluated.
        build_lm: Returns the judge model; called once the labelled file has been read.
        labels: The labelled JSONL or CSV file.
        output: Where to write the JSON report (None: nowhere).
        resamples: Bootstrap resamples per interval.
        seed: Seed of the bootstrap.
        positive: Judge name -> the class P(first label) stands for.
        split: Keep only the rows with this ``split``.
        chunk: Texts per judge call.
        warn: Called with each warning about the file.

    Returns:
        The reports (also printed).

    Raises:
        ConfigError: See :func:`read_labelled`.
    """
    from qdaif.feedback import LabelJudge
    from qdaif.run_dir import dumps

    data = read_labelled(labels, domain, positive=positive, split=split)
    for w in data.warnings:
        warn(w)
    lm = build_lm()
    evaluation = judge_texts(LabelJudge(domain=domain, lm=lm), data.texts, chunk)
    reports = evaluate_judges(domain, data, evaluation, resamples=resamples, seed=seed)
    model = lm.describe()
    name = model.get("name") or model.get("model") or model.get("backend")
    print(format_reports(reports, header=f"domain {domain.name} (version {domain.version}), judge model {name}, "
                                         f"{len(data.texts)} texts from {data.path}"
                                         + (f" (split {split})" if split else "")
                                         + f", 95 % CI from {resamples} bootstrap resamples (seed {seed})"))
    if output:
        doc = reports_to_json(reports, domain=domain.name, domain_version=domain.version, model=model,
                              labels_file=str(labels), split=split, texts=len(data.texts), bootstrap=resamples, seed=seed,
                              positive=dict(positive or {}))
        Path(output).write_text(json.dumps(json.loads(dumps(doc)), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"qdaif: wrote {output}")
    return reports
