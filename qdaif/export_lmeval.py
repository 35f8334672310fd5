"""A run's archive as an lm-evaluation-harness task: ``python -m qdaif export lm-eval RUN --out DIR``.

The folder written here is loaded by EleutherAI's harness (``pip install 'qdaif[lmeval]'``) with
``lm_eval --include_path DIR --tasks NAME``. It holds:

- ``NAME.yaml``: the task (name, version, ``dataset_path: json`` with the data file as
  ``data_files``, ``output_type``, ``doc_to_text``, ``doc_to_target``/``doc_to_choice``, metrics);
- ``NAME.jsonl``: one document per exported text (the elite of a cell, and with ``per_cell``
  > 1 the cell's next best judged texts), with its cell, measures, quality, run id and seed;
- ``utils.py``: only for the multitask domain, the metric (qdaif's exact checkers);
- ``README.md``: what the set is and how it was made.

Two kinds of task:

Label and categorical domains (``multiple_choice``)
    One measure (``measure``; by default the first label or categorical one). The prompt is
    the measure judge's own prompt (its few-shot prefix and query, with the text in place of
    ``{text}``), the choices are the judge's label continuations, and the answer is the
    archive's label: the category of the text's cell, or for a label measure the side of 0.5
    (the first label when its probability is >= 0.5). ``acc`` is then how often a model
    agrees with the archive's judge.
Multitask (``generate_until``)
    The prompt is what the run's target model saw (the domain's answer prompt with the
    candidate in it); a model's reply is split into its ``<taskN>`` answers and each
    sub-task with a reference (a gold answer or an exact checker) is checked as the run
    checked it. Metrics: ``subtasks_passed`` (the fraction of checked sub-tasks a reply
    passes) and ``all_passed``. Sub-tasks without a reference (judged by an LM in the run)
    are not scored; texts with none are left out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qdaif.errors import ConfigError
from qdaif.human_eval import HumanMeasure, method_of, sample_items
from qdaif.runs import RunData, load_run
from qdaif.run_dir import atomic_write

__all__ = ["LmEvalExport", "export_lm_eval", "exportable_measures", "task_name", "MULTIPLE_CHOICE", "GENERATE_UNTIL"]

MULTIPLE_CHOICE = "multiple_choice"
GENERATE_UNTIL = "generate_until"
MULTITASK = "multitask"
README = "README.md"
UTILS = "utils.py"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclasses.dataclass(frozen=True)
class LmEvalExport:
    """What :func:`export_lm_eval` wrote.

    Attributes:
        out: The task folder.
        task: The task name (``--tasks`` of the harness).
        output_type: ``multiple_choice`` or ``generate_until``.
        docs: Documents written.
        measure: The measure whose labels are the answers (``None`` for multitask).
        choices: The choices of a multiple-choice task.
        files: The files written, in ``out``.
        left_out: Texts dropped besides the quality filter (multitask: no checkable sub-task).
    """

    out: Path
    task: str
    output_type: str
    docs: int
    measure: str | None
    choices: tuple[str, ...]
    files: tuple[str, ...]
    left_out: int = 0


# ------------------------------------------------------------------ measures
def _kind(m: Mapping[str, Any]) -> str:
    return str(m.get("kind") or "label")


def exportable_measures(config: Mapping[str, Any]) -> list[str]:
    """Names of a run's measures that export as multiple choice: label judges with two labels, categorical judges."""
    out = []
    for m in (config.get("domain") or {}).get("measures") or []:
        kind = _kind(m)
        if kind == "categorical" or (kind == "label" and len(m.get("labels") or ()) == 2):
            out.append(str(m["name"]))
    return out


def _pick_measure(run: RunData, name: str | None) -> int:
    """Index of the measure to export; the first exportable one when ``name`` is None.

    Raises:
        ConfigError: An unknown measure, one that is not a two-label or categorical judge, or none.
    """
    names = [a.name for a in run.axes]
    ok = exportable_measures(run.config)
    if name is None:
        if not ok:
            kinds = ", ".join(f"{m['name']} ({_kind(m)})" for m in run.config["domain"]["measures"])
            raise ConfigError(f"run {run.path} has no label or categorical measure to export (its measures: {kinds})")
        return names.index(ok[0])
    if name not in names:
        raise ConfigError(f"unknown measure {name!r}; measures of this run: {', '.join(names)}")
    if name not in ok:
        m = run.config["domain"]["measures"][names.index(name)]
        raise ConfigError(f"measure {name!r} is a {_kind(m)} judge with {len(m.get('labels') or ())} labels; export "
                          f"needs a categorical measure or a label measure with two labels (here: {', '.join(ok) or 'none'})")
    return names.index(name)


def task_name(run: RunData, measure: str | None) -> str:
    """The default task name: ``qdaif_<domain>_<measure>``, or ``qdaif_multitask_<mode>``."""
    if measure is None:
        mode = ((run.config.get("domain") or {}).get("settings") or {}).get("mode") or "data"
        parts = ["qdaif", run.domain_name, str(mode)]
    else:
        parts = ["qdaif", run.domain_name, measure]
    return re.sub(r"[^A-Za-z0-9_]+", "_", "_".join(parts)).strip("_")


def _domain(run: RunData):
    """The run's domain, built from its recorded config as a resumed run builds it (no code beyond registered plugins)."""
    from omegaconf import OmegaConf

    from qdaif.domain import domain_from_config

    return domain_from_config(OmegaConf.create(run.config["domain"]))


# ------------------------------------------------------------------ documents
def _base_doc(run: RunData, item: Mapping[str, Any], by_id: Mapping[Any, Mapping[str, Any]]) -> dict[str, Any]:
    h = by_id.get(item["id"], {})
    return {
        "id": item["id"],
        "text": item["text"],
        "cell": list(item["cell"]),
        "measures": {a.name: float(v) for a, v in zip(run.axes, item["ai_measures"])},
        "quality": float(item["ai_quality"]),
        "rank_in_cell": int(item["rank"]),
        "iteration": int(h.get("iteration", 0)),
        "run": run.path.name,
        "seed": int(run.config.get("seed", 0)),
    }


def _multiple_choice_docs(run: RunData, items: Sequence[Mapping[str, Any]], k: int,
                          by_id: Mapping[Any, Mapping[str, Any]]) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    spec = next(m for m in _domain(run).measures if m.name == run.axes[k].name).judge
    axis = run.axes[k]
    categorical = axis.categorical
    # The answer's name: the category of the cell, or of a label measure the label on its side of 0.5.
    hm = HumanMeasure(name=axis.name, labels=tuple(axis.categories if categorical else axis.labels), categorical=categorical)
    docs = []
    for it in items:
        name = hm.ai_label(cell=int(it["cell"][k]), value=float(it["ai_measures"][k]), probs=None)
        prefix, query = spec.prompt_parts(it["text"])
        docs.append({**_base_doc(run, it, by_id), "prompt": prefix + query, "label": hm.labels.index(name),
                     "label_name": name})
    return docs, tuple(spec.labels)


def _reference_json(ref) -> dict[str, Any]:
    value = list(ref.value) if isinstance(ref.value, tuple) else ref.value
    return {"match": ref.match, "value": value, "constraints": [list(c) for c in ref.constraints],
            "ordered": bool(ref.ordered), "free": bool(ref.free)}


def _multitask_docs(run: RunData, items: Sequence[Mapping[str, Any]],
                    by_id: Mapping[Any, Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
    from qdaif.plugin import make_plugin
    from qdaif.plugins.multitask.checkers import references
    from qdaif.plugins.multitask.plugin import ANSWER_STOP

    plugin = make_plugin(_domain(run))
    s = plugin.settings
    docs, left_out = [], 0
    for it in items:
        g = plugin.genome(it["text"])  # with the seed items' gold answers, as the run checked them
        refs = references(g) if g is not None else []
        checks = [{"task": i, "type": st.type, "reference": _reference_json(ref)}
                  for i, (st, ref) in enumerate(zip(g.subtasks, refs), 1) if ref is not None] if g is not None else []
        if not checks:
            left_out += 1
            continue
        details = by_id.get(it["id"], {}).get("details") or {}
        # The reference answers in their tags, for reading the harness's logged samples (not used by the metric).
        target = "\n".join(f"<task{c['task']}>{ref.display() or '(format: ' + ', '.join(n for n, _ in ref.constraints) + ')'}"
                           f"</task{c['task']}>" for c, ref in zip(checks, (r for r in refs if r is not None)))
        docs.append({**_base_doc(run, it, by_id), "prompt": str(s["answer_prompt"]).replace("{text}", it["text"]),
                     "target": target, "num_subtasks": g.k, "checks": json.dumps(checks, ensure_ascii=False),
                     "target_followed": details.get("F"), "target_well_posed": details.get("W")})
    generation = {"until": list(ANSWER_STOP), "max_gen_toks": int(s["answer_max_tokens"]), "do_sample": False,
                  "temperature": 0.0}
    return docs, left_out, generation


# ------------------------------------------------------------------ files
def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {str(out)!r} exists and is not empty; give a new or empty folder")


def _yaml(fields: Mapping[str, Any], functions: Mapping[str, str] | None = None) -> str:
    """The task YAML: ``fields`` as plain YAML, then ``key: !function utils.NAME`` lines."""
    import yaml

    text = yaml.safe_dump(dict(fields), sort_keys=False, allow_unicode=True, width=100)
    return text + "".join(f"{key}: !function {target}\n" for key, target in (functions or {}).items())


_UTILS_SOURCE = '''"""Metric of a qdaif multitask export (written by ``python -m qdaif export lm-eval``).

A reply is split into its ``<taskN></taskN>`` answers and each sub-task listed in the
document's ``checks`` is checked against its reference with qdaif's exact checkers, the
code that checked the run's target model (``qdaif.plugins.multitask.checkers``).
"""

import json

try:
    from qdaif.plugins.multitask.checkers import Reference, check, extract_answers
except ImportError as e:  # the metric is qdaif's checker code
    raise ImportError("this task's metric needs qdaif (pip install qdaif): qdaif.plugins.multitask.checkers") from e


def _value(value):
    return tuple(value) if isinstance(value, list) else value


def _reference(d):
    return Reference(value=_value(d.get("value")), match=d["match"],
                     constraints=tuple((c[0], c[1]) for c in d.get("constraints") or ()),
                     ordered=bool(d.get("ordered", True)), free=bool(d.get("free", False)))


def process_results(doc, results):
    """Per document: the fraction of checked sub-tasks the reply passes, and whether it passes all."""
    reply = results[0]
    checks = json.loads(doc["checks"])
    answers = extract_answers(reply, int(doc["num_subtasks"]))
    passed = [check(_reference(c["reference"]), answers[c["task"] - 1], reply) for c in checks]
    return {"subtasks_passed": sum(passed) / len(passed), "all_passed": float(all(passed))}
'''


def _model_line(info: Any, cfg: Any) -> str:
    info = info if isinstance(info, Mapping) else {}
    cfg = cfg if isinstance(cfg, Mapping) else {}
    name = info.get("name") or cfg.get("name") or "?"
    extra = [str(info[k]) for k in ("backend", "package", "file", "dtype") if info.get(k)] or [str(cfg.get("backend") or "?")]
    return f"{name} ({', '.join(extra)})"


def _readme(run: RunData, *, result: LmEvalExport, data: str, min_quality: float | None, per_cell: int, when: str) -> str:
    c = run.config
    d = c.get("domain") or {}
    model = _model_line(c.get("model_info"), c.get("model"))
    judge = _model_line(c.get("judge_model_info"), c.get("judge_model")) if c.get("judge_model") else f"{model} (the generator)"
    stats = run.summary()
    lines = [f"# {result.task}", ""]
    if result.output_type == MULTIPLE_CHOICE:
        m = next(x for x in d.get("measures") or [] if x.get("name") == result.measure)
        lines += [
            f"A multiple-choice set of {result.docs} texts from a qdaif archive of the `{run.domain_name}` domain "
            f"({str(d.get('description') or 'no description').rstrip('.')}). Each text comes with the label the archive's judge gave it "
            f"on the measure `{result.measure}` ({_kind(m)} judge, axis \"{m.get('axis_label') or result.measure}\"); "
            "the prompt is that judge's own prompt (its few-shot prefix and query) and the choices are its label "
            "continuations: " + ", ".join(f"`{x}`" for x in result.choices) + ".",
            "",
            "`acc` is the share of texts where a model's most likely choice is the archive's label: how well the "
            "model agrees with the judge that built the archive. "
            + ("The label is the category of the text's cell." if _kind(m) == "categorical" else
               f"The label is the side of 0.5 of the judge's P({result.choices[0].strip()}): the first choice when "
               "it is at least 0.5, else the second."),
            "The judge's own model can score below 100 % where the judge's label is not simply the likelier "
            "continuation of this prompt (a judge that averages over example orders, retrieves examples or is "
            "calibrated) and through numeric differences (dtype, batching); the judge's logit scale does not change "
            "which continuation is likelier.",
        ]
    else:
        mode = (d.get("settings") or {}).get("mode") or "data"
        lines += [
            f"A generation set of {result.docs} multi-task prompts from a qdaif archive of the `multitask` domain "
            f"in `{mode}` mode ("
            + ("prompts the run's target model followed" if mode == "data" else "well-posed prompts the run's target "
               "model failed") + "). The prompt is what the target saw: the domain's answer prompt (one worked "
            "example) with the multi-task prompt in it; a model answers each sub-task inside `<taskN></taskN>` tags.",
            "",
            "The metric (`utils.py`, `process_results`) checks each sub-task that has a reference (a gold answer or an "
            "exact checker: arithmetic, sorting, selection, counting, format constraints) with qdaif's checkers, so "
            "**qdaif must be installed** where the harness runs. `subtasks_passed`: the mean fraction of checked "
            "sub-tasks passed; `all_passed`: the share of prompts with every checked sub-task passed. Sub-tasks without "
            f"a reference are not scored; {result.left_out} text(s) with none were left out. `target_followed` in "
            "the data is the run's own F for the text (its target's fraction of sub-tasks followed).",
        ]
    lines += [
        "",
        "## How it was made",
        "",
        f"- domain: `{run.domain_name}` version {d.get('version', '?')}",
        f"- generator model: {model}",
        f"- judge model: {judge}",
        *([f"- target model: {_model_line(c.get('target_model_info'), c.get('target_model'))}"] if c.get("target_model") else []),
        f"- run: `{run.path.name}` (algorithm {method_of(c)}, seed {c.get('seed', '?')}, {c.get('iterations', '?')} "
        f"iterations of {c.get('batch_size', '?')}; archive: {stats['num_elites']} elites, QD score {stats['qd_score']:.3f}, "
        f"coverage {stats['coverage']:.0%})",
        f"- selection: up to {per_cell} text(s) per filled cell (the elite first, then the cell's next best judged texts), "
        + (f"quality >= {min_quality:g}" if min_quality is not None else "no quality filter"),
        f"- exported {when} by `python -m qdaif export lm-eval` (qdaif {(c.get('versions') or {}).get('qdaif', '?')})",
        "",
        "## Files",
        "",
        f"- `{result.task}.yaml`: the task",
        f"- `{data}`: one document per text: `text`, `prompt`, "
        + ("`label` (index of the answer), `label_name`, " if result.output_type == MULTIPLE_CHOICE else
           "`target` (the reference answers in their tags, for reading; the metric uses `checks`), `num_subtasks`, "
           "`checks` (JSON: sub-task number, type, reference), `target_followed`, `target_well_posed`, ")
        + "`cell`, `measures`, `quality` (the archive's judge), `rank_in_cell` (0: the elite), `id` and `iteration` "
          "(in the run's history), `run`, `seed`",
    ]
    if result.output_type == GENERATE_UNTIL:
        lines.append(f"- `{UTILS}`: the metric")
    lines += [
        "",
        "## Run it",
        "",
        "```bash",
        f"lm_eval --model hf --model_args pretrained=MODEL --include_path THIS_FOLDER --tasks {result.task}",
        "```",
        "",
        f"`data_files` in `{result.task}.yaml` is this folder's absolute path at export time: after moving the folder, "
        "edit that line (or export again).",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ export
def export_lm_eval(
    run: str | Path | RunData,
    *,
    out: str | Path,
    measure: str | None = None,
    min_quality: float | None = None,
    per_cell: int = 1,
    name: str | None = None,
    now: dt.datetime | None = None,
) -> LmEvalExport:
    """Writes a run's archive as an lm-evaluation-harness task folder.

    Args:
        run: A run directory (or its loaded data).
        out: The task folder; created, and must not exist or be empty.
        measure: The measure whose labels are the answers (label and categorical domains;
            default: the first exportable one). Not used by the multitask domain.
        min_quality: Keep texts whose judged quality is at least this.
        per_cell: Texts per filled cell (the elite, then the cell's next best judged texts).
        name: The task name (default :func:`task_name`).
        now: The export time written in the README (default: now, UTC).

    Returns:
        What was written.

    Raises:
        RunDirError: ``run`` is not a readable run directory.
        ConfigError: A bad argument, a measure that does not export, a domain that does
            not export, nothing left after filtering, or an ``out`` that is not empty.
    """
    if per_cell < 1:
        raise ConfigError(f"--per-cell must be >= 1, got {per_cell}")
    if min_quality is not None and not math.isfinite(min_quality):
        raise ConfigError(f"--min-quality must be a finite number, got {min_quality}")
    if name is not None and not _NAME.fullmatch(name):
        raise ConfigError(f"--name must start with a letter and hold only letters, digits, _ and -, got {name!r}")
    out = Path(out)
    _check_out(out)
    run = run if isinstance(run, RunData) else load_run(run)
    plugin = str((run.config.get("domain") or {}).get("plugin") or "")
    multitask = plugin == MULTITASK or plugin.endswith(".multitask")
    if plugin and not multitask:
        raise ConfigError(f"domain {run.domain_name} (plugin {plugin}) does not export to lm-eval; label and categorical "
                          "domains and the multitask domain do")
    if multitask and measure is not None:
        raise ConfigError("--measure is for label and categorical domains; a multitask run exports its sub-tasks' references")
    k = None if multitask else _pick_measure(run, measure)
    items = sample_items(run, method=method_of(run.config), per_cell=per_cell, measures=[])
    total = len(items)
    if min_quality is not None:
        items = [it for it in items if it["ai_quality"] >= min_quality]
    if not items:
        best = max((it["ai_quality"] for it in sample_items(run, method="", per_cell=1, measures=[])), default=None)
        why = (f"no text has quality >= {min_quality:g} (the best elite's is {best:.3f})" if total and best is not None
               else "the archive is empty")
        raise ConfigError(f"nothing to export from {run.path}: {why}")
    by_id = {h["id"]: h for h in run.history}
    task = name or task_name(run, None if multitask else run.axes[k].name)
    data = f"{task}.jsonl"
    fields: dict[str, Any] = {"task": task, "dataset_path": "json",
                              "dataset_kwargs": {"data_files": {"test": str((out / data).resolve())}}, "test_split": "test"}
    functions: dict[str, str] = {}
    if multitask:
        docs, left_out, generation = _multitask_docs(run, items, by_id)
        if not docs:
            raise ConfigError(f"nothing to export from {run.path}: none of its {len(items)} text(s) has a sub-task "
                              "with a reference (a gold answer or an exact checker)")
        choices: tuple[str, ...] = ()
        fields.update({"output_type": GENERATE_UNTIL, "doc_to_text": "prompt", "doc_to_target": "target",
                       "generation_kwargs": generation,
                       "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                       for m in ("subtasks_passed", "all_passed")]})
        functions["process_results"] = f"{Path(UTILS).stem}.process_results"
    else:
        docs, choices = _multiple_choice_docs(run, items, k, by_id)
        left_out = 0
        # The choices are the judge's continuations as scored (" haiku"): no extra delimiter before them.
        fields.update({"output_type": MULTIPLE_CHOICE, "doc_to_text": "prompt", "doc_to_target": "label",
                       "doc_to_choice": list(choices), "target_delimiter": "",
                       "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                       for m in ("acc", "acc_norm")]})
    d = run.config.get("domain") or {}
    fields["metadata"] = {"version": d.get("version", 1), "qdaif_domain": run.domain_name, "qdaif_run": run.path.name,
                          "qdaif_seed": int(run.config.get("seed", 0))}
    if not multitask:
        fields["metadata"]["qdaif_measure"] = run.axes[k].name
    yaml_text = _yaml(fields, functions)
    result = LmEvalExport(out=out, task=task, output_type=GENERATE_UNTIL if multitask else MULTIPLE_CHOICE, docs=len(docs),
                          measure=None if multitask else run.axes[k].name, choices=choices,
                          files=(f"{task}.yaml", data, *((UTILS,) if multitask else ()), README), left_out=left_out)
    when = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / data, "".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs).encode("utf-8"))
    if multitask:
        atomic_write(out / UTILS, _UTILS_SOURCE.encode("utf-8"))
    atomic_write(out / README, _readme(run, result=result, data=data, min_quality=min_quality, per_cell=per_cell,
                                       when=when).encode("utf-8"))
    atomic_write(out / f"{task}.yaml", yaml_text.encode("utf-8"))
    return result
