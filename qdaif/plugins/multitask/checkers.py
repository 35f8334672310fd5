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

__all__ = ["Reference", "reference_of", "references", "match_type", "extract_answers", "check", "NUMBER_WORDS",
           "gold_reference", "matches_gold", "parse_number", "list_items"]

NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                "ten": 10, "eleven": 11, "twelve": 12}
_DEP = r"your answer to task (?P<dep>\d+)"
_END = r"\s*[.!?]?"
_ARITH = re.compile(rf"(?:compute|calculate|work out|evaluate) (?P<expr>[-+*() 0-9x]+?)(?:,? where x is {_DEP})?{_END}", re.I)
_SORT = re.compile(r"sort the (?:numbers|words|items) (?P<items>.+?) (?P<order>from smallest to largest|from largest to "
                   r"smallest|in alphabetical order|in reverse alphabetical order)" + _END, re.I)
_SELECT = re.compile(rf"from (?:the list (?P<items>.+?)|{_DEP}|(?P<ctx>the numbers in the context)), (?:pick|choose|select) "
                     rf"(?P<what>.+?){_END}", re.I)
_COUNT_CONTEXT = re.compile(r"count the words in the context" + _END, re.I)
_COUNT_LETTER = re.compile(r"count how many times the letter '(?P<letter>[a-z])' appears in (?:the word )?"
                           r"\"(?P<word>[^\"]+)\"" + _END, re.I)
_COUNT_LIST = re.compile(rf"count the (?P<what>items|numbers|words|even numbers|odd numbers) in (?:the list (?P<items>.+?)|{_DEP}){_END}",
                         re.I)
_DEP_ITEMS = re.compile(rf"(?:in|of|from) {_DEP}", re.I)
_CTX_NUMS = re.compile(r"(?:the numbers )?(?:in|of|from) the context|the numbers (?:in|of) the context", re.I)
_YN = r"\?\s*answer (?:with )?(?:only )?(?:yes or no|'yes' or 'no')"
# Lookups and extraction in the context (qa), yes/no facts (classify), exact rewrites (transform).
_CTX_TEMPLATES = [
    ("word_n", re.compile(r"what is word number (?P<n>\d+) of the context\??", re.I)),
    ("word_pos", re.compile(r"what is the (?P<pos>first|last) word of the context\??", re.I)),
    ("word_after", re.compile(r"which word comes (?:right |directly )?after '(?P<w>[A-Za-z][A-Za-z'-]*)' in the context\??", re.I)),
    ("num_pos", re.compile(r"what is the (?P<pos>first|last|largest|smallest) number (?:mentioned )?in the context\??", re.I)),
    ("num_list", re.compile(r"list the numbers in the context in the order they appear\.?", re.I)),
    ("num_sum", re.compile(r"add up all the numbers in the context\.?", re.I)),
    ("num_count", re.compile(r"how many numbers appear in the context\??", re.I)),
    ("sent_count", re.compile(r"how many sentences does the context have\??", re.I)),
    ("has_word", re.compile(rf"does the context (?:contain|mention|include) the word '(?P<w>[A-Za-z][A-Za-z'-]*)'{_YN}\.?", re.I)),
    ("has_num", re.compile(rf"does the context mention the number (?P<n>\d+){_YN}\.?", re.I)),
    ("more_words", re.compile(rf"does the context have more than (?P<n>\d+) words{_YN}\.?", re.I)),
    ("dep_parity", re.compile(rf"is {_DEP} an? (?P<what>even|odd) number{_YN}\.?", re.I)),
    ("dep_greater", re.compile(rf"is {_DEP} greater than (?P<n>-?\d+){_YN}\.?", re.I)),
    ("backwards", re.compile(rf"write (?:the word '(?P<w>[A-Za-z]+)'|{_DEP}) backwards\.?", re.I)),
    ("initials", re.compile(rf"write the first letter of each (?:word|item) in (?:the list (?P<items>.+?)|{_DEP}) as one word\.?", re.I)),
    ("reverse", re.compile(rf"reverse the order of the (?:items|words|numbers) in (?:the list (?P<items>.+?)|{_DEP})\.?", re.I)),
    ("word_caps", re.compile(r"write the (?P<pos>first|last) word of the context in capital letters\.?", re.I)),
]
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
            ``unordered`` (a list in any order), ``format`` (only ``constraints`` count) or
        ``gold`` (a gold answer string, compared after normalisation: :func:`matches_gold`).
        constraints: ``(name, argument)`` pairs, e.g. ``("words", 3)``; checked for
            ``format``, and on top of the value for the other kinds.
    """

    value: Any
    match: str
    constraints: tuple[tuple[str, Any], ...] = ()
    ordered: bool = True  # for ``gold`` lists
    free: bool = False  # for ``gold``: a free-form request, where any answer meeting the constraints passes

    def to_json(self) -> dict[str, Any]:
        if self.match == "format":
            return {"match": "format", "constraints": [list(c) for c in self.constraints]}
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        out: dict[str, Any] = {"match": self.match, "value": value}
        if self.constraints:
            out["constraints"] = [list(c) for c in self.constraints]
        return out

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


def _context_numbers(context: str) -> tuple[int, ...]:
    return tuple(int(v.replace(",", "")) for v in re.findall(r"(?<![\w.])-?\d+(?:,\d{3})*(?![\w.]\d)", context))


def _context_words(context: str) -> list[str]:
    return [w.strip("'-") for w in re.findall(r"[A-Za-z0-9][A-Za-z0-9'-]*", context)]


def _list_source(items: str | None, dep: str | None, refs: Sequence[Reference | None], context: str = "") -> tuple | None:
    if dep is not None:
        j = int(dep)
        if not 1 <= j <= len(refs) or refs[j - 1] is None:
            return None
        return _dep_list(refs[j - 1])
    if items is None:
        return None
    if _CTX_NUMS.fullmatch(items.strip()):
        return _context_numbers(context) if len(_context_numbers(context)) >= 2 else None
    m = _DEP_ITEMS.fullmatch(items.strip())
    if m:
        return _list_source(None, m.group("dep"), refs, context)
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


def _dep_int(ref: Reference | None) -> int | None:
    """An earlier sub-task's answer as an integer (for "x is your answer to task j"), if it is one."""
    if ref is None:
        return None
    if ref.match == "exact" and isinstance(ref.value, int):
        return ref.value
    if ref.match == "gold":
        v = parse_number(str(ref.value))
        return int(v) if v is not None and float(v).is_integer() else None
    return None


def _dep_list(ref: Reference | None) -> tuple | None:
    """An earlier sub-task's answer as a list of ints or words, if it is one."""
    if ref is None:
        return None
    if ref.match in ("ordered", "unordered") and isinstance(ref.value, tuple) and ref.value:
        return ref.value
    if ref.match == "gold":
        items = list_items(str(ref.value))
        return _items(", ".join(items)) if len(items) >= 2 else None
    return None


def _typed_reference(typ: str, text: str, context: str, refs: Sequence[Reference | None]) -> Reference | None:
    """The reference from the templates of one computable type (see the module docstring)."""
    if typ == "arithmetic":
        m = _ARITH.fullmatch(text)
        if not m or not re.search(r"\d|x", m.group("expr")):
            return None
        x = None
        if "x" in m.group("expr"):
            dep = m.group("dep")
            x = _dep_int(refs[int(dep) - 1]) if dep and 1 <= int(dep) <= len(refs) else None
            if x is None:
                return None
        v = _eval_int(m.group("expr"), x)
        return None if v is None else Reference(v, "exact")
    if typ == "sort":
        m = _SORT.fullmatch(text)
        if not m:
            return None
        values = _list_source(m.group("items"), None, refs, context)
        order = m.group("order").lower()
        if "alphabetical" in order:
            w = _words(values)
            return None if w is None else Reference(tuple(sorted(w, reverse="reverse" in order)), "ordered")
        n = _numbers(values)
        return None if n is None else Reference(tuple(sorted(n, reverse=order.startswith("from largest"))), "ordered")
    if typ == "select":
        m = _SELECT.fullmatch(text)
        if not m:
            return None
        if m.group("ctx"):
            values = _context_numbers(context) if len(_context_numbers(context)) >= 2 else None
        else:
            values = _list_source(m.group("items"), m.group("dep"), refs, context)
        return None if values is None else _select(values, m.group("what"))
    if typ == "count":
        if _COUNT_CONTEXT.fullmatch(text):
            return Reference(len(context.split()), "exact")
        m = _COUNT_LETTER.fullmatch(text)
        if m:
            return Reference(m.group("word").lower().count(m.group("letter").lower()), "exact")
        m = _COUNT_LIST.fullmatch(text)
        if not m:
            return None
        values = _list_source(m.group("items"), m.group("dep"), refs, context)
        what = m.group("what").lower()
        if values is None:
            return None
        if what in ("even numbers", "odd numbers"):
            n = _numbers(values)
            return None if n is None else Reference(sum(1 for v in n if (v % 2 == 0) == (what == "even numbers")), "exact")
        return Reference(len(values), "exact")
    if typ == "format":
        return _format(text)
    return None


def _unique(values: Sequence[Any]) -> Any:
    return values[0] if len(values) == 1 else None


def _context_reference(name: str, m: re.Match, context: str, refs: Sequence[Reference | None]) -> Reference | None:
    """The reference of a context lookup, a yes/no fact or an exact rewrite (``_CTX_TEMPLATES``)."""
    words, nums = _context_words(context), _context_numbers(context)
    g = m.groupdict()
    dep = None
    if g.get("dep"):
        j = int(g["dep"])
        dep = refs[j - 1] if 1 <= j <= len(refs) else None
        if dep is None:
            return None
    yes = lambda b: Reference("yes" if b else "no", "exact")  # noqa: E731
    if name == "word_n":
        n = int(g["n"])
        return Reference(words[n - 1].lower(), "exact") if 1 <= n <= len(words) else None
    if name in ("word_pos", "word_caps"):
        if not words:
            return None
        w = words[0] if g["pos"].lower() == "first" else words[-1]
        return Reference(w.lower(), "exact", (("uppercase", None),) if name == "word_caps" else ())
    if name == "word_after":
        low = [w.lower() for w in words]
        hits = [low[i + 1] for i, w in enumerate(low[:-1]) if w == g["w"].lower()]
        return Reference(hits[0], "exact") if len(hits) == 1 else None
    if name == "num_pos":
        if not nums:
            return None
        pos = g["pos"].lower()
        return Reference({"first": nums[0], "last": nums[-1], "largest": max(nums), "smallest": min(nums)}[pos], "exact")
    if name == "num_list":
        return Reference(nums, "ordered") if len(nums) >= 2 else None
    if name == "num_sum":
        return Reference(sum(nums), "exact") if len(nums) >= 2 else None
    if name == "num_count":
        return Reference(len(nums), "exact")
    if name == "sent_count":
        n = len([x for x in re.split(r"(?<=[.!?])\s+", context.strip()) if re.search(r"[A-Za-z]", x)])
        return Reference(n, "exact") if n else None
    if name == "has_word":
        return yes(re.search(rf"\b{re.escape(g['w'])}\b", context, re.I) is not None)
    if name == "has_num":
        return yes(int(g["n"]) in nums)
    if name == "more_words":
        return yes(len(context.split()) > int(g["n"]))
    if name in ("dep_parity", "dep_greater"):
        x = _dep_int(dep)
        if x is None:
            return None
        return yes(x % 2 == 0) if name == "dep_parity" and g["what"].lower() == "even" else \
            yes(x % 2 == 1) if name == "dep_parity" else yes(x > int(g["n"]))
    if name == "backwards":
        word = g["w"] if g.get("w") else (str(dep.value) if dep is not None and dep.match in ("exact", "gold") else None)
        if not word or not re.fullmatch(r"[A-Za-z]+", word):
            return None
        return Reference(word.lower()[::-1], "exact")
    if name in ("initials", "reverse"):
        values = _dep_list(dep) if dep is not None else _list_source(g.get("items"), None, refs, context)
        if not values:
            return None
        if name == "initials":
            w = _words(values)
            return None if w is None else Reference("".join(x[0] for x in w), "exact")
        return Reference(tuple(reversed(values)), "ordered")
    return None


_FREE = re.compile(r"^\s*(?:please\s+)?(?:write (?:a|an|one|two|three|some)\b|describe|compose|create|generate|suggest|propose|"
                   r"invent|draft|summari[sz]e|ask|paraphrase|rephrase|give (?:a|an|one) (?:title|name|nickname|headline|example|"
                   r"slogan)|name a|make up|come up)\b", re.I)
_ORDERED = re.compile(r"\b(?:sort|order|arrange|rank|reverse|sequence|reorder|rearrange|chronolog|alphabet|ascending|"
                      r"descending|from (?:smallest|largest|lowest|highest|first|last))", re.I)


def gold_reference(answer: str, instruction: str = "") -> Reference:
    """A reference from a gold answer: compared by :func:`matches_gold`, plus the instruction's format constraints.

    Lists count in order when the instruction asks for an order (sort, arrange, rank...).
    A free-form request (write, describe, a title...) with format constraints passes
    any answer that meets them; otherwise the gold answer must match.
    """
    fmt = _format(instruction) if instruction else None
    constraints = fmt.constraints if fmt is not None else ()
    return Reference(str(answer), "gold", constraints, ordered=bool(_ORDERED.search(instruction)),
                     free=bool(constraints) and bool(_FREE.match(instruction)))


def reference_of(st: SubTask, context: str, refs: Sequence[Reference | None]) -> Reference | None:
    """The reference of one sub-task given the references of the earlier ones, or ``None`` (judged).

    A gold answer (``st.answer``) comes first; then the templates of the sub-task's own
    type, then those of the other types (a ``qa`` sub-task "Compute 3 + 4." is still
    arithmetic), then the context lookups, yes/no facts and exact rewrites, and last the
    format constraints alone.

    Args:
        st: The sub-task.
        context: The genome's shared context.
        refs: References of the sub-tasks before it (``None`` where not computable).
    """
    if st.answer is not None:
        return gold_reference(st.answer, st.instruction)
    text = st.instruction
    order = [st.type] + [t for t in ("arithmetic", "sort", "select", "count") if t != st.type]
    for typ in order:
        if typ == "format":
            continue
        ref = _typed_reference(typ, text, context, refs)
        if ref is not None:
            return ref
    for name, rx in _CTX_TEMPLATES:
        m = rx.fullmatch(text)
        if m:
            return _context_reference(name, m, context, refs)
    return _format(text)


def references(genome: Genome) -> list[Reference | None]:
    """References of every sub-task of ``genome``, in order (``None``: judged by an LM)."""
    refs: list[Reference | None] = []
    for st in genome.subtasks:
        refs.append(reference_of(st, genome.context, refs))
    return refs


_CTX_TYPE = {"word_n": "qa", "word_pos": "qa", "word_after": "qa", "num_pos": "qa", "num_list": "qa", "num_sum": "arithmetic",
             "num_count": "count", "sent_count": "count", "has_word": "classify", "has_num": "classify", "more_words": "classify",
             "dep_parity": "classify", "dep_greater": "classify", "backwards": "transform", "initials": "transform",
             "reverse": "transform", "word_caps": "transform"}


def match_type(instruction: str) -> str | None:
    """The type whose template an instruction follows (for untyped lines); ``None`` if it follows none."""
    for typ in ("arithmetic", "sort", "select", "count"):
        if _typed_reference(typ, instruction, "", []) is not None:
            return typ
    if _ARITH.fullmatch(instruction) or _SORT.fullmatch(instruction) or _SELECT.fullmatch(instruction):
        return "arithmetic" if _ARITH.fullmatch(instruction) else "sort" if _SORT.fullmatch(instruction) else "select"
    if _COUNT_LIST.fullmatch(instruction) or _COUNT_CONTEXT.fullmatch(instruction):
        return "count"
    for name, rx in _CTX_TEMPLATES:
        if rx.fullmatch(instruction):
            return _CTX_TYPE[name]
    return "format" if _format(instruction) is not None else None


_OPEN = r"<\s*task\s*{i}\s*>"
_CLOSE = r"<\s*(?:/\s*task\s*{i}|task\s*{i}\s*/)\s*>"


def extract_answers(reply: str, k: int) -> list[str | None]:
    """The text inside ``<taskN>...</taskN>`` for N = 1..k (``None`` where the tags are missing).

    Accepted: ``<taskN>a</taskN>``, MTI's ``<taskN>a<taskN/>``, whitespace and any case
    inside the tags, and (last resort) ``<taskN>a<taskN>`` or an unclosed ``<taskN>a``
    ending at the next tag or line break. The first complete pair counts. Answers may
    span lines.
    """
    out = []
    for i in range(1, k + 1):
        m = re.search(_OPEN.format(i=i) + r"(.*?)" + _CLOSE.format(i=i), reply, re.I | re.S)
        if m is None:
            m = re.search(_OPEN.format(i=i) + r"(.*?)" + _OPEN.format(i=i), reply, re.I | re.S)
        if m is None:
            m = re.search(_OPEN.format(i=i) + r"([^<\n]*)", reply, re.I)
            if m is not None and not m.group(1).strip():
                m = None
        out.append(m.group(1).strip() if m else None)
    return out


def _strip_tags(reply: str) -> str:
    return re.sub(r"<\s*task\s*(\d+)\s*>.*?<\s*(?:/\s*task\s*\1|task\s*\1\s*/)\s*>", " ", reply, flags=re.I | re.S)


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().strip("\"'`").strip().rstrip(".!").strip().lower()


def _answer_items(answer: str) -> list[str]:
    a = _norm(answer).strip("[]()")
    parts = re.split(r",|;|\band\b|\n", a) if re.search(r",|;|\band\b", a) else a.split()
    return [_norm(p) for p in parts if _norm(p)]


def _same(item: str, ref: Any) -> bool:
    if isinstance(ref, int):
        v = parse_number(item)
        return v is not None and v == ref
    return item == str(ref).lower()


# ------------------------------------------------------------------ gold answers
_NUMWORDS = {**NUMBER_WORDS, "zero": 0, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
             "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
             "eighty": 80, "ninety": 90, "hundred": 100}
_PREFIX = re.compile(r"^(?:(?:the\s+)?(?:final\s+)?(?:answer|result|output)\s*(?:is|:|=)\s*|(?:it\s+is|it's|x\s*=)\s+)", re.I)
_NUM = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?")


def _canon(s: str) -> str:
    """Lower case, one space, no wrapping quotes/brackets or trailing punctuation, no "The answer is"."""
    s = str(s).replace("\u2013", "-").replace("\u2014", "-").replace("\u2019", "'").replace("\u00a0", " ")
    s = re.sub(r"\s+", " ", s).strip()
    for _ in range(3):
        s = _PREFIX.sub("", s).strip()
        s = s.strip("\"'`*").strip()
        s = re.sub(r"[.!;:,]+$", "", s).strip()
        if len(s) > 1 and s[0] + s[-1] in ("()", "[]", "{}"):
            s = s[1:-1].strip()
    return s.lower()


def parse_number(s: str) -> float | None:
    """A number written alone: ``12``, ``12.0``, ``1,200``, ``$12``, ``12%``, ``3/4``, ``-5``, ``twelve``, ``twenty-one``."""
    t = _canon(s).replace("$", "").replace("\u20ac", "").replace("\u00a3", "").rstrip("%").strip()
    if _NUM.fullmatch(t):
        t = t.replace(",", "").replace(" ", "")
        if "/" in t:
            a, b = t.split("/")
            return float(a) / float(b) if float(b) else None
        return float(t)
    words = re.split(r"[\s-]+", t)
    if words and all(w in _NUMWORDS for w in words) and len(words) <= 2:
        vals = [_NUMWORDS[w] for w in words]
        if len(vals) == 2 and not (vals[0] >= 20 and vals[0] % 10 == 0 and 0 < vals[1] < 10):
            return None
        return float(sum(vals))
    return None


def list_items(s: str) -> list[str]:
    """A list answer split on any common separator (commas, semicolons, lines, 'and', arrows, ``(3)-(4)``, spaces)."""
    t = _canon(s)
    t = re.sub(r"[\[\]{}]", " ", t)
    parts = re.split(r"\s*(?:,|;|\||\n|->|=>|\u2192|>|<|\band\b|\bthen\b)\s*|\s+-\s+|(?<=\))\s*-\s*(?=\()", t)
    parts = [p for p in (q.strip() for q in parts) if p]
    if len(parts) == 1 and " " in parts[0]:
        parts = parts[0].split()
    return [re.sub(r"^\((.*)\)$", r"\1", _canon(p)).strip() for p in parts if _canon(p)]


def _scalar_equal(a: str, g: str) -> bool:
    ca, cg = _canon(a), _canon(g)
    if ca == cg:
        return True
    na, ng = parse_number(ca), parse_number(cg)
    if ng is not None or na is not None:
        return na is not None and ng is not None and abs(na - ng) <= 1e-9 * max(1.0, abs(ng))
    strip = lambda x: re.sub(r"^(?:the|a|an)\s+", "", re.sub(r"[^\w\s]", " ", x)).split()  # noqa: E731
    return strip(ca) == strip(cg)


def matches_gold(answer: str, gold: str, *, ordered: bool = True) -> bool:
    """Whether an answer says the same as a gold answer, after normalisation.

    Equal after: case, whitespace, wrapping quotes or brackets, trailing punctuation,
    a leading "The answer is"/"Answer:", a leading article; numbers as numbers ("12" ==
    "12.0" == "twelve" == "$12"); a short answer holding exactly one number ("12
    apples") against a numeric gold; yes/no by the answer's first word (and not both);
    option letters ("B" == "(B) Paris"); lists in any common separator, in order when
    ``ordered``. A different number, a second number, extra or missing list items fail.

    Args:
        answer: The answer read from the reply.
        gold: The gold answer.
        ordered: Whether a list must keep the gold's order.
    """
    a, g = _canon(answer), _canon(gold)
    if not a:
        return False
    if _scalar_equal(a, g):
        return True
    ng = parse_number(g)
    if ng is not None:
        m = re.search(r"=\s*([^=]+)$", a)  # worked: "9 + 10 = 19"
        if m and parse_number(m.group(1)) is not None:
            return abs(parse_number(m.group(1)) - ng) <= 1e-9 * max(1.0, abs(ng))
        nums = _NUM.findall(a)
        words = re.findall(r"[A-Za-z]+", a)
        if len(nums) == 1 and len(words) <= 4:
            v = parse_number(nums[0])
            return v is not None and abs(v - ng) <= 1e-9 * max(1.0, abs(ng))
        return False
    gnums = _NUM.findall(g)
    if len(gnums) == 1 and parse_number(a) is not None and len(re.findall(r"[A-Za-z]+", g)) <= 2 and \
            parse_number(gnums[0]) == parse_number(a):
        return True  # gold "12 apples", answer "12"
    if g in ("yes", "no", "true", "false"):
        first = re.findall(r"[a-z]+", a)
        opposite = {"yes": "no", "no": "yes", "true": "false", "false": "true"}[g]
        return bool(first) and first[0] == g and opposite not in first
    if re.fullmatch(r"[a-h]", g):
        return re.fullmatch(rf"\(?{g}\)?(?:[.):]\s*.*|\s+.*)?", a) is not None
    m = re.match(r"^(?:on|in|at|by|from|to|of)\s+(.*)$", a)
    if m and _scalar_equal(m.group(1), g):
        return True  # "on Wednesday" for "Wednesday"
    gi = list_items(gold)
    if len(gi) >= 2:
        ai = list_items(answer)
        if len(ai) != len(gi):
            return False
        if ordered:
            return all(_scalar_equal(x, y) for x, y in zip(ai, gi))
        left = list(gi)
        for x in ai:
            hit = next((y for y in left if _scalar_equal(x, y)), None)
            if hit is None:
                return False
            left.remove(hit)
        return True
    return False


def _constraints_ok(constraints: Sequence[tuple[str, Any]], text: str, reply: str) -> bool:
    ok = True
    for name, arg in constraints:
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


def check(ref: Reference, answer: str | None, reply: str = "") -> bool:
    """Whether ``answer`` (the text inside the sub-task's tags) meets ``ref``.

    Args:
        ref: The sub-task's reference.
        answer: The extracted answer; ``None`` (missing tags) never passes.
        reply: The whole reply (for the "nothing outside the task tags" constraint).
    """
    if answer is None:
        return False
    text = answer.strip()
    if ref.constraints and not _constraints_ok(ref.constraints, text, reply):
        return False
    if ref.match == "format":
        return True
    if ref.match == "gold":
        return ref.free or matches_gold(answer, str(ref.value), ordered=ref.ordered)
    if ref.match == "exact":
        if isinstance(ref.value, int):
            return matches_gold(answer, str(ref.value))
        if ref.value in ("yes", "no"):
            return matches_gold(answer, ref.value)
        return _same(_norm(answer), ref.value)
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
    return False
