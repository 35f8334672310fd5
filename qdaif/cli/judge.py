"""``python -m qdaif judge``: score texts with a domain's judges, or evaluate the judges on labelled texts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from qdaif.cli._args import command_parser, fail, number, override
from qdaif.cli._compose import compose_config
from qdaif.cli._models import build_models
from qdaif.errors import ConfigError

__all__ = ["judge_command", "read_texts"]

_LABELS_ONLY = ("bootstrap", "seed", "positive", "split")


def read_texts(path: str | Path) -> list[str]:
    """Reads texts from a JSONL file (a ``text`` field per line) or a plain file (one per line).

    Raises:
        ConfigError: The file is missing or not UTF-8, or a JSONL line has no ``text``.
    """
    from qdaif.judge_eval import read_utf8

    p = Path(path)
    texts = []
    for n, line in enumerate(read_utf8(p, "input file").splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(row.get("text"), str):
                raise ConfigError(f"{p}:{n}: a JSONL line needs a string field 'text'")
            texts.append(row["text"])
        else:
            texts.append(line.strip())
    return texts


def _judge_parser():
    p = command_parser("judge", "Score texts with a domain's judges, or evaluate the judges on labelled texts. "
                                "Trailing KEY=VALUE arguments are Hydra overrides of the config "
                                "(domain=stories, domain_file=FILE, model=hf model.name=DIR).")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", metavar="FILE", help="texts to score: JSONL with 'text', or one text per line")
    what.add_argument("--labels", metavar="FILE", help="labelled JSONL/CSV file: evaluate the judges against its labels")
    p.add_argument("--output", metavar="FILE", help="JSONL of scores (--input) or a JSON report (--labels); default: stdout")
    p.add_argument("--chunk", type=number(int, 1), default=64, metavar="N", help="texts per judge call (default 64)")
    p.add_argument("--bootstrap", type=number(int, 0), metavar="N", help="with --labels: resamples per 95%% interval (default 1000)")
    p.add_argument("--seed", type=number(int, 0), metavar="S", help="with --labels: seed of the bootstrap (default 0)")
    p.add_argument("--positive", metavar="JUDGE:CLASS[,...]", help="with --labels: the class P(first label) stands for")
    p.add_argument("--split", metavar="NAME", help="with --labels: keep only the rows whose 'split' column equals this")
    p.add_argument("overrides", nargs="*", type=override, metavar="KEY=VALUE", help="Hydra overrides of the config")
    return p


def _options(args: list[str]):
    """The parsed arguments, checked before any model loads.

    Raises:
        ConfigError: A bad argument, a labels-only option with ``--input``, or an output folder that does not exist.
    """
    from qdaif.judge_eval import parse_positive

    a = _judge_parser().parse_intermixed_args(args)
    if a.input is not None:
        given = [f"--{k}" for k in _LABELS_ONLY if getattr(a, k) is not None]
        if given:
            raise ConfigError(f"judge: {', '.join(given)} only apply with --labels FILE")
    a.bootstrap = 1000 if a.bootstrap is None else a.bootstrap
    a.seed = 0 if a.seed is None else a.seed
    a.positive = parse_positive(a.positive) if a.positive else {}
    if a.output:
        folder = Path(a.output).expanduser().parent
        if not folder.is_dir():
            raise ConfigError(f"judge: --output {a.output!r}: folder {str(folder)!r} does not exist; create it first")
    return a


def _score_row(judge: Any, measures: Any, ev: Any, j: int, text: str, archive: Any) -> dict[str, Any]:
    """One JSONL line of ``judge --input``: the text's quality, measures, cell and label distributions."""
    from qdaif.archive import cells_of

    finite = bool(ev.finite[j])
    return {
        "text": text,
        "quality": float(ev.quality[j]) if finite else None,
        "measures": {m.name: float(ev.measures[j, k]) for k, m in enumerate(measures)} if finite else None,
        "cell": cells_of(archive, ev.measures[j : j + 1])[0].tolist() if finite else None,
        "labels": {name: dict(zip(spec.labels, ev.label_probs[name][j].round(6).tolist()))
                   for name, spec in zip(ev.label_probs, judge.specs)},
    }


def _score_texts(cfg: Any, texts: list[str], *, chunk: int, output: str | None) -> None:
    """Judges ``texts`` in chunks and writes one JSONL line per text (to ``output`` or stdout)."""
    from qdaif.archive import make_archive
    from qdaif.feedback import LabelJudge
    from qdaif.run_dir import dumps

    domain, _, judge_lm = build_models(cfg)
    if domain.plugin:
        fail(f"judge scores texts with a domain's label judges; domain {domain.name} is judged by its plugin "
             f"({domain.plugin}), which needs the prompt each text answers: inspect its runs' history.jsonl 'details' instead")
    judge = LabelJudge(domain=domain, lm=judge_lm)
    archive = make_archive([m.edges for m in domain.measures])
    out = open(output, "w", encoding="utf-8") if output else sys.stdout
    try:
        for start in range(0, len(texts), chunk):
            batch = texts[start : start + chunk]
            ev = judge.evaluate(batch)
            out.writelines(dumps(_score_row(judge, domain.measures, ev, j, text, archive)) + "\n" for j, text in enumerate(batch))
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()


def judge_command(args: list[str]) -> None:
    """``python -m qdaif judge (--input FILE | --labels FILE) [options] [KEY=VALUE ...]``."""
    from qdaif.domain import domain_from_config
    from qdaif.judge_eval import evaluate_file

    a = _options(args)
    cfg = compose_config(a.overrides)
    if a.labels is not None:  # the labelled file is checked before the model loads
        evaluate_file(domain=domain_from_config(cfg.domain), build_lm=lambda: build_models(cfg)[2], labels=a.labels,
                      output=a.output, resamples=a.bootstrap, seed=a.seed, positive=a.positive, split=a.split,
                      chunk=a.chunk, warn=lambda w: print(f"qdaif: warning: {w}", file=sys.stderr))
        return
    _score_texts(cfg, read_texts(a.input), chunk=a.chunk, output=a.output)
