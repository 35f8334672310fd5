"""Seed items from MTI-Bench-style JSON files (``domain.settings.items=FILE``).

A file holds a JSON list of instances (or an object of them keyed by id)::

    [{"id": "22-001", "context": "List: 4, 7, 9, 11",
      "instructions": ["Pick the prime numbers from the list.", "Add up the numbers from step 1."],
      "answers": ["7, 11", "18"],
      "dependent": true}]

- ``context``: a string (or an object / list of strings, joined by blank lines, as in
  MTI Bench where each sub-task may own a context part); an optional ``query`` (the
  task's preamble) goes before it.
- ``instructions``: a list of strings (or an object ``{"1": ..., "2": ...}``).
- ``answers``: the gold answers, one per instruction (numbers and lists are written out).
- ``dependent`` (optional): ``true`` (each step uses the one before, unless its wording
  names others), ``false`` (independent steps), one boolean per instruction, or one list
  of 1-based indices per instruction. Without it, dependencies are read from the
  instructions' wording (:func:`qdaif.plugins.multitask.parsing.dependencies`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qdaif.errors import ConfigError
from qdaif.plugins.multitask.parsing import dependencies

__all__ = ["read_items", "guess_type", "mti_prompt"]

_TYPE_WORDS = [
    ("sort", ("sort", "order", "arrange", "rank")),
    ("count", ("count", "how many", "number of")),
    ("arithmetic", ("compute", "calculate", "add ", "sum", "multiply", "subtract", "divide", "evaluate", "total", "product")),
    ("transform", ("translate", "rewrite", "summari", "paraphrase", "convert", "reverse")),
    ("generate", ("write a", "write an", "write one", "compose", "create", "generate", "invent")),
    ("classify", ("is the", "does the", "is it", "are the", "yes or no", "true or false", "classify", "label")),
    ("select", ("pick", "choose", "select", "which of")),
]


def guess_type(instruction: str) -> str:
    """A sub-task type for an imported instruction: its template's type, else one from its wording (``qa``)."""
    from qdaif.plugins.multitask.checkers import match_type

    typ = match_type(instruction)
    if typ and typ != "format":
        return typ
    low = " " + instruction.lower()
    for name, words in _TYPE_WORDS:
        if any(w in low for w in words):
            return name
    return typ or "qa"


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _ordered_values(value: Any) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value[k] for k in sorted(value, key=lambda k: (len(str(k)), str(k)))]
    return None


def _deps(dependent: Any, instructions: list[str], where: str) -> list[list[int]]:
    n = len(instructions)
    worded = [dependencies(t, i + 1) for i, t in enumerate(instructions)]
    if dependent is None:
        return worded
    if isinstance(dependent, bool):
        return [(w or ([i] if i > 0 else [])) if dependent else [] for i, w in enumerate(worded)]
    if isinstance(dependent, list) and len(dependent) == n:
        out = []
        for i, d in enumerate(dependent):
            if isinstance(d, bool):
                out.append((worded[i] or ([i] if i > 0 else [])) if d else [])
            elif isinstance(d, int) and not isinstance(d, bool):
                out.append([d] if 1 <= d <= i else [])
            elif isinstance(d, list) and all(isinstance(j, int) and not isinstance(j, bool) for j in d):
                bad = [j for j in d if not 1 <= j <= i]
                if bad:
                    raise ConfigError(f"{where}: 'dependent' of instruction {i + 1} names {bad[0]}, not an earlier instruction")
                out.append(sorted(set(d)))
            elif d is None:
                out.append([])
            else:
                raise ConfigError(f"{where}: 'dependent' entries must be booleans or lists of 1-based indices, got {d!r}")
        return out
    raise ConfigError(f"{where}: 'dependent' must be true/false or one entry per instruction ({n}), got {dependent!r}")


def read_items(path: str | Path, where: str = "domain.settings.items") -> list[dict[str, Any]]:
    """Reads an MTI-Bench-style JSON file into seed items (the shape of the shipped ``data/items.jsonl``).

    Args:
        path: The JSON file.
        where: Where the path was given (for error messages).

    Returns:
        One dict per instance: ``id``, ``context``, ``subtasks`` (``type``,
        ``instruction``, ``depends_on``, ``answer``).

    Raises:
        ConfigError: The file is missing or not valid JSON, or an instance lacks a
            context, instructions or answers, or has as many answers as instructions.
    """
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ConfigError(f"{where}: no such file {str(path)!r}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: {p.name} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {p.name} is not UTF-8 text") from None
    if isinstance(data, dict):
        data = [{"id": k, **v} if isinstance(v, dict) else v for k, v in data.items()]
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where}: {p.name} must hold a non-empty JSON list of instances")
    out = []
    for n, inst in enumerate(data, 1):
        at = f"{where}: instance {n}" + (f" (id {inst.get('id')!r})" if isinstance(inst, dict) and "id" in inst else "")
        if not isinstance(inst, dict):
            raise ConfigError(f"{at} is not a JSON object")
        for key in ("context", "instructions", "answers"):
            if key not in inst:
                raise ConfigError(f"{at}: missing {key!r}")
        ctx = inst["context"]
        parts = _ordered_values(ctx)
        context = "\n\n".join(_text(c) for c in parts) if parts is not None else _text(ctx)
        if inst.get("query"):
            context = _text(inst["query"]) + "\n\n" + context
        instructions = _ordered_values(inst["instructions"])
        answers = _ordered_values(inst["answers"])
        if not instructions or not all(isinstance(t, str) and t.strip() for t in instructions):
            raise ConfigError(f"{at}: 'instructions' must be a non-empty list of strings")
        if answers is None:
            raise ConfigError(f"{at}: 'answers' must be a list")
        if len(answers) != len(instructions):
            raise ConfigError(f"{at}: {len(instructions)} instructions but {len(answers)} answers")
        if not context.strip():
            raise ConfigError(f"{at}: empty 'context'")
        deps = _deps(inst.get("dependent"), [t.strip() for t in instructions], at)
        subtasks = [{"type": guess_type(t), "instruction": t.strip(), "depends_on": d, "answer": _text(a)}
                    for t, a, d in zip(instructions, answers, deps)]
        out.append({"id": str(inst.get("id", n)), "context": context, "subtasks": subtasks})
    return out


def mti_prompt(instance: dict[str, Any]) -> str:
    """An instance written out as MTI Bench writes its multi-task prompts: preamble, ``#N:`` lines, then the context."""
    ctx = instance["context"]
    parts = _ordered_values(ctx)
    context = "\n\n".join(_text(c) for c in parts) if parts is not None else _text(ctx)
    instructions = _ordered_values(instance["instructions"]) or []
    head = _text(instance.get("query") or "Answer each instruction. Put the answer to #N inside <taskN></taskN> tags.")
    return head + "\n" + "\n".join(f"#{i}: {t}" for i, t in enumerate(instructions, 1)) + "\n\n" + context
