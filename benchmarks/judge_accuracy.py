"""Accuracy and ranking (AUC) of a domain's judges on a hand-labelled set.

    python benchmarks/judge_accuracy.py [data=benchmarks/data/opinions_labelled.jsonl] [hydra overrides...]

The labelled file has one JSON object per line: ``text``, ``on_topic`` (bool) and
``sentiment`` ("positive"/"negative"). Prints, for the quality judge (on topic or
not) and the sentiment measure (on-topic texts), accuracy at 0.5, AUC, the spread of
the judge's log-odds, and which of the domain's bins the labelled texts fall in.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from qdaif.archive import cells_of, make_archive
from qdaif.cli import compose_config
from qdaif.domain import domain_from_config
from qdaif.feedback import LabelJudge
from qdaif.lm import make_lm


def _report(name: str, p: np.ndarray, y: np.ndarray) -> None:
    logit = np.log(p) - np.log1p(-p)
    acc = float(np.mean((p > 0.5) == y))
    auc = float(roc_auc_score(y, p))
    q = np.quantile(logit, [0, 0.1, 0.5, 0.9, 1]).round(2).tolist()
    print(f"{name:<28} n={len(y):<3} acc@0.5={acc:.3f}  AUC={auc:.3f}  "
          f"mean P | pos={p[y].mean():.3f} neg={p[~y].mean():.3f}  log-odds quantiles {q}")


def main(argv: list[str]) -> None:
    data = Path("benchmarks/data/opinions_labelled.jsonl")
    overrides = []
    for a in argv:
        if a.startswith("data="):
            data = Path(a.split("=", 1)[1])
        else:
            overrides.append(a)
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    cfg = compose_config(overrides)
    domain = domain_from_config(cfg.domain)
    lm = make_lm(cfg.model)
    ev = LabelJudge(domain=domain, lm=lm).evaluate([r["text"] for r in rows])
    print(f"domain={domain.name} model={lm.describe().get('name')} texts={len(rows)} data={data}")
    on = np.array([bool(r["on_topic"]) for r in rows])
    _report(f"quality ({domain.quality.name})", ev.quality, on)
    sent = np.array([r.get("sentiment") == "positive" for r in rows])
    m = domain.measures[0]
    _report(f"{m.name} (on-topic texts)", ev.measures[on, 0], sent[on])
    _report(f"{m.name} (all texts)", ev.measures[:, 0], sent)
    cells = cells_of(make_archive([x.edges for x in domain.measures]), ev.measures[on])[:, 0]
    print(f"{m.name} bins of on-topic texts: {np.bincount(cells, minlength=m.num_bins).tolist()}")


if __name__ == "__main__":
    main(sys.argv[1:])
