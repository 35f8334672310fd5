"""Speed of the QDAIF loop on the embedded model: generation, judging, whole iterations.

    python benchmarks/throughput.py [--repeats 2] [--full-run] [--parts generation,judge,iterations]
                                    [hydra overrides, e.g. model.attention=eager model.malloc_reuse=false]

Prints, on this machine:
  1. generation tokens/s at batch 1, 4 and 16 (LMX prompts of the opinions domain);
  2. the judge per candidate: one prompt at a time (no batching, no prefix cache) vs
     one batched call with the few-shot prefix cached;
  3. evaluations/s of whole search iterations at batch 1, 4 and 16, and the share of
     wall time spent outside the LM (engine overhead);
  4. with --full-run, the wall time of a 2000-evaluation opinions run through the CLI.
Overrides select other backend settings for before/after comparisons, e.g. the settings
before this project's CPU work: ``model.decoder=hf model.attention=sdpa
model.malloc_reuse=false`` (see docs/performance.md). Timings on a shared 2-core machine
are noisy: each figure is given as min/median over ``--repeats`` repetitions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qdaif.algorithms import QDAIF
from qdaif.cli import compose_config
from qdaif.domain import domain_from_config
from qdaif.feedback import LabelJudge
from qdaif.lm import ScoreRequest, make_lm
from qdaif.run_dir import RunDir
from qdaif.search import Search, SearchState


def spread(xs: list[float]) -> str:
    return f"min {min(xs):.3f} / median {statistics.median(xs):.3f}"


def bench_generation(lm, domain, repeats: int) -> dict[int, float]:
    rng = np.random.default_rng(0)
    seeds = list(domain.seeds)
    g = domain.generation
    out = {}
    for bs in (1, 4, 16):
        rates = []
        for r in range(repeats):
            prompts = [domain.lmx.render([seeds[i] for i in rng.permutation(len(seeds))]) for _ in range(bs)]
            t = time.perf_counter()
            texts = lm.generate(prompts, max_tokens=g.max_tokens, temperature=g.temperature, top_p=g.top_p,
                                stop=g.stop, seed=r)
            dt = time.perf_counter() - t
            tokens = sum(len(lm.tokenizer(x, add_special_tokens=False)["input_ids"]) + 1 for x in texts)
            rates.append(tokens / dt)
        out[bs] = statistics.median(rates)
        print(f"  generate batch {bs:>2}: {spread(rates)} tokens/s")
    print(f"  batch 16 / batch 1 tokens/s: {out[16] / out[1]:.1f}x (target >= 6x)")
    return out


def bench_judge(lm, domain, repeats: int, n: int = 16) -> None:
    data = Path(__file__).parent / "data" / "opinions_labelled.jsonl"
    texts = [json.loads(x)["text"] for x in data.read_text().splitlines()][:n]
    judge = LabelJudge(domain=domain, lm=lm)
    judge.evaluate(texts[:2])  # warm the prefix cache, as every iteration after the first finds it
    single, batched = [], []
    for _ in range(repeats):
        reqs = [ScoreRequest("", "".join(spec.prompt_parts(t)), spec.labels) for spec in judge.specs for t in texts]
        t = time.perf_counter()
        for r in reqs:
            lm.score([r])
        single.append((time.perf_counter() - t) / n)
        t = time.perf_counter()
        judge.evaluate(texts)
        batched.append((time.perf_counter() - t) / n)
    print(f"  judge, one prompt at a time: {spread(single)} s/candidate ({len(judge.specs)} prompts each)")
    print(f"  judge, batched + prefix cache: {spread(batched)} s/candidate")
    print(f"  speed-up: {statistics.median(single) / statistics.median(batched):.1f}x (target >= 8x)")


def bench_iterations(lm, domain, cfg, repeats: int) -> None:
    for bs in (1, 4, 16):
        rates, overheads = [], []
        for r in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                algorithm = QDAIF(domain=domain, init_evaluations=int(cfg.init_evaluations),
                                  min_init_cells=int(cfg.min_init_cells))
                search = Search(domain=domain, lm=lm, judge_lm=lm, run_dir=RunDir(tmp),
                                state=SearchState.new(domain, r, algorithm), batch_size=bs, seed=r)
                iterations = max(3, 96 // bs)
                t = time.perf_counter()
                search.run(iterations, progress=False)
                wall = time.perf_counter() - t
                rates.append(search.state.evaluations / wall)
                overheads.append(1 - search.state.lm_seconds / wall)
        print(f"  iterations at batch {bs:>2}: {spread(rates)} evaluations/s; "
              f"outside the LM: {spread([100 * o for o in overheads])} % of wall time")


def full_run(overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "qdaif", "run", "domain=opinions", "iterations=125", "batch_size=16",
                        f"hydra.run.dir={tmp}/run", "progress=false", *overrides], check=True)
        wall = time.perf_counter() - t
        last = json.loads(Path(tmp, "run", "metrics.jsonl").read_text().splitlines()[-1])
    print(f"  2000-evaluation opinions run: {wall / 60:.1f} min wall (target <= 15), "
          f"QD score {last['qd_score']:.2f}, coverage {last['coverage']:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--full-run", action="store_true")
    parser.add_argument("--parts", default="generation,judge,iterations",
                        help="comma-separated subset of generation,judge,iterations to run")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.attention=eager")
    args = parser.parse_args()
    cfg = compose_config(args.overrides)
    domain = domain_from_config(cfg.domain)
    lm = make_lm(cfg.model)
    print(f"model: {lm.describe()}")
    parts = set(args.parts.split(","))
    if unknown := parts - {"generation", "judge", "iterations"}:
        parser.error(f"unknown --parts {sorted(unknown)}; choose from generation, judge, iterations")
    if "generation" in parts:
        print("1. generation")
        bench_generation(lm, domain, args.repeats)
    if "judge" in parts:
        print("2. judge")
        bench_judge(lm, domain, args.repeats)
    if "iterations" in parts:
        print("3. whole iterations")
        bench_iterations(lm, domain, cfg, args.repeats)
    if args.full_run:
        print("4. full run")
        full_run(args.overrides)


if __name__ == "__main__":
    main()
