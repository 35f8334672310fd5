"""Downstream check of a rewrites run: QD elites as test-time augmentations (``python -m qdaif tta``).

For each out-of-distribution input of a finished run, the classifier's class
probabilities (or log-probabilities) are averaged over the original and a set of
augmentations, and the argmax is compared with the gold label. Methods:

- ``original``: no augmentation;
- ``paraphrase_first_m``: the first ``m`` valid paraphrases out of ``B`` sampled with the
  domain's paraphrase prompt (unselected samples, in generation order);
- ``paraphrase_all``: all valid paraphrases of those ``B``;
- ``qd_top_m``: the ``m`` best elites of the input's slice by quality (one per cell);
- ``qd_all``: every elite of the input's slice.

Elites of quality 0 (below the meaning floor) are never used. The paraphrases are not
filtered: the baseline spends no judge call.

``B`` is the number of generations the search spent on the input: its ``history.jsonl``
rows plus its share (proportional to those rows) of the run's dropped generations, so
the paraphrase baseline makes as many ``generate`` calls in total as the search did.
"""

from __future__ import annotations

import csv
import dataclasses
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qdaif.errors import ConfigError, RunDirError

if TYPE_CHECKING:
    from qdaif.domain import Domain
    from qdaif.lm import LM

__all__ = ["TTARow", "TTAResult", "aggregate_predictions", "generation_budgets", "run_tta", "METHODS"]

METHODS = ("original", "paraphrase_first_m", "paraphrase_all", "qd_top_m", "qd_all")
TTA_MD, TTA_CSV, TTA_ITEMS = "tta.md", "tta.csv", "tta_items.jsonl"


@dataclasses.dataclass(frozen=True)
class TTARow:
    """Accuracy of one method on the OOD inputs."""

    method: str
    correct: int
    n: int
    augmentations: float  # mean augmentations per input (besides the original)
    generations: int  # LM generate calls spent in all

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")


@dataclasses.dataclass
class TTAResult:
    """The table of a downstream check and how it was made."""

    rows: list[TTARow]
    m: int
    aggregate: str
    target: str
    items: list[dict[str, Any]]

    def to_markdown(self) -> str:
        lines = ["| method | accuracy | correct / n | augmentations per input | generations |",
                 "|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r.method} | {r.accuracy:.3f} | {r.correct} / {r.n} | {r.augmentations:.2f} | {r.generations} |")
        note = (f"\nm = {self.m}; aggregation: mean of class {'probabilities' if self.aggregate == 'prob' else 'log-probabilities'} "
                f"over the original and its augmentations; search quality target: {self.target}.")
        if self.target == "gold":
            note += (" The search's quality used the gold labels, so the qd_* rows are an oracle "
                     "(upper bound), not a fair test-time result.")
        return "\n".join(lines) + "\n" + note + "\n"


def aggregate_predictions(probs: Sequence[np.ndarray], *, aggregate: str = "prob") -> int:
    """Index of the class with the largest mean probability (or mean log-probability) over ``probs``.

    Args:
        probs: One class distribution per text (original first), each of shape ``(num_classes,)``.
        aggregate: ``prob`` or ``logprob``.
    """
    x = np.asarray(probs, dtype=np.float64)
    if aggregate == "logprob":
        x = np.log(np.clip(x, 1e-12, 1.0))
    return int(np.argmax(x.mean(axis=0)))


def generation_budgets(history: Sequence[dict], total: int, ids: Sequence[str]) -> dict[str, int]:
    """Generations the search spent on each input.

    Each input gets its ``history`` rows (``meta.input``) plus a share of the ``total -
    len(history)`` generations that left no row (dropped as empty or invalid),
    proportional to its rows; largest remainders round the shares so that the budgets
    add up to ``total``. Without any row the total is split evenly.
    """
    rows = Counter(h.get("meta", {}).get("input") for h in history)
    counts = np.array([rows.get(i, 0) for i in ids], dtype=float)
    if counts.sum() == 0:
        counts = np.ones(len(ids))
    all_rows = sum(rows.values()) or counts.sum()
    exact = counts / all_rows * total
    base = np.floor(exact).astype(int)
    left = int(round(exact.sum())) - int(base.sum())
    for k in np.argsort(-(exact - base), kind="stable")[:max(0, left)]:
        base[k] += 1
    return {i: int(b) for i, b in zip(ids, base)}


def run_tta(*, run_path: str | Path, domain: "Domain", lm: "LM", judge_lm: "LM", m: int = 4, aggregate: str = "prob",
            seed: int = 0, out: str | Path | None = None) -> TTAResult:
    """Runs the downstream check on a finished rewrites run and writes its table.

    Args:
        run_path: The run directory.
        domain: The run's domain (as recorded in its config).
        lm: The generator, for the paraphrase baseline (one batched ``generate`` call).
        judge_lm: The model behind the classifier (one batched ``score`` call).
        m: Augmentations per input for the ``*_m`` methods.
        aggregate: ``prob`` (mean class probabilities) or ``logprob``.
        seed: Sampling seed of the paraphrase baseline.
        out: Folder for ``tta.md``, ``tta.csv`` and ``tta_items.jsonl`` (default: the run).

    Raises:
        ConfigError: Not a rewrites run, no OOD input, or a bad ``m``/``aggregate``.
        RunDirError: The run has no ``metrics.jsonl`` (it has not finished an iteration).
    """
    from qdaif.run_dir import RunDir

    if m < 1:
        raise ConfigError(f"m must be >= 1, got {m}")
    if aggregate not in ("prob", "logprob"):
        raise ConfigError(f"aggregate must be prob or logprob, got {aggregate!r}")
    run = RunDir(run_path)
    plugin, metrics, history, elites = _read_run(run, run_path, domain)
    ids = [t.id for t in plugin.inputs]
    budgets = generation_budgets(history, int(metrics[-1]["evaluations"]), ids)
    ood = [t for t in plugin.inputs if t.style == "ood"]
    if not ood:
        raise ConfigError(f"the run searched no out-of-distribution input (settings.inputs={domain.settings.get('inputs')})")
    paraphrases = _paraphrases(plugin, domain, lm, ood, budgets, seed)
    by_input = _elites_by_input(elites, ids, ood)
    sets: dict[str, dict[str, list[str]]] = {}
    for t in ood:
        qd = [str(e["text"]) for e in by_input[t.id] if float(e["quality"]) > 0]
        sets[t.id] = {"original": [], "paraphrase_first_m": paraphrases[t.id][:m],
                      "paraphrase_all": paraphrases[t.id], "qd_top_m": qd[:m], "qd_all": qd}
    spent = sum(budgets[t.id] for t in ood)  # the search's generations for these inputs = the baseline's samples
    spent = {"search": spent, "paraphrase": spent}
    rows, items = _score_methods(plugin, judge_lm, ood, sets, aggregate, spent)
    result = TTAResult(rows=rows, m=m, aggregate=aggregate, target=plugin.target, items=items)
    _write_tables(Path(out) if out is not None else run.path, result)
    return result


def _read_run(run: Any, run_path: str | Path, domain: "Domain") -> tuple[Any, list[dict], list[dict], list[dict]]:
    """The rewrites plugin of ``domain`` and the run's metrics, history and elites.

    Raises:
        ConfigError: ``domain`` is not the rewrites domain.
        RunDirError: The run has no metrics yet.
    """
    from qdaif.plugin import make_plugin
    from qdaif.plugins.rewrites import Plugin
    from qdaif.run_dir import ELITES, HISTORY, METRICS
    from qdaif.runs import read_jsonl

    plugin = make_plugin(domain)
    if not isinstance(plugin, Plugin):
        raise ConfigError(f"{run_path} is a run of domain {domain.name!r}; tta needs a run of the rewrites domain")
    metrics, history, elites = (read_jsonl(run.file(name)) for name in (METRICS, HISTORY, ELITES))
    if not metrics:
        raise RunDirError(f"{run_path} has no {METRICS}: run at least one iteration first")
    return plugin, metrics, history, elites


def _paraphrases(plugin: Any, domain: "Domain", lm: "LM", ood: list, budgets: dict[str, int], seed: int) -> dict[str, list[str]]:
    """The paraphrase baseline: ``budgets[id]`` samples per OOD input, in one ``generate`` call, parsed."""
    from qdaif.operators import Proposal

    prompts, owners = [], []
    for t in ood:
        prompts += [plugin.paraphrase_prompt(t.text)] * budgets[t.id]
        owners += [t.id] * budgets[t.id]
    g = domain.generation
    raw = lm.generate(prompts, max_tokens=g.max_tokens, temperature=g.temperature, top_p=g.top_p, stop=g.stop,
                      seed=seed) if prompts else []
    out: dict[str, list[str]] = {t.id: [] for t in ood}
    for owner, text in zip(owners, raw):
        parsed = plugin.parse(Proposal("", "paraphrase", (), meta={"input": owner}), text)
        if parsed:
            out[owner].append(parsed)
    return out


def _elites_by_input(elites: list[dict], ids: list[str], ood: list) -> dict[str, list[dict]]:
    """Each OOD input's elites, best quality first (ties: lower id first)."""
    by_input: dict[str, list[dict]] = {t.id: [] for t in ood}
    for e in elites:
        key = ids[int(e["cell"][0])]
        if key in by_input:
            by_input[key].append(e)
    for v in by_input.values():
        v.sort(key=lambda e: (-float(e["quality"]), int(e["id"])))
    return by_input


def _score_methods(plugin: Any, judge_lm: "LM", ood: list, sets: dict, aggregate: str,
                   spent: dict[str, int]) -> tuple[list[TTARow], list[dict]]:
    """Classifies every distinct text in one ``score`` call; returns a row per method and a record per (method, input)."""
    unique: dict[tuple[str, str], int] = {}
    for t in ood:
        for text in [t.text] + [x for method in METHODS for x in sets[t.id][method]]:
            unique.setdefault((t.task, text), len(unique))
    keys = list(unique)
    probs = plugin.classifier.predict_proba([k[1] for k in keys], [k[0] for k in keys], lm=judge_lm)
    rows, items = [], []
    for method in METHODS:
        correct, n_aug = 0, 0
        for t in ood:
            texts = [t.text] + sets[t.id][method]
            classes = plugin.classifier.classes(t.task)
            pred = classes[aggregate_predictions([probs[unique[(t.task, x)]] for x in texts], aggregate=aggregate)]
            correct += pred == t.label
            n_aug += len(texts) - 1
            items.append({"method": method, "input": t.id, "task": t.task, "label": t.label, "prediction": pred,
                          "augmentations": texts[1:]})
        gens = 0 if method == "original" else spent["paraphrase"] if method.startswith("paraphrase") else spent["search"]
        rows.append(TTARow(method=method, correct=int(correct), n=len(ood), augmentations=n_aug / len(ood),
                           generations=int(gens)))
    return rows, items


def _write_tables(folder: Path, result: TTAResult) -> None:
    """Writes ``tta.md``, ``tta.csv`` and ``tta_items.jsonl`` into ``folder``."""
    from qdaif.run_dir import dumps

    folder.mkdir(parents=True, exist_ok=True)
    (folder / TTA_MD).write_text(result.to_markdown(), encoding="utf-8")
    with open(folder / TTA_CSV, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["method", "accuracy", "correct", "n", "augmentations_per_input", "generations", "m", "aggregate",
                    "target"])
        for r in result.rows:
            w.writerow([r.method, f"{r.accuracy:.6f}", r.correct, r.n, f"{r.augmentations:.4f}", r.generations,
                        result.m, result.aggregate, result.target])
    (folder / TTA_ITEMS).write_text("".join(dumps(i) + "\n" for i in result.items), encoding="utf-8")


def command(args: list[str]) -> None:
    """``python -m qdaif tta DIR [--out DIR] [--m 4] [--aggregate prob|logprob] [--seed 0] [model.KEY=VALUE ...]``.

    Registered as the plugin command ``tta`` (entry-point group ``qdaif.commands``). The
    run's own config is used; trailing ``model.*``, ``judge_model.*`` and ``cache``
    overrides (Hydra syntax) change it for this command.
    """
    from omegaconf import OmegaConf

    from qdaif.cli import MODEL_INFOS, apply_overrides, build_models, command_parser, existing_dir, number, override
    from qdaif.run_dir import RunDir

    p = command_parser("tta", "A rewrites run's elites as test-time augmentations of its classifier.")
    p.add_argument("run", metavar="DIR", help="directory of a finished rewrites run")
    p.add_argument("--out", metavar="DIR", help="folder for tta.md, tta.csv and tta_items.jsonl (default: DIR)")
    p.add_argument("--m", type=number(int, 1), default=4, metavar="M", help="augmentations per input (default 4)")
    p.add_argument("--aggregate", choices=("prob", "logprob"), default="prob", help="how predictions combine")
    p.add_argument("--seed", type=number(int, 0), default=0, help="sampling seed of the paraphrase baseline")
    p.add_argument("overrides", nargs="*", type=override, metavar="KEY=VALUE",
                   help="Hydra overrides of the run's model.*, judge_model.* or cache")
    a = p.parse_intermixed_args(args)
    run_dir = RunDir.existing(existing_dir(a.run))
    record = run_dir.read_config()
    record["allow_code"] = False  # never trust code named by a run directory
    cfg = OmegaConf.create({k: v for k, v in record.items() if k not in (*MODEL_INFOS, "versions")})
    apply_overrides(cfg, a.overrides, allowed=("model.", "judge_model.", "cache"), where="tta")
    domain, lm, judge_lm = build_models(cfg)
    result = run_tta(run_path=run_dir.path, domain=domain, lm=lm, judge_lm=judge_lm, m=a.m, aggregate=a.aggregate,
                     seed=a.seed, out=a.out)
    print(result.to_markdown())
    print(f"qdaif: wrote tta.md, tta.csv and tta_items.jsonl in {a.out or run_dir.path}")
