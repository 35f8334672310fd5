"""Evaluations per second through the OpenAI-compatible HTTP backend, and the response cache's effect.

    python benchmarks/http_throughput.py [--base-url URL] [--batch 16] [--repeats 3]
                                         [--concurrency 1,4,16] [--threads 1] [--json FILE]

An evaluation is what one QDAIF candidate costs: one generation from a seeded-init LMX
prompt of the opinions domain (the domain's max_tokens, temperature, top_p and stop)
and its judging (quality and sentiment: two label requests). Each repeat is one batch,
as the engine runs it: one ``generate`` call, then one judge ``score`` call. Without
``--base-url`` the script starts llama-cpp-python's server on 127.0.0.1 with the
embedded GGUF (build it with scripts/install_llama_cpp.sh).

Then the cache: the same batches through a ``CachingLM`` twice, in a fresh cache file;
the second pass must be all hits.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qdaif.cli import compose_config
from qdaif.domain import domain_from_config
from qdaif.feedback import LabelJudge
from qdaif.lm._cache import CachingLM
from qdaif.lm._openai import OpenAILM
from qdaif.operators import SeededInit

ROOT = Path(__file__).resolve().parents[1]
# llama.cpp samples with top_k=40, min_p=0.05 and repeat_penalty=1.1 by default;
# these turn them off, so that only temperature and top_p act, as in the other backends.
LLAMA_PLAIN_SAMPLING = {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}


def _server_helpers():
    spec = importlib.util.spec_from_file_location("qdaif_tests_lm_conftest", ROOT / "tests" / "lm" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def run_batch(lm, judge: LabelJudge, domain, prompts: list[str], seed: int) -> tuple[float, float]:
    """Generates and judges one batch; returns the seconds of the generate and the judge call."""
    gen = domain.generation
    t0 = time.perf_counter()
    texts = lm.generate(prompts, max_tokens=gen.max_tokens, temperature=gen.temperature, top_p=gen.top_p, stop=gen.stop, seed=seed)
    t1 = time.perf_counter()
    judge.evaluate([t.strip() or "(empty)" for t in texts])
    return t1 - t0, time.perf_counter() - t1


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", help="an OpenAI-compatible server to use instead of starting llama.cpp")
    ap.add_argument("--batch", type=int, default=16, help="candidates per batch (the engine's batch_size)")
    ap.add_argument("--repeats", type=int, default=3, help="batches per concurrency level")
    ap.add_argument("--concurrency", default="1,4,16", help="requests in flight, comma-separated")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of each started llama.cpp server")
    ap.add_argument("--servers", type=int, default=1, help="llama.cpp servers to start, used in rotation (base_urls)")
    ap.add_argument("--no-cache", action="store_true", help="skip the cache measurement")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args(argv)

    domain = domain_from_config(compose_config(["domain=opinions", "model=scripted_fake"]).domain)
    rng = np.random.default_rng(0)
    op = SeededInit(lmx=domain.lmx, seeds=domain.seeds)
    batches = [[p.prompt for p in op.propose(None, rng, args.batch)] for _ in range(args.repeats)]

    procs: list = []
    tmp = Path(tempfile.mkdtemp(prefix="qdaif-bench-"))
    helpers = _server_helpers()
    results: dict = {"batch": args.batch, "repeats": args.repeats, "levels": [], "cache": []}
    try:
        if args.base_url:
            urls = [args.base_url]
        else:
            t0 = time.perf_counter()
            urls = []
            for k in range(args.servers):
                proc, url = helpers.start_llama_server(log=tmp / f"server{k}.log", threads=args.threads)
                procs.append(proc)
                urls.append(url)
            print(f"{args.servers} llama.cpp server(s) up in {time.perf_counter() - t0:.1f} s, {args.threads} thread(s) each")
        results["servers"] = urls
        # Warm-up: the first requests load pages of the model and fill llama.cpp's state.
        with OpenAILM(base_urls=urls, max_concurrency=1, extra_body=LLAMA_PLAIN_SAMPLING) as lm:
            run_batch(lm, LabelJudge(domain=domain, lm=lm), domain, batches[0][:2], seed=999)
            print(f"model {lm.name!r}, scoring with {lm.scoring}")
            results["scoring"] = lm.scoring
        print(f"\n{'in flight':>9} | {'evals/s median':>14} | {'min-max':>11} | batch seconds (generate + judge)")
        for c in (int(x) for x in args.concurrency.split(",")):
            with OpenAILM(base_urls=urls, max_concurrency=c, extra_body=LLAMA_PLAIN_SAMPLING) as lm:
                judge = LabelJudge(domain=domain, lm=lm)
                parts = [run_batch(lm, judge, domain, prompts, seed=100 + r) for r, prompts in enumerate(batches)]
                stats = dict(lm.stats)
            secs = [g + j for g, j in parts]
            rates = [args.batch / s for s in secs]
            print(f"{c:>9} | {statistics.median(rates):>14.2f} | {min(rates):>5.2f}-{max(rates):<5.2f} | "
                  f"{', '.join(f'{g + j:.1f} ({g:.1f} + {j:.1f})' for g, j in parts)}")
            results["levels"].append({"in_flight": c, "evals_per_s": rates, "generate_seconds": [g for g, _ in parts],
                                      "judge_seconds": [j for _, j in parts], "requests": stats})

        if args.no_cache:
            return
        cache_path = tmp / "cache.sqlite"
        passes = []
        for n in (1, 2):
            with OpenAILM(base_urls=urls, max_concurrency=4, extra_body=LLAMA_PLAIN_SAMPLING) as inner:
                lm = CachingLM(lm=inner, path=cache_path)
                judge = LabelJudge(domain=domain, lm=lm)
                secs = sum(sum(run_batch(lm, judge, domain, prompts, seed=100 + r)) for r, prompts in enumerate(batches))
                passes.append({"pass": n, "seconds": secs, "hits": lm.hits, "misses": lm.misses,
                               "http_requests": inner.stats["requests"]})
                lm.close()
        print("\ncache (4 in flight, same batches twice, fresh cache file):")
        for p in passes:
            print(f"  pass {p['pass']}: {p['seconds']:.3f} s, hits {p['hits']}, misses {p['misses']}, HTTP requests {p['http_requests']}")
        results["cache"] = passes
    finally:
        for proc in procs:
            helpers.stop_server(proc)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
