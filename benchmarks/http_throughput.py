"""Evaluations per second through the OpenAI-compatible HTTP backend, and the response cache's effect.

    python benchmarks/http_throughput.py [--base-url URL] [--batch 16] [--repeats 3]
                                         [--concurrency 1,4,16] [--threads 1] [--json FILE]
    python benchmarks/http_throughput.py --server llama-server [--texts 32] [--repeats 2] [--threads N]

Default (``--server llama-cpp-python``): an evaluation is what one QDAIF candidate costs:
one generation from a seeded-init LMX prompt of the opinions domain (the domain's
max_tokens, temperature, top_p and stop) and its judging (quality and sentiment: two
label requests). Each repeat is one batch, as the engine runs it: one ``generate`` call,
then one judge ``score`` call. Without ``--base-url`` the script starts llama-cpp-python's
server on 127.0.0.1 with the embedded GGUF (build it with scripts/install_llama_cpp.sh).
Then the cache: the same batches through a ``CachingLM`` twice, in a fresh cache file;
the second pass must be all hits.

``--server llama-server``: the judge alone, on llama.cpp's continuous-batching server
(scripts/build_llama_server.sh, started with scripts/serve_llama.sh). An evaluation is
one text judged by the opinions judges (two label requests); each measurement judges
``--texts`` texts of benchmarks/data/opinions_labelled.jsonl in one ``evaluate`` call,
each text given a measurement-specific opening so no server reuses a cached prompt beyond
the shared few-shot block (as in a run, where every candidate is new). Measured at 1, 4
and 16 requests in flight: one server with 16 slots on every core, two servers with 8
slots sharing the cores, both on the 16-bit copy of the embedded model that serve_llama.sh
serves by default, one server with 16 slots on the wheel's Q4_1 file, and one on the
16-bit copy with ``chain_prefixes=False`` (the sentiment request sent with the quality
request instead of after it); then the in-process embedded backend (transformers, every
core) on the same texts.
``--threads`` (default: the number of cores) is divided among a setup's servers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qdaif.cli import compose_config
from qdaif.domain import domain_from_config
from qdaif.feedback import LabelJudge
from qdaif.lm import ScoreRequest
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


# ------------------------------------------------- --server llama-server: the judge alone
def fresh_texts(base: list[str], n: int, tag: int) -> list[str]:
    """``n`` texts of ``base``, each opened with a phrase of its own (no cached prompt matches past the few-shot block)."""
    return [f"Note {tag}.{i}: {base[i % len(base)]}" for i in range(n)]


def judge_rate(lm, domain, texts: list[str]) -> float:
    """Judges ``texts`` in one ``evaluate`` call (as the engine does); returns evaluations per second."""
    judge = LabelJudge(domain=domain, lm=lm)
    t0 = time.perf_counter()
    ev = judge.evaluate(texts)
    seconds = time.perf_counter() - t0
    if not ev.finite.all():
        raise RuntimeError("a judge value is not finite")
    return len(texts) / seconds


def measure_servers(urls: list[str], slots: int, domain, base: list[str], args, tags, chain: bool = True) -> list[dict]:
    """Evaluations/s of the judge through ``urls`` at each in-flight level.

    First every one of the ``slots`` slots (all servers together) gets a request, so each
    holds the few-shot block in its cache, as it does after a run's first iteration.
    """
    with OpenAILM(base_urls=urls, max_concurrency=slots) as lm:
        judge_rate(lm, domain, fresh_texts(base, slots, next(tags)))
    rows = []
    for c in (int(x) for x in args.concurrency.split(",")):
        with OpenAILM(base_urls=urls, max_concurrency=c, chain_prefixes=chain) as lm:
            lm.score([ScoreRequest("", "Hello", (" there",))])  # the scoring probe, outside the timing
            rates = [judge_rate(lm, domain, fresh_texts(base, args.texts, next(tags))) for _ in range(args.repeats)]
            rows.append({"in_flight": c, "evals_per_s": rates, "scoring": lm.scoring, "requests": dict(lm.stats)})
    return rows


def measure_setup(slots: list[int], model: Path, chain: bool, domain, base: list[str], args, tags) -> list[dict]:
    """Starts one llama-server per entry of ``slots`` (its slot count) on ``model``, measures, stops them."""
    helpers = _server_helpers()
    ports = [helpers.free_port() for _ in slots]
    threads = max(1, args.threads // len(slots))
    try:
        urls = [helpers.serve_llama(port=p, parallel=n, threads=threads, model=model) for p, n in zip(ports, slots)]
        return measure_servers(urls, sum(slots), domain, base, args, tags, chain)
    finally:
        for p in ports:
            helpers.stop_llama(p)


def measure_in_process(domain, base: list[str], args, tags) -> list[float]:
    """Evaluations/s of the judge through the embedded default backend (transformers, same weights)."""
    from qdaif.lm import make_lm

    lm = make_lm({"backend": "transformers", "name": "embedded"})
    judge_rate(lm, domain, fresh_texts(base, 4, next(tags)))
    return [judge_rate(lm, domain, fresh_texts(base, args.texts, next(tags))) for _ in range(args.repeats)]


def print_judge_table(results: dict) -> None:
    print(f"\n{'setup':<26} | {'in flight':>9} | {'evals/s median':>14} | min-max")
    for name, rows in results["setups"].items():
        for row in rows:
            r = row["evals_per_s"]
            print(f"{name:<26} | {row['in_flight']:>9} | {statistics.median(r):>14.2f} | {min(r):.2f}-{max(r):.2f}")
    r = results["in_process"]
    print(f"{'in process (transformers)':<26} | {'batch':>9} | {statistics.median(r):>14.2f} | {min(r):.2f}-{max(r):.2f}")
    one = {row["in_flight"]: statistics.median(row["evals_per_s"]) for row in results["setups"]["1 server x 16 slots"]}
    if 1 in one and 16 in one:
        results["ratio_16_vs_1"] = one[16] / one[1]
        results["http16_vs_in_process"] = one[16] / statistics.median(r)
        print(f"\none server: 16 in flight / 1 in flight = {results['ratio_16_vs_1']:.2f}x (target >= 3x)")
        print(f"one server at 16 in flight / in process = {100 * results['http16_vs_in_process']:.0f}% (target >= 60%)")


def llama_server_main(args) -> dict:
    """The judge's evaluations/s on llama-server (1x16 and 2x8 slots) and in process; prints the table."""
    import itertools

    from qdaif.lm._embedded import embedded_gguf_16bit, embedded_gguf_path

    domain = domain_from_config(compose_config(["domain=opinions", "model=scripted_fake"]).domain)
    base = [json.loads(x)["text"] for x in (ROOT / "benchmarks/data/opinions_labelled.jsonl").read_text().splitlines() if x.strip()]
    tags = itertools.count()
    results: dict = {"server": "llama-server", "threads": args.threads, "texts": args.texts, "repeats": args.repeats,
                     "load_before": os.getloadavg(), "setups": {}}
    print(f"llama-server, {args.threads} thread(s) per setup; {args.texts} texts per measurement, {args.repeats} repeats; "
          f"load average {results['load_before'][0]:.1f}")
    sixteen, q4 = embedded_gguf_16bit(), embedded_gguf_path()
    results["model"] = sixteen.name
    for name, slots, model, chain in (("1 server x 16 slots", [16], sixteen, True),
                                      ("2 servers x 8 slots", [8, 8], sixteen, True),
                                      ("1 server x 16 slots, Q4_1", [16], q4, True),
                                      ("1 server x 16, unchained", [16], sixteen, False)):
        results["setups"][name] = measure_setup(slots, model, chain, domain, base, args, tags)
        print(f"{name}: done ({results['setups'][name][0]['scoring']})", flush=True)
    results["in_process"] = measure_in_process(domain, base, args, tags)
    results["load_after"] = os.getloadavg()
    print_judge_table(results)
    print(f"load average after: {results['load_after'][0]:.1f}")
    return results


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", choices=("llama-cpp-python", "llama-server"), default="llama-cpp-python",
                    help="llama-cpp-python: generate + judge on its server; llama-server: the judge on llama.cpp's own server")
    ap.add_argument("--texts", type=int, default=32, help="--server llama-server: texts judged per measurement")
    ap.add_argument("--base-url", help="an OpenAI-compatible server to use instead of starting llama.cpp")
    ap.add_argument("--batch", type=int, default=16, help="candidates per batch (the engine's batch_size)")
    ap.add_argument("--repeats", type=int, default=3, help="batches per concurrency level")
    ap.add_argument("--concurrency", default="1,4,16", help="requests in flight, comma-separated")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads: of each llama-cpp-python server (default 1); per setup with --server llama-server "
                         "(default: the number of cores, divided among its servers)")
    ap.add_argument("--servers", type=int, default=1, help="llama.cpp servers to start, used in rotation (base_urls)")
    ap.add_argument("--no-cache", action="store_true", help="skip the cache measurement")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args(argv)
    if args.threads is None:
        args.threads = (os.cpu_count() or 1) if args.server == "llama-server" else 1
    if args.server == "llama-server":
        results = llama_server_main(args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1) + "\n")
        return

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
