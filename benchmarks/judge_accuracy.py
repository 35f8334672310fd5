"""Accuracy and ranking (AUC) of a domain's judges on a hand-labelled set.

    python benchmarks/judge_accuracy.py [domain=NAME] [data=FILE] [split=dev|holdout]
                                        [positive=MEASURE:VALUE,...] [hydra overrides...]

A thin caller of ``python -m qdaif judge --labels FILE`` (``qdaif/judge_eval.py``, where the
file format and the metrics are described) that knows the project's labelled sets:
without ``data=``, the file is ``benchmarks/data/<stem>_labelled.jsonl`` with the stem
from ``DATA`` below, and the class each label measure's value is the probability of
comes from ``POSITIVE`` unless ``positive=`` names it. ``output=FILE`` writes the JSON
report, ``bootstrap=N`` and ``seed=S`` set the bootstrap.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qdaif.cli import compose_config
from qdaif.domain import domain_from_config
from qdaif.errors import QDAIFError
from qdaif.judge_eval import evaluate_file, parse_positive
from qdaif.lm import make_lm

# Labelled file (benchmarks/data/<stem>_labelled.jsonl) of each domain.
DATA = {"opinions": "opinions", "stories": "stories", "stories_genre": "stories", "stories_ending": "stories",
        "poetry": "poems"}
# The class a label measure's value is the probability of (the labels need not be its name).
POSITIVE = {"sentiment": "positive", "genre": "horror", "ending": "happy"}


def main(argv: list[str]) -> None:
    opts: dict[str, str] = {}
    overrides = []
    for a in argv:
        key, _, value = a.partition("=")
        if key in ("data", "split", "positive", "output", "bootstrap", "seed"):
            opts[key] = value
        else:
            overrides.append(a)
    cfg = compose_config(overrides)
    domain = domain_from_config(cfg.domain)
    data = Path(opts.get("data") or f"benchmarks/data/{DATA.get(domain.name, domain.name)}_labelled.jsonl")
    label_judges = {m.name for m in domain.measures if m.judge.kind == "label"}
    positive = {k: v for k, v in POSITIVE.items() if k in label_judges}
    positive.update(parse_positive(opts["positive"]) if opts.get("positive") else {})
    evaluate_file(domain=domain, build_lm=lambda: make_lm(cfg.model), labels=data, output=opts.get("output"),
                  resamples=int(opts.get("bootstrap", 1000)), seed=int(opts.get("seed", 0)), positive=positive,
                  split=opts.get("split") or None, warn=lambda w: print(f"warning: {w}", file=sys.stderr))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except QDAIFError as e:
        print(f"judge_accuracy: error: {e}", file=sys.stderr)
        sys.exit(2)
