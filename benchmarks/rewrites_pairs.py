"""Does the rewrites domain's quality prefer a faithful rewrite to an unfaithful one of the same text?

    python benchmarks/rewrites_pairs.py [file=FILE] [show=true] [hydra overrides, e.g. domain.settings.meaning=lm]

FILE (default ``benchmarks/data/rewrites_dev.jsonl``) holds one object a line: ``task``
(sentiment, topic or toxicity), ``label`` (the original's gold label, as in the plugin's
data), ``original``, ``faithful`` (a rewrite that keeps the meaning), ``unfaithful`` (one
that does not) and ``kind`` (the unfaithful one's: fact change, label flip or topic drift).

The domain and its plugin are built as the engine builds them (``domain=rewrites`` plus
the overrides, ``model=embedded`` by default); each original becomes an input of the
plugin, and both rewrites go through ``Plugin.evaluate`` in one batch. Prints the AUC of
the plugin's meaning score (faithful positive), how often quality(faithful) >
quality(unfaithful) and how often they tie, and how often the label-evidence penalty
fires on a faithful rewrite, overall and per kind. ``show=true`` also prints every pair.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from qdaif.cli import compose_config
from qdaif.domain import domain_from_config
from qdaif.lm import make_lm
from qdaif.operators import Proposal
from qdaif.plugin import make_plugin
from qdaif.plugins.rewrites import TASKS, Input

DEFAULT = Path(__file__).resolve().parent / "data" / "rewrites_dev.jsonl"
FIELDS = ("task", "label", "original", "faithful", "unfaithful", "kind")


def load_pairs(path: Path) -> list[dict[str, str]]:
    """The rows of a pairs file; a bad row stops with one line naming it."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = [f for f in FIELDS if not str(row.get(f, "")).strip()]
        if missing or row["task"] not in TASKS:
            sys.exit(f"{path.name} line {n}: missing {', '.join(missing)}" if missing else
                     f"{path.name} line {n}: task must be one of {', '.join(TASKS)}, got {row['task']!r}")
        rows.append({f: str(row[f]) for f in FIELDS})
    return rows


def summary(rows: list[dict[str, str]], ev, label: str) -> str:
    """One line of figures for the pairs in ``rows`` (``ev``: their evaluation, faithful then unfaithful)."""
    n = len(rows)
    q = np.nan_to_num(ev.quality, nan=0.0)
    meaning = np.array([d["meaning"] for d in ev.details])
    qf, qu = q[:n], q[n:]
    fired = sum(bool(d["evidence_added"]) for d in ev.details[:n])
    auc = roc_auc_score(np.r_[np.ones(n), np.zeros(n)], meaning) if n else float("nan")
    return (f"{label:<12} n={n:<3} meaning AUC {auc:.3f} | quality faithful > unfaithful {int((qf > qu).sum())}/{n}, "
            f"ties {int((qf == qu).sum())}, zeros f/u {int((qf == 0).sum())}/{int((qu == 0).sum())} | "
            f"penalty fires on faithful {fired}/{n}")


def main(argv: list[str]) -> int:
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    path = Path(opts.pop("file", DEFAULT))
    show = opts.pop("show", "false").lower() in ("1", "true", "yes")
    rows = load_pairs(path)
    cfg = compose_config(["domain=rewrites", *[f"{k}={v}" for k, v in opts.items()]])
    plugin = make_plugin(domain_from_config(cfg.domain))
    lm = make_lm(cfg.model)
    ids = []
    for k, r in enumerate(rows):  # each original is an input of the plugin (slice 0 of the archive)
        inp = Input(id=f"pair-{k + 1:03d}", task=r["task"], label=r["label"], style="ood", text=r["original"])
        plugin.by_id[inp.id], plugin.index[inp.id] = inp, 0
        ids.append(inp.id)
    texts = [r["faithful"] for r in rows] + [r["unfaithful"] for r in rows]
    props = [Proposal("", "paraphrase", (), meta={"input": i}) for i in ids + ids]
    ev = plugin.evaluate(texts, props, lm=lm, judge_lm=lm, seed=0)
    s = cfg.domain.settings
    print(f"{path.name}: {len(rows)} pairs | model {cfg.model.get('name')} | domain version {cfg.domain.get('version')} | "
          f"meaning {s.get('meaning', 'lm')} floor {s.get('meaning_floor')}")
    print(summary(rows, ev, "all"))
    n = len(rows)
    for kind in sorted({r["kind"] for r in rows}) + list(TASKS):
        pick = [k for k, r in enumerate(rows) if kind in (r["kind"], r["task"])]
        print(summary([rows[k] for k in pick], _subset(ev, pick, n), kind))
    if show:
        for k, r in enumerate(rows):
            df, du = ev.details[k], ev.details[n + k]
            mark = ">" if ev.quality[k] > ev.quality[n + k] else ("=" if ev.quality[k] == ev.quality[n + k] else "<")
            print(f"{k + 1:3d} {r['kind']:<11} q {ev.quality[k]:.3f} {mark} {ev.quality[n + k]:.3f} | meaning "
                  f"{df['meaning']:.3f} / {du['meaning']:.3f} | p_target {df['classes'][df['target']]:.2f} / "
                  f"{du['classes'][du['target']]:.2f} | evidence {df['evidence_added']} / {du['evidence_added']}")
    return 0


def _subset(ev, pick: list[int], n: int):
    """The evaluation of the pairs ``pick`` (faithful then unfaithful), with the fields :func:`summary` reads."""
    from types import SimpleNamespace

    idx = pick + [n + k for k in pick]
    return SimpleNamespace(quality=np.asarray(ev.quality)[idx], details=[ev.details[i] for i in idx])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
