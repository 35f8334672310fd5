"""Compare judge options of a domain on a labelled development set (one model load).

    python benchmarks/judge_sweep.py domain=stories [data=FILE] [split=dev] [variants=a,b,...]
                                     [output=FILE.json] [hydra overrides...]

Each variant changes some judges of the domain (``VARIANTS`` below; an option value
``pool`` means "the examples of ``benchmarks/data/judge_pools.yaml`` for that judge").
For every variant it prints the headline figures of ``python -m qdaif judge --labels``
(AUC for label judges, accuracy and macro-F1 for categorical ones, on the texts whose
quality label is true) and the judge's wall and CPU time per text (CPU time is the steadier figure on a shared machine), so the cost of each option
shows next to what it buys. Options are chosen on the ``dev`` split only; the held-out
``*_test.jsonl`` files are evaluated once, after the choice, with ``python -m qdaif judge``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from qdaif.cli import compose_config
from qdaif.domain import domain_from_config
from qdaif.feedback import LabelJudge
from qdaif.judge_eval import evaluate_judges, judge_texts, read_labelled
from qdaif.lm import make_lm

sys.path.insert(0, str(Path(__file__).parent))
from judge_accuracy import DATA, POSITIVE  # noqa: E402

POOLS = Path(__file__).parent / "data" / "judge_pools.yaml"

# variant name -> judge name -> options (merged into that judge's config node).
VARIANTS: dict[str, dict[str, dict]] = {
    "base": {},
    "orders": {"*": {"orders": "all"}},
    "calibrate": {"*": {"calibrate": True}},
    "orders+calibrate": {"*": {"orders": "all", "calibrate": True}},
    "orders2": {"*": {"orders": 2}},
    "orders2+calibrate": {"*": {"orders": 2, "calibrate": True}},
    "ending-last2": {"ending": {"last_sentences": 2}},
    "ending-last3": {"ending": {"last_sentences": 3}},
    "quality-orders": {"spy_story": {"orders": "all"}, "poem_quality": {"orders": "all"}},
    "quality-orders1": {"spy_story": {"orders": 1}},  # stories version 1: the written order alone
    "quality-orders2": {"spy_story": {"orders": 2}},
    "quality-orders3": {"spy_story": {"orders": 3}},
    "measures-orders+calibrate": {"genre": {"orders": "all", "calibrate": True}, "tone": {"orders": "all", "calibrate": True},
                                  "ending": {"orders": "all", "calibrate": True}},
    "pool": {"*": {"examples": "pool"}},
    "pool+orders4": {"*": {"examples": "pool", "orders": 4}},
    "pool+calibrate": {"*": {"examples": "pool", "calibrate": True}},
    "pool+orders4+calibrate": {"*": {"examples": "pool", "orders": 4, "calibrate": True}},
    "pool+retrieve4": {"*": {"examples": "pool", "retrieve": 4}},
    "pool+retrieve6+orders3": {"*": {"examples": "pool", "retrieve": 6, "orders": 3}},
}


def _judge_nodes(domain_node: dict) -> dict[str, dict]:
    nodes = {domain_node["quality"]["name"]: domain_node["quality"]} if domain_node.get("quality") else {}
    nodes.update({m["name"]: m for m in domain_node.get("measures", [])})
    return nodes


def _apply(domain_node: dict, variant: dict[str, dict], pools: dict, domain: str) -> dict | None:
    """The domain node with the variant's options; None when a judge it needs has no pool."""
    node = json.loads(json.dumps(domain_node))
    for name, judge in _judge_nodes(node).items():
        opts = dict(variant.get(name, variant.get("*", {})))
        if opts.get("examples") == "pool":
            pool = pools.get(domain, {}).get(name)
            if pool is None:
                continue  # this judge keeps its own examples
            by_class = {c: lab for c, lab in zip(pool["classes"], judge["labels"])}
            opts["examples"] = [{"text": e["text"], "label": by_class[e["class"]]} for e in pool["examples"]]
            judge.pop("shots", None)
        if not (opts.get("examples") or judge.get("examples")):
            continue
        if opts.get("orders") == "all":
            opts["orders"] = len(opts.get("examples") or judge["examples"])
        judge.update(opts)
    return node


def main(argv: list[str]) -> None:
    opts, overrides = {}, []
    for a in argv:
        key, _, value = a.partition("=")
        (opts.__setitem__(key, value) if key in ("data", "split", "variants", "output") else overrides.append(a))
    cfg = compose_config(overrides)
    base = OmegaConf.to_container(cfg.domain, resolve=True)
    name = base["name"]
    data = Path(opts.get("data") or f"benchmarks/data/{DATA.get(name, name)}_labelled.jsonl")
    split = opts.get("split", "dev") or None
    pools = yaml.safe_load(POOLS.read_text(encoding="utf-8")) if POOLS.exists() else {}
    wanted = opts["variants"].split(",") if opts.get("variants") else list(VARIANTS)
    lm = make_lm(cfg.model)
    results = {}
    for v in wanted:
        domain = domain_from_config(_apply(base, VARIANTS[v], pools, name))
        labels = {m.name for m in domain.measures if m.judge.kind == "label"}
        labelled = read_labelled(data, domain, positive={k: p for k, p in POSITIVE.items() if k in labels}, split=split)
        t0, c0 = time.perf_counter(), time.process_time()
        ev = judge_texts(LabelJudge(domain=domain, lm=lm), labelled.texts, 64)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        reports = evaluate_judges(domain, labelled, ev, resamples=0)
        row = {f"{r.judge}/{r.subset}": {k: round(x, 3) for k, x in r.metrics.items() if k != "ece"} for r in reports}
        n = len(labelled.texts)
        results[v] = {"figures": row, "seconds_per_text": round(seconds / n, 3), "cpu_seconds_per_text": round(cpu / n, 3)}
        print(f"{v:22s} {seconds / n:6.3f} s/text (cpu {cpu / n:6.3f})  "
              + "  ".join(f"{k} " + " ".join(f"{m}={x}" for m, x in f.items()) for k, f in row.items()), flush=True)
    if opts.get("output"):
        Path(opts["output"]).write_text(json.dumps({"domain": name, "data": str(data), "split": split,
                                                    "variants": results}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
