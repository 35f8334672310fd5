"""Human evaluation of runs: a blinded export of elites for raters, and the analysis of their ratings.

Export (:func:`export_items`) samples up to ``per_cell`` texts from each filled cell of
each run (the elite first, then the next best judged texts of that cell in
``history.jsonl``), shuffles all runs' texts together and gives them neutral ids. The
rater-facing files hold only ids and texts; which run (method), cell and AI scores
an item has is written to a separate key file.

Raters give each text a quality rating on a 1-5 scale and, for each measure, one of
its labels: the categories of a categorical measure, or the judge's label words of a
label-judge measure (e.g. ``positive`` / ``negative`` for sentiment).

Import (:func:`import_ratings`) reads the raters' files (``items.csv`` filled in, or
Label Studio's JSON, JSON-MIN or CSV export), checks that they rate this export's
items (ids and texts), and computes per method:

Human QD score
    The QDAIF paper's "sum of mean quality score for each category/label found in the
    set according to human feedback". Here, for one rater and one method: each item the
    rater scored is placed in a *human cell*, the tuple of the labels that this rater
    chose for it, one per measure (where the rater gave no label for a measure, the
    AI's label is used: the label with the highest judge probability, or the category
    of the item's cell). A rating ``r`` counts as ``(r - 1) / 4`` in [0, 1]. The
    rater's score is the sum over the human cells the rater found of the mean of
    those values within the cell. The method's Human QD score is the mean of its
    raters' scores; ``human_qd_normalised`` divides it by the number of possible human
    cells (the product of the measures' label counts), so 1 means every human cell
    was found and every text in it rated 5.
Quality rating
    The mean of all 1-5 ratings of the method's texts.
Human-AI agreement (per measure)
    The fraction of the raters' labels that equal the AI's label of the item.

and over all items, the inter-rater agreement of the quality ratings and of each
measure's labels: Cohen's kappa (scikit-learn) for two raters, Fleiss' kappa for
more, on the items that every rater rated. Kappas are unweighted: the 1-5 ratings
are treated as five categories.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qdaif.errors import ConfigError, QDAIFError, RunDirError
from qdaif.runs import Axis, RunData, load_run
from qdaif.run_dir import atomic_write

__all__ = [
    "RatingsError",
    "RatingsWarning",
    "HumanMeasure",
    "Rating",
    "HumanEvalResult",
    "human_measures",
    "method_of",
    "parse_run_arg",
    "sample_items",
    "export_items",
    "label_studio_config",
    "load_key",
    "read_ratings",
    "analyse",
    "import_ratings",
    "fleiss_kappa",
    "SCALE",
    "KEY",
    "ITEMS_CSV",
    "LS_TASKS",
    "LS_CONFIG",
    "INSTRUCTIONS",
    "RESULTS_MD",
    "RESULTS_CSV",
    "AGREEMENT_CSV",
]

SCALE = (1, 5)
KEY = "key.json"
ITEMS_CSV = "items.csv"
LS_TASKS = "label_studio_tasks.json"
LS_CONFIG = "label_studio_config.xml"
INSTRUCTIONS = "instructions.md"
RESULTS_MD = "human_eval.md"
RESULTS_CSV = "human_eval.csv"
AGREEMENT_CSV = "inter_rater.csv"
QUALITY = "quality"
_KEY_FORMAT = 1
_SHOWN_ROWS = 8


class RatingsError(QDAIFError):
    """A ratings file is malformed; the message names the file and its rows."""


class RatingsWarning(UserWarning):
    """Ratings are incomplete (unrated items, blank fields); the message names them."""


# ------------------------------------------------------------------ measures
@dataclasses.dataclass(frozen=True)
class HumanMeasure:
    """A measure as raters label it.

    Attributes:
        name: The measure's name (a column of the ratings CSV).
        labels: The choices a rater has, in the judge's (or the categories') order.
        categorical: True when cell ``k`` of the measure is category ``labels[k]``.
    """

    name: str
    labels: tuple[str, ...]
    categorical: bool

    def ai_label(self, *, cell: int, value: float, probs: Sequence[float] | None) -> str:
        """Returns the AI's label of an item on this measure.

        Args:
            cell: The item's bin index on this measure.
            value: The item's measure value (the probability of ``labels[0]``).
            probs: The judge's label probabilities from ``history.jsonl``, if recorded.

        Raises:
            RunDirError: A judge with more than two labels and no recorded probabilities.
        """
        if self.categorical:
            return self.labels[cell]
        if probs is not None and len(probs) == len(self.labels):
            return self.labels[int(np.argmax(probs))]
        if len(self.labels) == 2:
            return self.labels[0] if value >= 0.5 else self.labels[1]
        raise RunDirError(f"measure {self.name!r} has {len(self.labels)} labels but history.jsonl has no label "
                          "probabilities for the item: cannot tell the AI's label")

    def match(self, answer: str) -> str | None:
        """Returns the label that ``answer`` names (case and surrounding spaces ignored), or None."""
        a = answer.strip().casefold()
        return next((lab for lab in self.labels if lab.casefold() == a), None)


def human_measures(axes: Sequence[Axis]) -> list[HumanMeasure]:
    """Turns a run's measures into what raters label.

    Raises:
        RunDirError: A non-categorical measure has fewer than two judge labels.
    """
    out = []
    for a in axes:
        labels = a.categories if a.categorical else a.labels
        if len(labels) < 2 or len(set(x.casefold() for x in labels)) != len(labels):
            raise RunDirError(f"measure {a.name!r} has no distinct labels for raters to choose from (got {list(labels)})")
        out.append(HumanMeasure(name=a.name, labels=tuple(labels), categorical=a.categorical))
    return out


# -------------------------------------------------------------------- export
def method_of(config: Mapping[str, Any]) -> str:
    """A run's method: its config's ``algorithm`` (a name, or a node with a ``name``), else ``qdaif``."""
    algo = config.get("algorithm")
    if isinstance(algo, Mapping):
        algo = algo.get("name")
    return str(algo) if algo else "qdaif"


def parse_run_arg(arg: str | Path) -> tuple[Path, str | None]:
    """Splits ``DIR=NAME`` into the run directory and a method name; a plain ``DIR`` has no name.

    A path that exists as a directory is taken whole, even if it holds ``=``.
    """
    text = str(arg)
    if Path(text).is_dir() or "=" not in text:
        return Path(text), None
    path, _, name = text.rpartition("=")
    if not name.strip():
        raise ConfigError(f"{text!r}: give a method name after '=' (DIR=NAME) or just DIR")
    return Path(path), name.strip()


def sample_items(run: RunData, *, method: str, per_cell: int, measures: Sequence[HumanMeasure]) -> list[dict[str, Any]]:
    """Picks up to ``per_cell`` texts in each filled cell of a run.

    The elite comes first, then the cell's other judged texts of ``history.jsonl`` by
    decreasing AI quality; a text already taken in that cell is not taken again.

    Returns:
        Key rows without item ids: ``method``, ``run``, ``cell``, ``rank`` (0 = the
        elite), ``id``, ``text``, ``ai_quality``, ``ai_measures``, ``ai_labels``.
    """
    by_cell: dict[tuple[int, ...], list[dict[str, Any]]] = defaultdict(list)
    for h in run.history:
        by_cell[tuple(h["cell"])].append(h)
    by_id = {h["id"]: h for h in run.history}
    rows = []
    for e in run.elites:
        cell = tuple(e["cell"])
        others = sorted((h for h in by_cell[cell] if h["id"] != e["id"]), key=lambda h: -float(h["quality"]))
        taken: set[str] = set()
        for h in [by_id.get(e["id"], e), *others]:
            if len(taken) >= per_cell:
                break
            if h["text"] in taken:
                continue
            taken.add(h["text"])
            probs = h.get("labels") or {}
            rows.append({
                "method": method,
                "run": str(run.path.resolve()),
                "cell": list(cell),
                "rank": len(taken) - 1,
                "id": h["id"],
                "text": h["text"],
                "ai_quality": float(h["quality"]),
                "ai_measures": [float(v) for v in h["measures"]],
                "ai_labels": {m.name: m.ai_label(cell=cell[k], value=float(h["measures"][k]), probs=probs.get(m.name))
                              for k, m in enumerate(measures)},
            })
    return rows


def label_studio_config(measures: Sequence[HumanMeasure]) -> str:
    """The Label Studio labelling config: the text, a 1-5 quality rating, one single choice per measure."""
    q = html.escape
    parts = ['<View>', '  <Header value="Read the text"/>', '  <Text name="text" value="$text"/>',
             f'  <Header value="Quality ({SCALE[0]} = poor, {SCALE[1]} = excellent)"/>',
             f'  <Rating name="{QUALITY}" toName="text" maxRating="{SCALE[1]}" icon="star" size="medium" required="true"/>']
    for m in measures:
        parts.append(f'  <Header value="{q(m.name)}"/>')
        parts.append(f'  <Choices name="{q(m.name)}" toName="text" choice="single" showInline="true" required="true">')
        parts.extend(f'    <Choice value="{q(lab)}"/>' for lab in m.labels)
        parts.append("  </Choices>")
    parts.append("</View>")
    return "\n".join(parts) + "\n"


def _instructions(measures: Sequence[HumanMeasure], n_items: int) -> str:
    lines = [
        "# Rating instructions",
        "",
        f"There are {n_items} short texts, in no particular order. For each text:",
        "",
        f"- **quality**: a whole number from {SCALE[0]} (poor) to {SCALE[1]} (excellent).",
    ]
    for m in measures:
        lines.append(f"- **{m.name}**: one of " + ", ".join(f"`{lab}`" for lab in m.labels) + ".")
    lines += [
        "",
        f"In a spreadsheet, fill in the empty columns of `{ITEMS_CSV}` and return the file (one file per",
        "rater, or add a `rater` column). Do not change the `item` column. A text that begins with `=`, `+`,",
        "`-` or `@` is shown with a leading `'` so that spreadsheets do not run it as a formula.",
        "",
        f"In Label Studio, create a project with the labelling config `{LS_CONFIG}`, import",
        f"`{LS_TASKS}`, and export the annotations (JSON, JSON-MIN or CSV) when done.",
        "",
    ]
    return "\n".join(lines)


def _spreadsheet_safe(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_items(
    runs: Sequence[str | Path | tuple[str | Path, str | None]],
    *,
    out: str | Path,
    per_cell: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Writes a blinded rating set sampled from runs.

    Files written in ``out``: ``items.csv`` (for spreadsheets), ``label_studio_tasks.json``
    and ``label_studio_config.xml`` (Label Studio import and its labelling config),
    ``instructions.md`` (for raters) and ``key.json`` (item to method, run, cell and
    AI scores: keep it from the raters).

    Args:
        runs: Run directories, ``DIR=NAME`` strings or ``(DIR, NAME)`` pairs; NAME
            overrides the method read from the run's config (:func:`method_of`).
        out: Output folder (created).
        per_cell: Texts drawn per filled cell of each run, >= 1.
        seed: Seed of the shuffle.

    Returns:
        The key (as written to ``key.json``).

    Raises:
        ConfigError: ``per_cell`` < 1, no runs, or the runs measure different things.
        RunDirError: A run directory is missing or incomplete.
    """
    if per_cell < 1:
        raise ConfigError(f"--per-cell must be >= 1, got {per_cell}")
    if not runs:
        raise ConfigError("give at least one run directory")
    rows: list[dict[str, Any]] = []
    measures: list[HumanMeasure] | None = None
    run_list = []
    for arg in runs:
        path, name = arg if isinstance(arg, tuple) else parse_run_arg(arg)
        run = load_run(path)
        these = human_measures(run.axes)
        if measures is None:
            measures = these
        elif [(m.name, m.labels) for m in these] != [(m.name, m.labels) for m in measures]:
            raise ConfigError(f"{path} measures {[(m.name, list(m.labels)) for m in these]}, but the first run "
                              f"measures {[(m.name, list(m.labels)) for m in measures]}: runs rated together must "
                              "share measures")
        method = name or method_of(run.config)
        run_list.append({"run": str(run.path.resolve()), "method": method, "domain": run.domain_name})
        rows.extend(sample_items(run, method=method, per_cell=per_cell, measures=these))
    if not rows:
        raise RunDirError("the runs have no elites to rate")
    order = np.random.default_rng(seed).permutation(len(rows))
    width = max(4, len(str(len(rows))))
    items = []
    for n, k in enumerate(order, 1):
        items.append({"item": f"item-{n:0{width}d}", **rows[k]})
    key = {
        "format": _KEY_FORMAT,
        "scale": list(SCALE),
        "per_cell": per_cell,
        "seed": seed,
        "measures": [{"name": m.name, "labels": list(m.labels), "categorical": m.categorical} for m in measures],
        "runs": run_list,
        "items": items,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["item", "text", QUALITY, *(m.name for m in measures)])
    for it in items:
        w.writerow([it["item"], _spreadsheet_safe(it["text"]), "", *([""] * len(measures))])
    atomic_write(out / ITEMS_CSV, buf.getvalue().encode("utf-8-sig"))  # the BOM tells spreadsheets it is UTF-8
    tasks = [{"data": {"item": it["item"], "text": it["text"]}} for it in items]
    atomic_write(out / LS_TASKS, json.dumps(tasks, ensure_ascii=False, indent=1).encode("utf-8"))
    atomic_write(out / LS_CONFIG, label_studio_config(measures).encode("utf-8"))
    atomic_write(out / INSTRUCTIONS, _instructions(measures, len(items)).encode("utf-8"))
    atomic_write(out / KEY, json.dumps(key, ensure_ascii=False, indent=1).encode("utf-8"))
    return key


# ------------------------------------------------------------------- ratings
@dataclasses.dataclass(frozen=True)
class Rating:
    """One rater's answers for one item.

    Attributes:
        rater: Who rated.
        item: The item id.
        quality: The 1-5 rating, or None when left blank.
        labels: Measure name to the chosen label, or None when left blank.
        source: File and row, for messages.
    """

    rater: str
    item: str
    quality: int | None
    labels: dict[str, str | None]
    source: str


def load_key(out: str | Path) -> dict[str, Any]:
    """Reads ``key.json`` from an export folder.

    Raises:
        RunDirError: The folder has no readable key of this format.
    """
    path = Path(out) / KEY
    if not path.is_file():
        raise RunDirError(f"{str(Path(out))!r} has no {KEY}; pass the folder written by 'human-eval export'")
    try:
        key = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"cannot read {path}: {e}") from None
    if not isinstance(key, dict) or key.get("format") != _KEY_FORMAT or not isinstance(key.get("items"), list):
        raise RunDirError(f"{path} is not a qdaif human-eval key of format {_KEY_FORMAT}")
    return key


def _listing(names: Sequence[str]) -> str:
    """The first few of ``names`` and how many more, for one-line messages."""
    more = len(names) - _SHOWN_ROWS
    return ", ".join(names[:_SHOWN_ROWS]) + (f" and {more} more" if more > 0 else "")


class _Problems:
    """Collects rows by kind of problem, to report them all at once."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, where: str) -> None:
        self.by_kind[kind].append(where)

    def lines(self) -> list[str]:
        return [f"{kind}: {_listing(where)}" for kind, where in self.by_kind.items()]


def _parse_quality(value: Any) -> int | None | str:
    """The rating as an int, None for blank, or the offending text."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return repr(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return repr(value)
    if not x.is_integer() or not SCALE[0] <= x <= SCALE[1]:
        return repr(value)
    return int(x)


def _same_text(rated: Any, shown: str) -> bool:
    """Whether a ratings file's text is the export's text of the item.

    Whitespace runs count as one space (spreadsheets rewrite line ends), and the ``'``
    that :func:`_spreadsheet_safe` puts before a formula-like text is ignored.
    """
    a, b = " ".join(str(rated).split()), " ".join(shown.split())
    return a == b or (a.startswith("'") and a[1:].lstrip() == b)


def _ls_value(value: Any) -> Any:
    """One Label Studio answer as plain data: a rating's number or a single choice's label.

    The full JSON export holds ``{"rating": 3}`` / ``{"choices": ["x"]}``; JSON-MIN holds
    ``[{"rating": 3}]`` and a single choice as ``"x"``; the CSV export holds the same
    as JSON text (``[{"rating":3}]``). Anything else is returned as it is, to be
    reported by the row checks.
    """
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, Mapping):
        if "rating" in value:
            return value["rating"]
        choices = value.get("choices")
        if isinstance(choices, list) and len(choices) == 1:
            return choices[0]
    return value


def _ls_rater(who: Any) -> str | None:
    """A rater's name from a Label Studio annotator: the email, else ``user<id>``; None when absent."""
    if isinstance(who, Mapping):
        if who.get("email"):
            return str(who["email"])
        who = who.get("id")
    if who is None or (isinstance(who, str) and not who.strip()) or isinstance(who, bool):
        return None
    text = str(who).strip()
    if text.endswith(".0") and text[:-2].isdigit():  # a CSV id read back as a float
        text = text[:-2]
    return f"user{text}" if text.isdigit() else text


class _Reader:
    def __init__(self, key: Mapping[str, Any]) -> None:
        self.items = {it["item"]: it["text"] for it in key["items"]}
        self.measures = [HumanMeasure(name=m["name"], labels=tuple(m["labels"]), categorical=bool(m["categorical"]))
                         for m in key["measures"]]
        self.errors = _Problems()
        self.notes = _Problems()
        self.ratings: list[Rating] = []
        self.other_texts: dict[str, list[str]] = defaultdict(list)  # file: rows whose text is not the export's
        self.checked: dict[str, int] = defaultdict(int)  # file: rows with a known item
        self.annotations: dict[tuple[Any, ...], str] = {}  # a Label Studio annotation: the first file holding it
        self.repeated: dict[tuple[str, str], list[str]] = defaultdict(list)  # (first file, file): annotation ids

    def row(self, *, rater: str, item: Any, quality: Any, answers: Mapping[str, Any], where: str, text: Any,
            file: str) -> None:
        """Checks and records one rater's answers for one item."""
        item = "" if item is None else str(item).strip()
        blank_labels = all(v is None or not str(v).strip() for v in answers.values())
        if not item:
            if _parse_quality(quality) is not None or not blank_labels:
                self.errors.add("rows without an item id", where)
            return  # an empty row of a spreadsheet
        if item not in self.items:
            self.errors.add(f"unknown item ids (not in {KEY})", f"{where} ({item})")
            return
        q = _parse_quality(quality)
        if q is None and blank_labels:
            return  # an unrated item: reported with the rater's missing items
        self.checked[file] += 1
        if text is None or not str(text).strip() or not _same_text(text, self.items[item]):
            self.other_texts[file].append(f"{where} ({item})")
            return
        if isinstance(q, str):
            self.errors.add(f"quality ratings that are not whole numbers {SCALE[0]}-{SCALE[1]}", f"{where} ({q})")
            return
        labels: dict[str, str | None] = {}
        bad = False
        for m in self.measures:
            v = answers.get(m.name)
            if v is None or not str(v).strip():
                labels[m.name] = None
                continue
            lab = m.match(str(v)) if isinstance(v, (str, int, float)) else None
            if lab is None:
                kind = "with other than one choice" if isinstance(v, (list, Mapping)) else f"labels not among {', '.join(m.labels)}"
                self.errors.add(f"{m.name} {kind}", f"{where} ({v!r})")
                bad = True
            labels[m.name] = lab
        if bad:
            return
        if q is None:
            self.notes.add("rows without a quality rating (their labels still count)", where)
        for name, lab in labels.items():
            if lab is None:
                self.notes.add(f"rows without a {name} label (the AI label places the item in a cell)", where)
        self.ratings.append(Rating(rater=rater, item=item, quality=q, labels=labels, source=where))

    def annotation(self, *, rater: str | None, item: Any, annotation_id: Any, created_at: Any, file: str,
                   **row: Any) -> None:
        """One Label Studio annotation (of any export format); one seen in an earlier file is skipped."""
        if rater is None and annotation_id in (None, ""):
            self.notes.add("tasks without annotations (item not rated)", f"{row['where']} ({item})")
            return
        if rater is None:
            self.errors.add("annotations without an annotator", row["where"])
            return
        if annotation_id not in (None, ""):
            ident = (str(annotation_id).removesuffix(".0"), rater, str(item), str(created_at or ""))
            first = self.annotations.setdefault(ident, file)
            if first != file:
                self.repeated[(first, file)].append(ident[0])
                return
        self.row(rater=rater, item=item, file=file, **row)

    def read_csv(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise RatingsError(f"{path}: not UTF-8 text (byte {e.start}); save it as 'CSV UTF-8'") from None
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        label_studio = "annotator" in header and "annotation_id" in header  # Label Studio's CSV export
        if "item" not in header or QUALITY not in header or "text" not in header:
            raise RatingsError(f"{path}: a ratings CSV needs the columns 'item', 'text' and '{QUALITY}' "
                               f"(as in {ITEMS_CSV}); found {header}")
        for m in self.measures:
            if m.name not in header:
                self.notes.add(f"files without a {m.name} column (AI labels are used for it)", str(path))
        for n, r in enumerate(reader, 2):  # row 1 is the header
            where = f"{path.name} row {n}"
            if label_studio:
                self.annotation(rater=_ls_rater(r.get("annotator")), item=r.get("item"), text=r.get("text"),
                                annotation_id=r.get("annotation_id"), created_at=r.get("created_at"), file=path.name,
                                quality=_ls_value(r.get(QUALITY)),
                                answers={m.name: _ls_value(r.get(m.name)) for m in self.measures}, where=where)
                continue
            rater = (r.get("rater") or "").strip() or path.stem
            self.row(rater=rater, item=r.get("item"), quality=r.get(QUALITY), text=r.get("text"), file=path.name,
                     answers={m.name: r.get(m.name) for m in self.measures}, where=where)

    def read_label_studio(self, path: Path) -> None:
        try:
            tasks = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RatingsError(f"{path}: not a JSON file ({e})") from None
        if not isinstance(tasks, list):
            raise RatingsError(f"{path}: a Label Studio export is a JSON list of tasks")
        for t, task in enumerate(tasks, 1):
            if not isinstance(task, Mapping):
                self.errors.add("tasks that are not JSON objects", f"{path.name} task {t}")
                continue
            if "annotations" not in task and "item" in task:  # JSON-MIN: one flat row per annotation
                self.annotation(rater=_ls_rater(task.get("annotator")), item=task.get("item"), text=task.get("text"),
                                annotation_id=task.get("annotation_id"), created_at=task.get("created_at"),
                                file=path.name, quality=_ls_value(task.get(QUALITY)),
                                answers={m.name: _ls_value(task.get(m.name)) for m in self.measures},
                                where=f"{path.name} row {t}")
                continue
            data = task.get("data") or {}
            item = data.get("item")
            annotations = task.get("annotations") or []
            if not annotations:
                self.notes.add("tasks without annotations (item not rated)", f"{path.name} task {t} ({item})")
            for a, ann in enumerate(annotations, 1):
                where = f"{path.name} task {t} annotation {a}"
                if not isinstance(ann, Mapping):
                    self.errors.add("annotations that are not JSON objects", where)
                    continue
                if ann.get("was_cancelled"):
                    self.notes.add("cancelled annotations (skipped)", where)
                    continue
                quality, answers = None, {}
                for res in ann.get("result") or []:
                    value = res.get("value") or {}
                    if res.get("from_name") == QUALITY:
                        quality = value.get("rating")
                    elif "choices" in value:
                        choices = value["choices"]
                        if not isinstance(choices, list) or len(choices) != 1:
                            self.errors.add(f"{res.get('from_name')} with other than one choice", where)
                            continue
                        answers[str(res.get("from_name"))] = choices[0]
                self.annotation(rater=_ls_rater(ann.get("completed_by")), item=item, text=data.get("text"),
                                annotation_id=ann.get("id"), created_at=ann.get("created_at"), file=path.name,
                                quality=quality, answers=answers, where=where)

    def finish(self, key: Mapping[str, Any]) -> tuple[list[Rating], list[str]]:
        for file, rows in self.other_texts.items():
            every = "all" if len(rows) == self.checked[file] else f"{len(rows)} of {self.checked[file]}"
            self.errors.add("texts that are not this export's text of the item (ratings made on another export? "
                            "import them with the folder of the export they rate)",
                            f"{file}: {every} rated items, e.g. {_listing(rows[:3])}")
        seen: dict[tuple[str, str], str] = {}
        for r in self.ratings:
            k = (r.rater, r.item)
            if k in seen:
                self.errors.add("duplicate ratings of an item by one rater",
                                f"{r.source} repeats {seen[k]} ({r.rater}, {r.item})")
            else:
                seen[k] = r.source
        if self.errors.by_kind:
            raise RatingsError("; ".join(self.errors.lines()))
        notes = [f"{len(ids)} Label Studio annotation(s) of {first} appear again in {file} (annotation ids "
                 f"{_listing(ids)}): each is counted once" for (first, file), ids in self.repeated.items()]
        notes += self.notes.lines()
        order = [it["item"] for it in key["items"]]
        for rater in sorted({r.rater for r in self.ratings}):
            rated = {r.item for r in self.ratings if r.rater == rater and r.quality is not None}
            missing = [i for i in order if i not in rated]
            if missing:
                notes.append(f"rater {rater} gave no quality rating for {len(missing)} of {len(order)} items: "
                             f"{_listing(missing)}")
        return self.ratings, notes


def read_ratings(paths: Iterable[str | Path], key: Mapping[str, Any]) -> tuple[list[Rating], list[str]]:
    """Reads and checks ratings files against an export's key.

    A ``.csv`` file is one rater's (named by the file) unless it has a ``rater``
    column, or Label Studio's CSV export (with ``annotator`` and ``annotation_id``
    columns). A ``.json`` file is a Label Studio export, full JSON or JSON-MIN. Label
    Studio's raters are its annotators (their email, else ``user<id>``); an annotation
    found in two files (the same annotation id, annotator, item and creation time) is
    counted once, with a warning. Every row must carry the text the rater saw, equal to
    the export's text of its item: ratings of another export are refused.

    Args:
        paths: Ratings files.
        key: The export's key (:func:`load_key`).

    Returns:
        The ratings, and warnings about what is missing (unrated items, blank fields),
        each naming the rows or items.

    Raises:
        RatingsError: Unknown item ids, texts other than the export's, ratings outside
            1-5 or not whole, labels not among a measure's labels, rows without an item
            id, or one rater rating an item twice; the message names every such row.
    """
    reader = _Reader(key)
    for p in map(Path, paths):
        if not p.is_file():
            raise RatingsError(f"ratings file {str(p)!r} does not exist")
        if p.suffix.lower() == ".csv":
            reader.read_csv(p)
        elif p.suffix.lower() == ".json":
            reader.read_label_studio(p)
        else:
            raise RatingsError(f"{p}: ratings are read from .csv files or Label Studio .json exports")
    ratings, notes = reader.finish(key)
    if not any(r.quality is not None for r in ratings):
        raise RatingsError("the ratings files hold no quality ratings")
    return ratings, notes


# ------------------------------------------------------------------ analysis
def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of a table of category counts.

    Args:
        counts: Shape ``(items, categories)``: how many raters put each item in each
            category; every row has the same total (the number of raters, >= 2).

    Returns:
        Kappa, or NaN when the raters used one category only.

    Raises:
        ValueError: Rows have different totals or fewer than two raters.
    """
    counts = np.asarray(counts, dtype=float)
    n = counts.sum(axis=1)
    if len(counts) == 0 or not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("every item needs the same number (>= 2) of ratings")
    raters = n[0]
    p_cat = counts.sum(axis=0) / counts.sum()
    p_item = (np.square(counts).sum(axis=1) - raters) / (raters * (raters - 1))
    p_bar, p_exp = p_item.mean(), np.square(p_cat).sum()
    return float("nan") if math.isclose(p_exp, 1.0) else float((p_bar - p_exp) / (1 - p_exp))


def _kappa(table: list[list[Any]], categories: Sequence[Any]) -> float:
    """Kappa of an ``(items, raters)`` table of answers: Cohen's for 2 raters, Fleiss' for more."""
    if len(table[0]) == 2:
        from sklearn.metrics import cohen_kappa_score

        a, b = zip(*table)
        if len(set(a) | set(b)) < 2:
            return float("nan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(cohen_kappa_score(a, b, labels=list(categories)))
    index = {c: k for k, c in enumerate(categories)}
    counts = np.zeros((len(table), len(categories)))
    for i, answers in enumerate(table):
        for x in answers:
            counts[i, index[x]] += 1
    return fleiss_kappa(counts)


@dataclasses.dataclass
class HumanEvalResult:
    """Per-method scores and inter-rater agreement of a human evaluation.

    Attributes:
        methods: One dict per method (see :data:`RESULTS_CSV` columns).
        inter_rater: One dict per rating (quality, then each measure).
        raters: The raters' names.
        measures: The measures' names.
        human_cells: Number of possible human cells.
        warnings: What was missing in the ratings.
    """

    methods: list[dict[str, Any]]
    inter_rater: list[dict[str, Any]]
    raters: list[str]
    measures: list[str]
    human_cells: int
    warnings: list[str] = dataclasses.field(default_factory=list)

    def to_markdown(self) -> str:
        """The results as Markdown tables, with their definitions."""
        def cell(x: Any) -> str:
            if x is None or (isinstance(x, float) and math.isnan(x)):
                return "n/a"
            if isinstance(x, float):
                return f"{x:.3f}"
            return str(x).replace("|", "\\|").replace("\n", " ")

        cols = ["method", "runs", "items", "ratings", "human_qd", "human_qd_normalised", "cells_found",
                "mean_quality", *(f"agreement_{m}" for m in self.measures)]
        heads = ["method", "runs", "items", "ratings", "Human QD", f"Human QD / {self.human_cells} cells",
                 "human cells found", "quality rating (1-5)", *(f"human-AI agreement: {m}" for m in self.measures)]
        lines = ["# Human evaluation", "",
                 f"{sum(m['ratings'] for m in self.methods)} quality ratings from {len(self.raters)} rater(s): "
                 + ", ".join(cell(r) for r in self.raters) + ".", "",
                 "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        lines += ["| " + " | ".join(cell(m[c]) for c in cols) + " |" for m in self.methods]
        lines += ["",
                  "Human QD: for each rater, the sum over the human cells (the rater's labels, one per measure; "
                  "the AI's label where the rater gave none) of the mean of (rating - 1) / 4 of the method's texts "
                  "in that cell, averaged over raters. Human-AI agreement: the share of the raters' labels that "
                  "equal the AI's label.", "",
                  "## Inter-rater agreement", "",
                  "| rating | statistic | value | items rated by all raters |", "|---|---|---|---|"]
        lines += [f"| {cell(r['rating'])} | {r['statistic']} | {cell(r['value'])} | {r['items']} |" for r in self.inter_rater]
        if self.warnings:
            lines += ["", "## Warnings", ""] + [f"- {cell(w)}" for w in self.warnings]
        return "\n".join(lines) + "\n"

    def write(self, out: str | Path) -> list[Path]:
        """Writes :data:`RESULTS_MD`, :data:`RESULTS_CSV` and :data:`AGREEMENT_CSV` in ``out``."""
        out = Path(out)
        paths = [out / RESULTS_MD, out / RESULTS_CSV, out / AGREEMENT_CSV]
        atomic_write(paths[0], self.to_markdown().encode("utf-8"))
        for path, rows in ((paths[1], self.methods), (paths[2], self.inter_rater)):
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()}
                        for r in rows)
            atomic_write(path, buf.getvalue().encode("utf-8"))
        return paths


def analyse(key: Mapping[str, Any], ratings: Sequence[Rating], *, notes: Sequence[str] = ()) -> HumanEvalResult:
    """Computes per-method Human QD, quality rating and human-AI agreement, and inter-rater agreement.

    See the module docstring for the definitions.

    Args:
        key: The export's key.
        ratings: Checked ratings (:func:`read_ratings`).
        notes: Warnings to carry into the result.

    Returns:
        The result.
    """
    items = {it["item"]: it for it in key["items"]}
    measures = [m["name"] for m in key["measures"]]
    labels = {m["name"]: list(m["labels"]) for m in key["measures"]}
    human_cells = int(np.prod([len(v) for v in labels.values()]))
    raters = sorted({r.rater for r in ratings})
    methods = list(dict.fromkeys(it["method"] for it in key["items"]))
    rows = []
    for method in methods:
        mine = [r for r in ratings if items[r.item]["method"] == method]
        qualities = [r.quality for r in mine if r.quality is not None]
        per_rater, found = [], []
        for rater in raters:
            cells: dict[tuple[str, ...], list[float]] = defaultdict(list)
            for r in mine:
                if r.rater == rater and r.quality is not None:
                    ai = items[r.item]["ai_labels"]
                    cell = tuple(r.labels.get(m) or ai[m] for m in measures)
                    cells[cell].append((r.quality - SCALE[0]) / (SCALE[1] - SCALE[0]))
            if cells:
                per_rater.append(sum(float(np.mean(v)) for v in cells.values()))
                found.append(len(cells))
        hqd = float(np.mean(per_rater)) if per_rater else float("nan")
        row = {
            "method": method,
            "runs": len({it["run"] for it in key["items"] if it["method"] == method}),
            "items": sum(1 for it in key["items"] if it["method"] == method),
            "ratings": len(qualities),
            "raters": len(per_rater),
            "human_qd": hqd,
            "human_qd_normalised": hqd / human_cells,
            "human_cells": human_cells,
            "cells_found": float(np.mean(found)) if found else float("nan"),
            "mean_quality": float(np.mean(qualities)) if qualities else float("nan"),
        }
        for m in measures:
            hits = [r.labels[m] == items[r.item]["ai_labels"][m] for r in mine if r.labels.get(m) is not None]
            row[f"agreement_{m}"] = float(np.mean(hits)) if hits else float("nan")
        rows.append(row)
    inter = []
    for name, categories in [(QUALITY, list(range(SCALE[0], SCALE[1] + 1))), *labels.items()]:
        answers: dict[str, dict[str, Any]] = defaultdict(dict)
        for r in ratings:
            v = r.quality if name == QUALITY else r.labels.get(name)
            if v is not None:
                answers[r.item][r.rater] = v
        table = [[a[x] for x in raters] for a in answers.values() if len(a) == len(raters)]
        if len(raters) < 2:
            stat, value = "needs 2 or more raters", float("nan")
        else:
            stat = "Cohen's kappa" if len(raters) == 2 else "Fleiss' kappa"
            value = _kappa(table, categories) if table else float("nan")
        inter.append({"rating": name, "statistic": stat, "value": value, "items": len(table), "raters": len(raters)})
    return HumanEvalResult(methods=rows, inter_rater=inter, raters=raters, measures=measures,
                           human_cells=human_cells, warnings=list(notes))


def import_ratings(out: str | Path, paths: Sequence[str | Path], *, write: bool = True) -> HumanEvalResult:
    """Reads raters' files for an export, analyses them and writes the result tables.

    Warnings (incomplete ratings) are issued as :class:`RatingsWarning` and kept in
    the result.

    Args:
        out: The export folder (holding ``key.json``); the results are written there.
        paths: Ratings files (CSV or Label Studio JSON), one or more raters.
        write: Write :data:`RESULTS_MD`, :data:`RESULTS_CSV` and :data:`AGREEMENT_CSV`.

    Returns:
        The result.

    Raises:
        RunDirError: ``out`` holds no key.
        RatingsError: A ratings file is malformed (see :func:`read_ratings`).
    """
    if not paths:
        raise RatingsError("give at least one ratings file (CSV or Label Studio JSON export)")
    key = load_key(out)
    ratings, notes = read_ratings(paths, key)
    for n in notes:
        warnings.warn(n, RatingsWarning, stacklevel=2)
    result = analyse(key, ratings, notes=notes)
    if write:
        result.write(out)
    return result
