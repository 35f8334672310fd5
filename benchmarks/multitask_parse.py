"""How well the multitask domain reads real multi-task prompts and checks answers against gold ones.

    python benchmarks/multitask_parse.py FILE [FILE ...] [--json OUT]

Two kinds of file (no LM is used):

- A JSONL of hand-written prompts, one object a line: ``prompt``, ``num_subtasks``,
  ``depth``, ``subtasks`` (``instruction``, ``depends_on``, ``answer``),
  ``correct_response``, ``one_wrong_response``, ``wrong_index`` (the sub-task the wrong
  response gets wrong, 1-based; ``--zero-based`` for files that count from 0). Per prompt: sub-task count right, dependency
  depth right (:func:`qdaif.plugins.multitask.parsing.parse_prompt`); the correct response
  passes every sub-task; the one-wrong response fails exactly the wrong one (answers read
  by :func:`~qdaif.plugins.multitask.checkers.extract_answers`, checked against the gold
  answers by :func:`~qdaif.plugins.multitask.checkers.gold_reference`).
- An MTI-Bench-style JSON list (``context``, ``instructions``, ``answers``, optional
  ``dependent``, ``id``). Per item: the import (``domain.settings.items``) keeps every
  sub-task and the depth ``dependent`` gives; and the item written out as MTI Bench
  writes a prompt (``#1: ...`` lines, then the context) parses back to the right count
  and depth (depth only where ``dependent`` is given).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qdaif.plugins.multitask.checkers import check, extract_answers, gold_reference
from qdaif.plugins.multitask.items import mti_prompt, read_items
from qdaif.plugins.multitask.parsing import parse_prompt


def _depth(deps: list[list[int]]) -> int:
    out: list[int] = []
    for d in deps:
        out.append(1 + max(out[j - 1] for j in d) if d else 0)
    return max(out, default=0)


def eval_prompts(rows: list[dict], zero_based: bool = False) -> dict:
    """Count, depth, correct-passes-all and one-wrong-fails-exactly-one over hand-written prompts."""
    per = []
    for r in rows:
        parsed = parse_prompt(r["prompt"])
        k = int(r["num_subtasks"])
        got_k, got_d = (parsed.k, parsed.depth) if parsed else (0, 0)
        refs = [gold_reference(str(s["answer"]), s["instruction"]) for s in r["subtasks"]]

        def verdicts(reply: str) -> list[bool]:
            return [check(ref, a, reply) for ref, a in zip(refs, extract_answers(reply, k))]

        ok = verdicts(r["correct_response"])
        bad = verdicts(r["one_wrong_response"])
        wrong = int(r["wrong_index"]) - (0 if zero_based else 1)
        per.append({"id": r.get("id"), "count": got_k == k, "depth": got_d == int(r["depth"]), "got": [got_k, got_d],
                    "want": [k, int(r["depth"])], "correct_passes": all(ok), "correct": ok,
                    "wrong_fails_exactly": [not v for v in bad] == [i == wrong for i in range(k)], "wrong": bad,
                    "deps": [list(d) for d in parsed.depends_on] if parsed else None})
    n = len(per)
    return {"n": n, "count_right": sum(p["count"] for p in per), "depth_right": sum(p["depth"] for p in per),
            "correct_passes_all": sum(p["correct_passes"] for p in per),
            "one_wrong_fails_exactly_it": sum(p["wrong_fails_exactly"] for p in per), "wrong_index_base": 0 if zero_based else 1,
            "items": per}


def _gold_deps(inst: dict) -> list[list[int]] | None:
    dep, n = inst.get("dependent"), len(inst["instructions"])
    if dep is None:
        return None
    if isinstance(dep, bool):
        return [[i] if dep and i > 0 else [] for i in range(n)]
    out = []
    for i, d in enumerate(dep):
        if isinstance(d, bool):
            out.append([i] if d and i > 0 else [])
        elif isinstance(d, int):
            out.append([d] if 1 <= d <= i else [])
        else:
            out.append(list(d or []))
    return out


def eval_items(path: Path) -> dict:
    """Import and prompt-parse checks over an MTI-Bench-style JSON file."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data = list(data.values()) if isinstance(data, dict) else data
    imported = read_items(path, where=str(path.name))
    per = []
    for inst, item in zip(data, imported):
        n = len(inst["instructions"])
        gold = _gold_deps(inst)
        want_d = _depth(gold) if gold is not None else None
        imp_d = _depth([s["depends_on"] for s in item["subtasks"]])
        parsed = parse_prompt(mti_prompt(inst))
        got_k, got_d = (parsed.k, parsed.depth) if parsed else (0, 0)
        per.append({"id": inst.get("id"), "import_count": len(item["subtasks"]) == n,
                    "import_depth": None if want_d is None else imp_d == want_d,
                    "count": got_k == n, "depth": None if want_d is None else got_d == want_d,
                    "got": [got_k, got_d], "want": [n, want_d]})
    with_depth = [p for p in per if p["depth"] is not None]
    return {"n": len(per), "import_count_right": sum(p["import_count"] for p in per),
            "import_depth_right": sum(bool(p["import_depth"]) for p in with_depth), "with_gold_depth": len(with_depth),
            "count_right": sum(p["count"] for p in per), "depth_right": sum(bool(p["depth"]) for p in with_depth), "items": per}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--json", help="write the per-item results here")
    ap.add_argument("--zero-based", action="store_true", help="wrong_index counts from 0")
    args = ap.parse_args(argv)
    out = {}
    for f in args.files:
        path = Path(f)
        if path.suffix == ".jsonl":
            rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
            res = eval_prompts(rows, zero_based=args.zero_based)
            print(f"{path.name}: {res['n']} prompts | count right {res['count_right']}/{res['n']} | depth right "
                  f"{res['depth_right']}/{res['n']} | correct response passes all {res['correct_passes_all']}/{res['n']} | "
                  f"one-wrong fails exactly it {res['one_wrong_fails_exactly_it']}/{res['n']}")
            for p in res["items"]:
                if not (p["count"] and p["depth"] and p["correct_passes"] and p["wrong_fails_exactly"]):
                    print(f"  {p['id']}: got k,depth {p['got']} want {p['want']} deps {p['deps']} correct {p['correct']} "
                          f"wrong {p['wrong']}")
        else:
            res = eval_items(path)
            print(f"{path.name}: {res['n']} items | import: count right {res['import_count_right']}/{res['n']}, depth right "
                  f"{res['import_depth_right']}/{res['with_gold_depth']} | MTI-style prompt parsed: count right "
                  f"{res['count_right']}/{res['n']}, depth right {res['depth_right']}/{res['with_gold_depth']}")
            for p in res["items"]:
                if not (p["count"] and p["import_count"] and p["depth"] is not False and p["import_depth"] is not False):
                    print(f"  {p['id']}: got {p['got']} want {p['want']} import count {p['import_count']} "
                          f"import depth {p['import_depth']}")
        out[path.name] = res
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
