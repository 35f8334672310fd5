"""The multi-task prompt genome: a shared context and 1-5 typed sub-tasks, and its text form.

A genome renders to the text the archive stores and the target model answers::

    Context: Mia bought 4 pens and 3 notebooks for her new class.
    1. [count] Count the words in the context. Answer in <task1></task1> tags.
    2. [arithmetic; uses 1] Compute x - 2, where x is your answer to task 1. Answer in <task2></task2> tags.

:func:`parse_text` reads such text back (tolerantly, for LM-written text) and
:func:`repair` makes it canonical: numbering 1..k, one tag clause per line, no empty
sub-tasks, at most :data:`MAX_SUBTASKS`, dependencies only on earlier sub-tasks. For a
canonical genome ``parse_text(g.render()) == g``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from qdaif.plugins.multitask.parsing import dependencies, explicit_refs, parse_prompt, rewrite_refs

__all__ = ["TYPES", "COMPUTABLE_TYPES", "JUDGED_TYPES", "MAX_SUBTASKS", "SubTask", "Genome", "RawTask", "parse_text",
           "repair", "normalize_type", "tag_clause", "LMX_HEADER"]

#: Sub-task types. The first five have references computed by code when their instruction
#: follows a known template (see :mod:`qdaif.plugins.multitask.checkers`); the others are judged.
COMPUTABLE_TYPES = ("arithmetic", "sort", "select", "count", "format")
JUDGED_TYPES = ("qa", "classify", "transform", "generate")
TYPES = COMPUTABLE_TYPES + JUDGED_TYPES
MAX_SUBTASKS = 5
MAX_INSTRUCTION_CHARS = 1000
#: What precedes each genome in few-shot (LMX) prompts.
LMX_HEADER = "Multi-task prompt:"

_ALIASES = {
    "math": "arithmetic", "compute": "arithmetic", "calculation": "arithmetic", "calculate": "arithmetic",
    "order": "sort", "reorder": "sort", "sorting": "sort", "ordering": "sort",
    "choose": "select", "pick": "select", "selection": "select", "filter": "select",
    "counting": "count", "constraint": "format", "formatting": "format",
    "extract": "qa", "extraction": "qa", "question": "qa", "answer": "qa", "lookup": "qa",
    "label": "classify", "judge": "classify", "classification": "classify", "sentiment": "classify",
    "rewrite": "transform", "translate": "transform", "summarise": "transform", "summarize": "transform",
    "paraphrase": "transform", "write": "generate", "title": "generate", "create": "generate", "generation": "generate",
}

_TAG = re.compile(r"<\s*/?\s*task\s*\d*\s*/?\s*>?", re.I)
_TRAILING_CLAUSE = re.compile(r"\s*\b(?:answer|reply|respond|write|put|give|place)\b[^.?!]*$", re.I)
_WS = re.compile(r"\s+")


def tag_clause(i: int) -> str:
    """The canonical clause asking for sub-task ``i``'s answer (1-based) inside its tags."""
    return f"Answer in <task{i}></task{i}> tags."


def normalize_type(name: str) -> str | None:
    """Maps a type name (or a common synonym) to one of :data:`TYPES`; ``None`` if unknown."""
    key = _WS.sub(" ", str(name)).strip().lower()
    if key in TYPES:
        return key
    return _ALIASES.get(key)


@dataclasses.dataclass(frozen=True)
class SubTask:
    """One instruction of a multi-task prompt.

    Attributes:
        type: One of :data:`TYPES`.
        instruction: The instruction, one line, without its tag clause.
        depends_on: 1-based indices of earlier sub-tasks whose answers it uses, sorted.
    """

    type: str
    instruction: str
    depends_on: tuple[int, ...] = ()
    answer: str | None = None  # a gold answer (seed items, imported benchmarks); not part of the text

    def to_dict(self) -> dict[str, Any]:
        d = {"type": self.type, "instruction": self.instruction, "depends_on": list(self.depends_on)}
        if self.answer is not None:
            d["answer"] = self.answer
        return d


@dataclasses.dataclass(frozen=True)
class Genome:
    """A structured multi-task prompt: a shared context and 1..5 sub-tasks."""

    context: str
    subtasks: tuple[SubTask, ...]

    @property
    def k(self) -> int:
        """Number of sub-tasks."""
        return len(self.subtasks)

    def depths(self) -> list[int]:
        """Per sub-task: the length of the longest dependency chain ending there (0: independent)."""
        out: list[int] = []
        for st in self.subtasks:
            out.append(1 + max(out[j - 1] for j in st.depends_on) if st.depends_on else 0)
        return out

    @property
    def depth(self) -> int:
        """Dependency depth: the longest chain in the ``depends_on`` graph, in edges (0..k-1)."""
        return max(self.depths(), default=0)

    def render(self) -> str:
        """The text form (what the archive stores and the target model answers)."""
        lines = [f"Context: {self.context}"]  # a context may span lines
        for i, st in enumerate(self.subtasks, 1):
            uses = f"; uses {', '.join(str(j) for j in st.depends_on)}" if st.depends_on else ""
            lines.append(f"{i}. [{st.type}{uses}] {st.instruction} {tag_clause(i)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"context": self.context, "subtasks": [s.to_dict() for s in self.subtasks]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Genome":
        """Builds a genome from :meth:`to_dict`'s form, without repairing it."""
        return cls(context=str(d["context"]), subtasks=tuple(
            SubTask(type=str(s["type"]), instruction=str(s["instruction"]), depends_on=tuple(int(j) for j in s.get("depends_on", ())),
                    answer=None if s.get("answer") is None else str(s["answer"]))
            for s in d["subtasks"]))


@dataclasses.dataclass
class RawTask:
    """A sub-task before repair: its number as written, type name, dependencies as written."""

    num: int
    type: str
    instruction: str
    depends_on: tuple[int, ...] = ()
    answer: str | None = None


def clean_context(text: str) -> str:
    """No tags, no leading ``Context:``; lines kept (spaces collapsed, at most one blank line in a row).

    Any length is kept: whether a prompt fits the model is the plugin's check
    (``settings.max_context_tokens``).
    """
    text = _TAG.sub(" ", str(text).replace("\r", "")).replace("###", " ").replace("<", " ").replace(">", " ")
    lines = [re.sub(r"[ \t\f\v]+", " ", ln).strip() for ln in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    if text.lower().startswith(LMX_HEADER.lower()):
        text = text[len(LMX_HEADER):].strip()
    if text.lower().startswith("context:"):
        text = text[len("context:"):].strip()
    return text


def clean_instruction(text: str) -> str:
    """Strips the tag clause, tags and stray markup; one line ending in '.', '?' or '!' ('' if unusable)."""
    text = _WS.sub(" ", str(text)).strip()
    m = _TAG.search(text)
    if m:
        text = _TRAILING_CLAUSE.sub("", text[: m.start()])
    text = text.replace("###", " ").replace("<", " ").replace(">", " ").replace("[", " ").replace("]", " ")
    text = _WS.sub(" ", text).strip().strip(",;:").strip()
    if not re.search(r"[A-Za-z]", text) or len(text) > MAX_INSTRUCTION_CHARS:
        return ""
    if text[-1] not in ".?!":
        text += "."
    return text


def mentions(instruction: str) -> list[int]:
    """Task numbers an instruction refers to ("your answer to task 2", "step #2", "the answer to 2")."""
    return [n for _, _, n in explicit_refs(instruction)]


def _infer_type(instruction: str) -> str:
    from qdaif.plugins.multitask.checkers import match_type

    return match_type(instruction) or "generate"


def repair(context: str, tasks: Sequence[RawTask], limit: int = MAX_SUBTASKS) -> Genome | None:
    """Makes a canonical genome from sub-tasks as written, or ``None`` when nothing usable is left.

    Rules, in order: clean the context (required) and each instruction; drop empty or
    duplicate sub-tasks; map unknown type names to a synonym or to the type the
    instruction's template implies (else ``generate``); drop sub-tasks whose
    instruction mentions a task that is missing or not earlier (repeatedly, as drops
    cascade); keep the first ``limit``; renumber 1..k, rewriting "task N" mentions and
    dependencies to the new numbers, adding every mentioned task (and the previous one
    for "the previous answer") to ``depends_on`` and dropping dependencies on later or
    missing tasks.

    Args:
        context: The shared context.
        tasks: Sub-tasks with the numbers their text uses (duplicates: the first counts).
        limit: The most sub-tasks kept (the archive's grid holds 1..5).
    """
    context = clean_context(context)
    if not context:
        return None
    items: list[RawTask] = []
    seen: set[str] = set()
    for t in tasks:
        instr = clean_instruction(t.instruction)
        if not instr or instr.lower() in seen:
            continue
        seen.add(instr.lower())
        typ = normalize_type(t.type) or _infer_type(instr)
        items.append(RawTask(num=int(t.num), type=typ, instruction=instr, depends_on=tuple(int(j) for j in t.depends_on),
                             answer=t.answer))
    changed = True
    while changed:
        changed = False
        pos: dict[int, int] = {}
        for idx, it in enumerate(items):
            pos.setdefault(it.num, idx)
        kept = []
        for idx, it in enumerate(items):
            if all(m in pos and pos[m] < idx for m in mentions(it.instruction)):
                kept.append(it)
            else:
                changed = True
        items = kept
    items = items[:limit]
    if not items:
        return None
    pos = {}
    for idx, it in enumerate(items):
        pos.setdefault(it.num, idx)
    out = []
    mapping = {n: i + 1 for n, i in pos.items()}
    for idx, it in enumerate(items):
        instr = rewrite_refs(it.instruction, mapping)
        deps = {pos[d] + 1 for d in (*it.depends_on, *mentions(it.instruction)) if d in pos and pos[d] < idx}
        deps |= set(dependencies(instr, idx + 1))  # "the previous answer", ordinals
        out.append(SubTask(type=it.type, instruction=instr, depends_on=tuple(sorted(deps)), answer=it.answer))
    return Genome(context=context, subtasks=tuple(out))


def parse_header(header: str | None) -> tuple[str, tuple[int, ...]]:
    """Reads ``"arithmetic; uses 1, 2"`` into ("arithmetic", (1, 2)); an empty type if none is given."""
    if not header:
        return "", ()
    name = re.split(r"[;,]|\buses\b|\bafter\b|\bdepends\b", header, maxsplit=1)[0]
    deps = tuple(int(x) for x in re.findall(r"\d+", header[len(name):]))
    return name.strip(), deps


def parse_text(text: str, limit: int = MAX_SUBTASKS) -> Genome | None:
    """Reads a rendered, LM-written or user-written multi-task prompt and repairs it.

    The instruction list is found by :func:`qdaif.plugins.multitask.parsing.parse_prompt`
    (canonical ``N. [type; uses j]`` lines win; a numbered list inside the context does
    not become sub-tasks); the rest is the context.

    Args:
        text: The prompt.
        limit: The most sub-tasks kept.

    Returns:
        The canonical genome, or ``None`` without a context or a usable sub-task.
    """
    text = str(text).replace("\r", "").strip()
    if text.lower().startswith(LMX_HEADER.lower()):
        text = text[len(LMX_HEADER):]
    parsed = parse_prompt(text)
    if parsed is None:
        return None
    tasks = []
    for num, body in zip(parsed.numbers, parsed.instructions):
        header = None
        m = re.match(r"^\[([^\]]*)\]\s*(.*)$", body)
        if m:
            header, body = m.group(1), m.group(2)
        typ, deps = parse_header(header)
        tasks.append(RawTask(num=num, type=typ, instruction=body, depends_on=deps))
    return repair(parsed.context, tasks, limit=limit)
