"""Exact references for computable sub-tasks, answer extraction and checking.

A computable sub-task (arithmetic, sort, select, count, format) has a reference only
when its instruction follows one of the templates below; the reference is computed
from the genome (the instruction, the context, the references of the sub-tasks it
uses), never taken from an LM. Templates, with ``L`` a comma-separated list and
``task j`` an earlier sub-task whose reference is a number (arithmetic) or a list:

- arithmetic: ``Compute 3 + 4 * 2.`` / ``Compute x * 3 - 1, where x is your answer to task j.``
  (integers, ``+ - *`` and parentheses);
- sort: ``Sort the numbers L from smallest to largest.`` (or ``from largest to
  smallest``), ``Sort the words L in alphabetical order.`` (or ``in reverse
  alphabetical order``); ``L`` may be ``in your answer to task j``;
- select: ``From the list L, pick the largest number.`` (``the smallest number``, ``the
  even numbers``, ``the odd numbers``, ``the numbers greater than N``, ``the longest
  word``, ``the shortest word``, ``the words that start with 'b'``); or ``From your
  answer to task j, pick ...``;
- count: ``Count the words in the context.``, ``Count how many times the letter 'r'
  appears in "berry".``, ``Count the items in the list L.`` (``the even numbers``,
  ``the odd numbers``), ``Count the items in your answer to task j.``;
- format: any instruction with constraint phrases: ``using only lowercase letters``,
  ``in capital letters``, ``in exactly three words``, ``in at most 8 words``, ``ending
  with a question mark``, ``including the word 'rain'``, ``with nothing outside the task
  tags``. Only the constraints are checked.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from qdaif.plugins.multitask.genome import Genome, SubTask

__all__ = ["Reference", "reference_of", "references", "match_type", "extract_answers", "check", "NUMBER_WORDS"]

NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                "ten": 10, "eleven": 11, "twelve": 12}
_DEP = r"your answer to task (?P<dep>\d+)"
_END = r"\s*[.!?]?"
_ARITH = re.compile(rf"(?:compute|calculate|work out|evaluate) (?P<expr>[-+*() 0-9x]+?)(?:,? where x is {_DEP})?{_END}", re.I)
_SORT = re.compile(r"sort the (?:numbers|words|items) (?P<items>.+?) (?P<order>from smallest to largest|from largest to "
                   r"smallest|in alphabetical order|in reverse alphabetical order)" + _END, re.I)
_SELECT = re.compile(rf"from (?:the list (?P<items>.+?)|{_DEP}), (?:pick|choose|select) (?P<what>.+?){_END}", re.I)
_COUNT_CONTEXT = re.compile(r"count the words in the context" + _END, re.I)
_COUNT_LETTER = re.compile(r"count how many times the letter '(?P<letter>[a-z])' appears in (?:the word )?"
                           r"\"(?P<word>[^\"]+)\"" + _END, re.I)
_COUNT_LIST = re.compile(rf"count the (?P<what>items|numbers|words|even numbers|odd numbers) in (?:the list (?P<items>.+?)|{_DEP}){_END}",
                         re.I)
_DEP_ITEMS = re.compile(rf"(?:in|of|from) {_DEP}", re.I)
_INT = re.compile(r"[-+]?\d+")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
_NUM_WORD = r"(?P<n>\d+|" + "|".join(NUMBER_WORDS) + r")"
_CONSTRAINTS = [
    ("lowercase", re.compile(r"\b(?:using only lowercase letters|in lowercase(?: letters)?|all lowercase)\b", re.I)),
    ("uppercase", re.compile(r"\b(?:in capital letters|in uppercase(?: letters)?|in all caps|all capital letters)\b", re.I)),
    ("words", re.compile(rf"\bin exactly {_NUM_WORD} words?\b", re.I)),
    ("max_words", re.compile(rf"\bin at most {_NUM_WORD} words?\b", re.I)),
    ("question", re.compile(r"\bending with a question mark\b", re.I)),
    ("include", re.compile(r"\bincluding the word '(?P<w>[A-Za-z][A-Za-z'-]*)'", re.I)),
    ("only_tags", re.compile(r"\bwith nothing outside the task tags\b", re.I)),
]


@dataclasses.dataclass(frozen=True)
class Reference:
    """What a correct answer is.

    Attributes:
        value: An ``int``, a word, or a tuple of list items (ints or words).
        match: ``exact`` (a number or a word), ``ordered`` (a list in this order),
            ``unordered`` (a list in any order) or ``format`` (only ``constraints`` count).
        constraints: For ``format``: ``(name, argument)`` pairs, e.g. ``("words", 3)``.
    """

    value: Any
    match: str
    constraints: tuple[tuple[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        if self.match == "format":
            return {"match": "format", "constraints": [list(c) for c in self.constraints]}
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"match": self.match, "value": value}

    def display(self) -> str:
        """The reference answer as text (a list joined with ', ')."""
        if self.match == "format":
            return ""
        return ", ".join(str(v) for v in self.value) if isinstance(self.value, tuple) else str(self.value)


def _eval_int(expr: str, x: int | None) -> int | None:
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return None

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name) and node.id == "x" and x is not None:
            return x
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            out = a + b if isinstance(node.op, ast.Add) else a - b if isinstance(node.op, ast.Sub) else a * b
            if abs(out) > 10**12:
                raise ValueError("too large")
            return out
        raise ValueError("not allowed")

    try:
        return ev(tree)
    except (ValueError, RecursionError):
        return None


def _items(text: str) -> tuple | None:
    """A comma-separated list (with an optional 'and'): all ints, or all single words; else ``None``."""
    parts = [p.strip().strip(".") for p in re.split(r",|\band\b", text) if p.strip().strip(".")]
    if len(parts) < 2:
        return None
    if all(_INT.fullmatch(p) for p in parts):
        return tuple(int(p) for p in parts)
    if all(re.fullmatch(r"[A-Za-z][A-Za-z'-]*", p) for p in parts):
        return tuple(p.lower() for p in parts)
    return None


def _list_source(items: str | None, dep: str | None, refs: Sequence[Reference | None]) -> tuple | None:
    if dep is not None:
        j = int(dep)
        if not 1 <= j <= len(refs) or refs[j - 1] is None:
            return None
        ref = refs[j - 1]
        return ref.value if isinstance(ref.value, tuple) and ref.match in ("ordered", "unordered") and ref.value else None
    if items is None:
        return None
    m = _DEP_ITEMS.fullmatch(items.strip())
    if m:
        return _list_source(None, m.group("dep"), refs)
    return _items(items)


def _numbers(v: tuple | None) -> tuple[int, ...] | None:
    return v if v and all(isinstance(x, int) for x in v) else None


def _words(v: tuple | None) -> tuple[str, ...] | None:
    return v if v and all(isinstance(x, str) for x in v) else None


def _select(values: tuple, what: str) -> Reference | None:
    what = what.strip().lower()
    nums, words = _numbers(values), _words(values)
    if nums:
        if what == "the largest number":
            return Reference(max(nums), "exact")
        if what == "the smallest number":
            return Reference(min(nums), "exact")
        picked = None
        if what == "the even numbers":
            picked = tuple(v for v in nums if v % 2 == 0)
        elif what == "the odd numbers":
            picked = tuple(v for v in nums if v % 2)
        else:
            m = re.fullmatch(r"the numbers (?:greater|larger|bigger) than (-?\d+)", what)
            if m:
                picked = tuple(v for v in nums if v > int(m.group(1)))
        if picked:
            return Reference(picked[0], "exact") if len(picked) == 1 else Reference(picked, "unordered")
        return None
    if words:
        if what in ("the longest word", "the shortest word"):
            best = (max if what == "the longest word" else min)(len(w) for w in words)
            hits = [w for w in words if len(w) == best]
            return Reference(hits[0], "exact") if len(set(hits)) == 1 else None
        m = re.fullmatch(r"the words (?:that start|starting) with (?:the letter )?'?([a-z])'?", what)
        if m:
            picked = tuple(w for w in words if w.startswith(m.group(1)))
            if picked:
                return Reference(picked[0], "exact") if len(picked) == 1 else Reference(picked, "unordered")
    return None


def _format(instruction: str) -> Reference | None:
    found = []
    for name, rx in _CONSTRAINTS:
        for m in rx.finditer(instruction):
            arg: Any = None
            if name in ("words", "max_words"):
                n = m.group("n").lower()
                arg = NUMBER_WORDS.get(n) or int(n)
            elif name == "include":
                arg = m.group("w").lower()
            found.append((name, arg))
    names = {n for n, _ in found}
    if not found or {"lowercase", "uppercase"} <= names:
        return None  # nothing to check, or a contradiction
    return Reference(None, "format", tuple(found))


def reference_of(st: SubTask, context: str, refs: Sequence[Reference | None]) -> Reference | None:
    """The reference of one sub-task given the references of the earlier ones, or ``None`` (judged).

    Args:
        st: The sub-task.
        context: The genome's shared context.
        refs: References of the sub-tasks before it (``None`` where not computable).
    """
    text = st.instruction
    if st.type == "arithmetic":
        m = _ARITH.fullmatch(text)
        if not m or not re.search(r"\d|x", m.group("expr")):
            return None
        x = None
        if "x" in m.group("expr"):
            dep = m.group("dep")
            ref = refs[int(dep) - 1] if dep and 1 <= int(dep) <= len(refs) else None
            if ref is None or ref.match != "exact" or not isinstance(ref.value, int):
                return None
            x = ref.value
        v = _eval_int(m.group("expr"), x)
        return None if v is None else Reference(v, "exact")
    if st.type == "sort":
        m = _SORT.fullmatch(text)
        if not m:
            return None
        values = _list_source(m.group("items"), None, refs)
        order = m.group("order").lower()
        if "alphabetical" in order:
            w = _words(values)
            return None if w is None else Reference(tuple(sorted(w, reverse="reverse" in order)), "ordered")
        n = _numbers(values)
        return None if n is None else Reference(tuple(sorted(n, reverse=order.startswith("from largest"))), "ordered")
    if st.type == "select":
        m = _SELECT.fullmatch(text)
        if not m:
            return None
        values = _list_source(m.group("items"), m.group("dep"), refs)
        return None if values is None else _select(values, m.group("what"))
    if st.type == "count":
        if _COUNT_CONTEXT.fullmatch(text):
            return Reference(len(context.split()), "exact")
        m = _COUNT_LETTER.fullmatch(text)
        if m:
            return Reference(m.group("word").lower().count(m.group("letter").lower()), "exact")
        m = _COUNT_LIST.fullmatch(text)
        if not m:
            return None
        values = _list_source(m.group("items"), m.group("dep"), refs)
        what = m.group("what").lower()
        if values is None:
            return None
        if what in ("even numbers", "odd numbers"):
            n = _numbers(values)
            return None if n is None else Reference(sum(1 for v in n if (v % 2 == 0) == (what == "even numbers")), "exact")
        return Reference(len(values), "exact")
    if st.type == "format":
        return _format(text)
    return None


def references(genome: Genome) -> list[Reference | None]:
    """References of every sub-task of ``genome``, in order (``None``: judged by an LM)."""
    refs: list[Reference | None] = []
    for st in genome.subtasks:
        refs.append(reference_of(st, genome.context, refs))
    return refs


def match_type(instruction: str) -> str | None:
    """The computable type whose template an instruction follows (for untyped LM-written lines)."""
    for typ in ("arithmetic", "sort", "select", "count"):
        if reference_of(SubTask(typ, instruction), "", []) is not None:
            return typ
    if _ARITH.fullmatch(instruction) or _SORT.fullmatch(instruction) or _SELECT.fullmatch(instruction):
        return "arithmetic" if _ARITH.fullmatch(instruction) else "sort" if _SORT.fullmatch(instruction) else "select"
    if _COUNT_LIST.fullmatch(instruction) or _COUNT_CONTEXT.fullmatch(instruction):
        return "count"
    return "format" if _format(instruction) is not None else None


def extract_answers(reply: str, k: int) -> list[str | None]:
    """The text inside ``<taskN>...</taskN>`` for N = 1..k (``None`` where the tags are missing).

    Whitespace inside the tags is tolerated, and MTI's closing form ``<taskN/>`` too; the
    first complete pair counts.
    """
    out = []
    for i in range(1, k + 1):
        m = re.search(rf"<\s*task\s*{i}\s*>(.*?)<\s*(?:/\s*task\s*{i}|task\s*{i}\s*/)\s*>", reply, re.I | re.S)
        out.append(m.group(1).strip() if m else None)
    return out


def _strip_tags(reply: str) -> str:
    return re.sub(r"<\s*task\s*(\d+)\s*>.*?<\s*(?:/\s*task\s*\1|task\s*\1\s*/)\s*>", " ", reply, flags=re.I | re.S)


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().strip("\"'`").strip().rstrip(".!").strip().lower()


def _answer_items(answer: str) -> list[str]:
    a = _norm(answer).strip("[]()")
    parts = re.split(r",|;|\band\b", a) if re.search(r",|;|\band\b", a) else a.split()
    return [_norm(p) for p in parts if _norm(p)]


def _same(item: str, ref: Any) -> bool:
    if isinstance(ref, int):
        return _INT.fullmatch(item.replace(" ", "")) is not None and int(item.replace(" ", "")) == ref
    return item == str(ref).lower()


def check(ref: Reference, answer: str | None, reply: str = "") -> bool:
    """Whether ``answer`` (the text inside the sub-task's tags) meets ``ref``.

    Args:
        ref: The sub-task's reference.
        answer: The extracted answer; ``None`` (missing tags) never passes.
        reply: The whole reply (for the "nothing outside the task tags" constraint).
    """
    if answer is None:
        return False
    if ref.match == "exact":
        a = _norm(answer)
        if isinstance(ref.value, int):
            a = re.sub(r"\.0+$", "", a.replace(",", ""))
        return _same(a, ref.value)
    if ref.match in ("ordered", "unordered"):
        items = _answer_items(answer)
        if len(items) != len(ref.value):
            return False
        if ref.match == "ordered":
            return all(_same(a, r) for a, r in zip(items, ref.value))
        left = list(ref.value)
        for a in items:
            hit = next((r for r in left if _same(a, r)), None)
            if hit is None:
                return False
            left.remove(hit)
        return True
    ok = True
    text = answer.strip()
    for name, arg in ref.constraints:
        if name == "lowercase":
            ok &= bool(re.search(r"[a-z]", text)) and text == text.lower()
        elif name == "uppercase":
            ok &= bool(re.search(r"[A-Z]", text)) and text == text.upper()
        elif name == "words":
            ok &= len(_TOKEN.findall(text)) == arg
        elif name == "max_words":
            ok &= 0 < len(_TOKEN.findall(text)) <= arg
        elif name == "question":
            ok &= text.endswith("?")
        elif name == "include":
            ok &= re.search(rf"\b{re.escape(arg)}\b", text, re.I) is not None
        elif name == "only_tags":
            ok &= not _strip_tags(reply).strip()
    return bool(ok)
