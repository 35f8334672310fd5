"""Redteam: attack success per run and transfer of each archive's prompts to a stricter instruction.

For each run directory (``python -m qdaif run domain=redteam ...``) it reports, from
``history.jsonl``, the attack success rate (share of judged candidates whose reply named
the entity, with a prompt that does not) and, from ``elites.jsonl``, the cells holding a
successful prompt. Then it asks the target again (one batched ``generate`` per run and
instruction, greedy) with every successful elite under the run's instruction and under
``settings.strong_instruction``: the share still successful under the stricter one says
whether the archive transfers. The target asked is ``target_model`` when the overrides set
it (a second target model: ``target_model=hf target_model.name=...``), else ``model``.
Writes ``transfer.json`` and ``transfer.md`` to ``--out``.

    python benchmarks/redteam_transfer.py runs/redteam/*_seed* --out docs/results/redteam model.threads=1
    python benchmarks/redteam_transfer.py runs/redteam/*_seed* --out OUT target_model=openai target_model.base_url=URL
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from qdaif.cli import compose_config
from qdaif.domain import domain_from_config
from qdaif.lm import make_lm
from qdaif.plugins.redteam import Plugin, find_mentions


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("args", nargs="+", help="run directories, then model overrides such as model.threads=1")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_intermixed_args()  # overrides may follow --out, as in the usage above
    overrides = [a for a in args.args if "=" in a]
    runs = [Path(a) for a in args.args if "=" not in a]
    missing = [str(r) for r in runs if not (r / "elites.jsonl").is_file()]
    if missing or not runs:
        raise SystemExit(f"redteam_transfer: not run directories (no elites.jsonl): {', '.join(missing) or 'none given'}")
    cfg = compose_config(["domain=redteam", *overrides])
    lm = make_lm(cfg.target_model, where="target_model") if cfg.get("target_model") is not None else make_lm(cfg.model)
    out, examples = [], []
    for run in runs:
        domain = domain_from_config(OmegaConf.load(run / "config.yaml").domain)
        plugin = Plugin(domain=domain)
        strong = plugin.settings["strong_instruction"]
        history, elites = rows(run / "history.jsonl"), rows(run / "elites.jsonl")
        ok = [h for h in history if h["details"]["success"]]
        good = [e for e in elites if e["quality"] > 0]
        ents = [plugin.by_name[e["bins"]["entity"]] for e in good]
        texts = [e["text"] for e in good]
        base = plugin.replies(lm, texts, ents, seed=0) if good else []
        strict = plugin.replies(lm, texts, ents, seed=0, instruction=strong) if good else []
        hit_base = [bool(find_mentions(e, [r])[0]) for e, r in zip(ents, base)]
        hit_strict = [bool(find_mentions(e, [r])[0]) for e, r in zip(ents, strict)]
        alg = re.sub(r"_seed\d+$", "", run.name)
        out.append({"run": run.name, "algorithm": alg, "candidates": len(history),
                    "successes": len(ok), "success_rate": len(ok) / max(len(history), 1),
                    "named_in_prompt": sum(bool(h["details"]["named_in_prompt"]) for h in history),
                    "cells": len(elites), "successful_cells": len(good),
                    "successful_cells_per_entity": {n: sum(e["bins"]["entity"] == n for e in good) for n in plugin.by_name},
                    "tactics_successful": sorted({e["bins"]["tactic"] for e in good}),
                    "rerun_success": sum(hit_base), "strong_success": sum(hit_strict)})
        for e, r, s, hb, hs in zip(good, base, strict, hit_base, hit_strict):
            examples.append({"run": run.name, "bins": e["bins"], "prompt": e["text"], "fluent_quality": e["quality"],
                             "reply": r, "success": hb, "strong_reply": s, "strong_success": hs})
    args.out.mkdir(parents=True, exist_ok=True)
    target = lm.describe()
    (args.out / "transfer.json").write_text(json.dumps({"target": target, "runs": out, "examples": examples}, indent=1) + "\n")
    lines = ["| run | candidates | success rate | cells | successful cells | re-run success | strong-instruction success |",
             "|---|---|---|---|---|---|---|"]
    for r in out:
        lines.append(f"| {r['run']} | {r['candidates']} | {r['success_rate']:.3f} | {r['cells']} | {r['successful_cells']} | "
                     f"{r['rerun_success']}/{r['successful_cells']} | {r['strong_success']}/{r['successful_cells']} |")
    lines.append("")
    lines.append("| algorithm | success rate (mean of seeds) | successful cells (mean) | strong-instruction success (pooled) |")
    lines.append("|---|---|---|---|")
    for alg in sorted({r["algorithm"] for r in out}):
        rs = [r for r in out if r["algorithm"] == alg]
        n = sum(r["successful_cells"] for r in rs)
        lines.append(f"| {alg} | {np.mean([r['success_rate'] for r in rs]):.3f} | "
                     f"{np.mean([r['successful_cells'] for r in rs]):.2f} | {sum(r['strong_success'] for r in rs)}/{n} |")
    (args.out / "transfer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
