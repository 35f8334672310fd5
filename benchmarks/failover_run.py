"""A run on two llama-servers, one of them killed halfway through: does the run lose or repeat anything?

    python benchmarks/failover_run.py [--iterations 20] [--batch 8] [--kill-after 10] [--out DIR]

Starts two llama-servers (scripts/serve_llama.sh, 4 slots and 1 thread each), runs
``python -m qdaif run domain=opinions model=openai model.base_urls=[both]`` through the
CLI, and once ``metrics.jsonl`` shows iteration ``--kill-after``, kills the second server
with SIGKILL while the next iteration's requests are in flight (a crash, not a clean
stop). Then it checks the run directory and prints: history rows against iterations x
batch, distinct ids, the iterations in ``metrics.jsonl``, and each server's counters
around the kill. Exit status 1 if a candidate is missing or repeated or the run failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _helpers():
    spec = importlib.util.spec_from_file_location("qdaif_tests_lm_conftest", ROOT / "tests" / "lm" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _server_pid(port: int) -> int:
    from qdaif.lm._embedded import cache_root

    return int((cache_root() / "run" / f"llama-server-{port}.pid").read_text().strip())


def run_and_kill(urls: list[str], victim_pid: int, out: Path, args) -> tuple[int, float]:
    """Runs the CLI; SIGKILLs ``victim_pid`` once iteration ``args.kill_after`` is recorded. Returns (exit status, kill time)."""
    cmd = [sys.executable, "-m", "qdaif", "run", "domain=opinions", "model=openai", f"model.base_urls=[{','.join(urls)}]",
           "model.max_concurrency=8", "model.max_retries=3", "model.backoff=0.2", "model.down_for=30",
           f"iterations={args.iterations}", f"batch_size={args.batch}", f"init_evaluations={args.batch}",
           f"hydra.run.dir={out}", "progress=false", "seed=0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed_at = float("nan")
    while proc.poll() is None:
        if killed_at != killed_at and len(_jsonl(out / "metrics.jsonl")) >= args.kill_after:
            time.sleep(0.5)  # into the next iteration: its requests are in flight
            os.kill(victim_pid, signal.SIGKILL)
            killed_at = time.monotonic()
            print(f"killed the second server (pid {victim_pid}) during iteration {args.kill_after + 1}", flush=True)
        time.sleep(0.1)
    tail = proc.stdout.read().strip().splitlines()[-3:]
    print("run output (last lines):", *tail, sep="\n  ")
    return proc.returncode, killed_at


def report(out: Path, urls: list[str], args) -> bool:
    """Prints what the run directory holds; True when nothing was lost or repeated."""
    history, metrics = _jsonl(out / "history.jsonl"), _jsonl(out / "metrics.jsonl")
    ids = [h["id"] for h in history]
    want = args.iterations * args.batch
    print(f"history rows: {len(history)} (expected {want}); distinct ids: {len(set(ids))}; "
          f"metrics iterations: {[m['iteration'] for m in metrics][:3]}...{[m['iteration'] for m in metrics][-3:]} "
          f"({len(metrics)} lines)")
    for m in metrics[args.kill_after - 1 : args.kill_after + 2]:
        print(f"iteration {m['iteration']} servers: {json.dumps(m['servers'])}")
    totals = {u: {k: sum(m["servers"][u][k] for m in metrics) for k in ("requests", "errors", "failovers", "downs")}
              for u in urls}
    print("totals:", json.dumps(totals))
    return len(history) == want == len(set(ids)) and len(metrics) == args.iterations


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--kill-after", type=int, default=10, help="kill the second server after this iteration is recorded")
    ap.add_argument("--out", type=Path, help="run directory (default: a temporary folder)")
    args = ap.parse_args(argv)
    out = (args.out or Path(tempfile.mkdtemp(prefix="qdaif-failover-"))).resolve() / "run"
    h = _helpers()
    ports = [h.free_port(), h.free_port()]
    try:
        urls = [h.serve_llama(port=p, parallel=4, threads=1) for p in ports]
        status, _ = run_and_kill(urls, _server_pid(ports[1]), out, args)
        ok = report(out, urls, args) and status == 0
    finally:
        for p in ports:
            h.stop_llama(p)
    print(f"run exit status {status}; {'nothing lost or repeated' if ok else 'FAILED'}; run directory {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
