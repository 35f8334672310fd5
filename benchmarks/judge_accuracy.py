"""Accuracy and ranking (AUC) of a domain's judges on a hand-labelled set.

    python benchmarks/judge_accuracy.py [domain=NAME] [data=FILE] [split=dev|holdout]
                                        [positive=MEASURE:VALUE,...] [hydra overrides...]

The labelled file has one JSON object per line: ``text``; the quality truth, ``good``
(or ``on_topic``), a bool; for each measure of the domain, a field named after the
measure holding the text's class (``null`` where it has none, e.g. an off-topic text);
optionally ``split`` (rows are filtered with ``split=``). Without ``data=``, the file is
``benchmarks/data/<stem>_labelled.jsonl`` with the stem from ``DATA`` below.

Prints, per judge:

- quality: accuracy at 0.5 (label judges) or at the middle of the value range
  (rating judges), AUC of good against not good, the spread of the values;
- a label measure (``kind: label``, value = P(first label)): accuracy at 0.5, AUC and the
  quantiles of the judge's scaled log-odds, on the good texts and on all texts with a
  class, then which of the domain's bins the good texts fall in. The class whose
  probability the value is comes from ``POSITIVE`` (e.g. genre: horror), else from the
  first label;
- a categorical measure: accuracy of the argmax label against chance, the mean rank of
  the true label, and the confusion matrix.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from qdaif.archive import cells_of, make_archive
from qdaif.cli import compose_config
from qdaif.domain import LabelJudgeSpec, domain_from_config
from qdaif.feedback import LabelJudge
from qdaif.lm import make_lm

# Labelled file (benchmarks/data/<stem>_labelled.jsonl) of each domain.
DATA = {"opinions": "opinions", "stories": "stories", "stories_genre": "stories", "stories_ending": "stories",
        "poetry": "poems"}
# The class a label measure's value is the probability of (the labels need not be its name).
POSITIVE = {"sentiment": "positive", "genre": "horror", "ending": "happy"}


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def _report(name: str, p: np.ndarray, y: np.ndarray) -> None:
    with np.errstate(divide="ignore"):
        logit = np.log(p) - np.log1p(-p)
    acc = float(np.mean((p > 0.5) == y))
    q = np.quantile(logit, [0, 0.1, 0.5, 0.9, 1]).round(2).tolist()
    print(f"{name:<28} n={len(y):<3} acc@0.5={acc:.3f}  AUC={_auc(y, p):.3f}  "
          f"mean P | pos={p[y].mean():.3f} neg={p[~y].mean():.3f}  log-odds quantiles {q}")


def _report_rating(name: str, v: np.ndarray, y: np.ndarray, spec: LabelJudgeSpec) -> None:
    mid = (min(spec.values) + max(spec.values)) / 2
    acc = float(np.mean((v > mid) == y))
    print(f"{name:<28} n={len(y):<3} acc@{mid:g}={acc:.3f}  AUC={_auc(y, v):.3f}  "
          f"mean value | good={v[y].mean():.2f} bad={v[~y].mean():.2f}  range [{v.min():.2f}, {v.max():.2f}]")


def _categorical(name: str, probs: np.ndarray, truth: list[str], cats: tuple[str, ...]) -> None:
    y = np.array([cats.index(t) for t in truth])
    pred = probs.argmax(axis=1)
    k = len(cats)
    ranks = (-probs).argsort(axis=1).argsort(axis=1)[np.arange(len(y)), y] + 1
    print(f"{name:<28} n={len(y):<3} acc={np.mean(pred == y):.3f} (chance {1 / k:.2f})  mean rank of the true label "
          f"{ranks.mean():.2f} (chance {(k + 1) / 2:.1f})  predicted counts {np.bincount(pred, minlength=k).tolist()}")
    print(f"{'':<28} confusion (rows: true, columns: predicted) {list(cats)}")
    for c, row in zip(cats, np.array([np.bincount(pred[y == i], minlength=k) for i in range(k)])):
        print(f"{'':<30}{c:>12} {row.tolist()}")


def main(argv: list[str]) -> None:
    data = None
    split = None
    positive = dict(POSITIVE)
    overrides = []
    for a in argv:
        key, _, value = a.partition("=")
        if key == "data":
            data = Path(value)
        elif key == "split":
            split = value
        elif key == "positive":
            positive.update(dict(x.split(":", 1) for x in value.split(",") if x))
        else:
            overrides.append(a)
    cfg = compose_config(overrides)
    domain = domain_from_config(cfg.domain)
    if data is None:
        data = Path(f"benchmarks/data/{DATA.get(domain.name, domain.name)}_labelled.jsonl")
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    if split:
        rows = [r for r in rows if r.get("split") == split]
    lm = make_lm(cfg.model)
    ev = LabelJudge(domain=domain, lm=lm).evaluate([r["text"] for r in rows])
    print(f"domain={domain.name} model={lm.describe().get('name')} texts={len(rows)} data={data}"
          + (f" split={split}" if split else ""))
    good = np.array([bool(r["good"] if "good" in r else r["on_topic"]) for r in rows])
    quality_word = "on-topic" if "good" not in rows[0] else "good"
    q = domain.quality
    if q.kind == "rating":
        _report_rating(f"quality ({q.name})", ev.quality, good, q)
    else:
        _report(f"quality ({q.name})", ev.quality, good)
    archive = make_archive([m.edges for m in domain.measures])
    for k, m in enumerate(domain.measures):
        has = np.array([r.get(m.name) is not None for r in rows])
        if m.categories:
            for label, mask in ((f"{quality_word} texts", has & good), ("all texts", has)):
                if mask.any():
                    _categorical(f"{m.name} ({label})", ev.label_probs[m.name][mask],
                                 [rows[i][m.name] for i in np.flatnonzero(mask)], m.categories)
            continue
        pos = positive.get(m.name, m.judge.categories[0])
        y = np.array([r.get(m.name) == pos for r in rows])
        _report(f"{m.name} ({quality_word} texts)", ev.measures[has & good, k], y[has & good])
        _report(f"{m.name} (all texts)", ev.measures[has, k], y[has])
        cells = cells_of(archive, ev.measures[good])[:, k]
        print(f"{m.name} bins of {quality_word} texts (logit_scale {m.judge.logit_scale:g}): "
              f"{np.bincount(cells, minlength=m.num_bins).tolist()}")


if __name__ == "__main__":
    main(sys.argv[1:])
