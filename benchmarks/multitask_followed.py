"""Accuracy of the multitask domain's ``followed`` judge on right vs wrong answers to the same free-form sub-task.

    python benchmarks/multitask_followed.py [FILE] [hydra overrides, e.g. model=hf model.name=...]

FILE (default ``tests/plugins/data/multitask_followed_dev.jsonl``) holds one object a line:
``context``, ``instruction`` (a free-form sub-task: nothing but a judge can check it),
``right`` and ``wrong`` (an answer that follows it and one that does not). Prints the AUC
of P(" followed") on right (positive) against wrong answers, the share of pairs where the
right answer scores higher, and the accuracy at 0.5. One batched ``score`` call.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from qdaif.cli import compose_config
from qdaif.domain import domain_from_config
from qdaif.feedback import label_probabilities
from qdaif.lm import ScoreRequest, make_lm

DEFAULT = Path(__file__).resolve().parent.parent / "tests" / "plugins" / "data" / "multitask_followed_dev.jsonl"


def main(argv: list[str]) -> int:
    files = [a for a in argv if "=" not in a]
    path = Path(files[0]) if files else DEFAULT
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    cfg = compose_config(["domain=multitask", *[a for a in argv if "=" in a]])
    fj = domain_from_config(cfg.domain).judges["followed"]
    lm = make_lm(cfg.model)
    requests = [ScoreRequest(fj.shots, fj.query.format(text=r[kind], instruction=r["instruction"], context=r["context"]), fj.labels)
                for r in rows for kind in ("right", "wrong")]
    p = label_probabilities(lm.score(requests), fj.logit_scale)[:, 0]
    right, wrong = p[0::2], p[1::2]
    y = np.r_[np.ones(len(right)), np.zeros(len(wrong))]
    s = np.r_[right, wrong]
    print(f"{path.name}: {len(rows)} pairs, model {cfg.model.get('name')}")
    print(f"  AUC right vs wrong {roc_auc_score(y, s):.3f} | right > wrong in {int((right > wrong).sum())}/{len(rows)} pairs | "
          f"accuracy at 0.5 {float(((s >= 0.5) == (y == 1)).mean()):.3f}")
    print(f"  P(followed) right: mean {right.mean():.3f} | wrong: mean {wrong.mean():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
