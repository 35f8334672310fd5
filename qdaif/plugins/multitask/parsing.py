"""Reading real, user-written multi-task prompts: where the instruction list is, and what each item uses.

A user's prompt is not qdaif's canonical render. The instructions may be numbered
``1.`` ``1)`` ``(1)`` ``#1:``, written ``Step #1``, ``Step 1:``, ``Task 3:``,
``Instruction 2:``, ``Question 1:``, or bulleted; they may come before or after the
context, and the context may itself hold a numbered list. :func:`parse_prompt` splits
the prompt into blocks of list items, scores each block for looking like instructions
(imperative verbs and questions, ``Step``/``Task`` markers, a ``Tasks:`` header, mentions
of other tasks or answer tags; a ``Context:``/``Passage:`` header counts against it) and
takes the best one (the last one on a tie). Everything else is the context.

Dependencies (:func:`dependencies`) are read from the instruction's wording: ``task N``,
``instruction N``, ``step #N``, ``step N``, ``question N``, ``#N``, ``the answer to N``,
``your answer to task N``, ``the result of step N``, ordinals (``the first task``,
``step two``), and references to the previous item (``the previous result``, ``your
previous answer``, ``the answer above``, ``that number``, a bare ``your answer``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

__all__ = ["ParsedPrompt", "Item", "parse_prompt", "dependencies", "explicit_refs", "rewrite_refs", "split_items"]

_KW = r"(?:sub-?tasks?|tasks?|steps?|instructions?|questions?|parts?|q)"
_ORD = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
        "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
_ANS = r"(?:answers?|results?|outputs?|responses?|solutions?)"

# ------------------------------------------------------------------ item markers
_CANON = re.compile(r"^(?P<indent>\s*)(?P<num>\d{1,2})\s*[.):]\s*(?P<body>\[[^\]]*\].*)$")
_KW_ITEM = re.compile(rf"^(?P<indent>\s*)(?P<kw>sub-?task|task|step|instruction|question|part|q)\s*(?P<hash>#)?\s*(?P<num>\d{{1,2}})"
                      r"(?:\s*[.:)\-\u2013\u2014]\s*|\s*$|\s*(?=\()|(?(hash)\s+|(?!)))(?P<body>.*)$", re.I)
_HASH_ITEM = re.compile(r"^(?P<indent>\s*)#\s*(?P<num>\d{1,2})\s*[.:)\-]?\s+(?P<body>.*)$")
_NUM_ITEM = re.compile(r"^(?P<indent>\s*)(?P<num>\d{1,2})(?P<p>[.):])\s+(?P<body>.*)$")
_PAREN_ITEM = re.compile(r"^(?P<indent>\s*)\((?P<num>\d{1,2})\)\s*(?P<body>.*)$")
_BULLET_ITEM = re.compile(r"^(?P<indent>\s*)(?P<b>[-*\u2022])\s+(?P<body>.*)$")

_CONTEXT_LABEL = re.compile(r"^\s*(?:context|passage|text|story|article|document|paragraph|input|data|list|email|message|"
                            r"review|table|notes?|background|scenario|information|excerpt|source|transcript)\b[^:\n]{0,30}:",
                            re.I)
_TASK_HEADER = re.compile(r"\b(?:tasks?|instructions?|questions?|steps?|the following|to do|sub-?tasks?|answer)\b[^.\n]*:\s*$"
                          r"|\b(?:do|complete|answer|follow|perform|carry out)\b.*\bfollowing\b", re.I)

# A line about the answer format of every task ("Put each answer in <taskN></taskN> tags."): not part of an item.
_FORMAT_LINE = re.compile(r"(?=.*<\s*/?\s*task)(?=.*\b(?:each|every|all|tags?|format|answers)\b)", re.I)

_VERBS = frozenset("""
add answer arrange ask assign calculate capitalise capitalize change check choose cite classify combine compare compose
compute concatenate convert copy count create decide delete describe determine divide double draft estimate evaluate
explain express extract fill find finish form generate give group halve highlight identify indicate insert invent join
label list locate look make mark match multiply name note order output paraphrase pick predict provide put quote rank
rate read rearrange recommend remove rename reorder repeat rephrase replace reply report respond restate return reverse
rewrite round say select separate shorten simplify solve sort spell split square state subtract suggest sum summarise
summarize take tell translate triple turn underline use using verify write based from now then next finally lastly
also please after what which who whom whose when where why how is are does do did can could should would will was
were has have according
""".split())


@dataclasses.dataclass(frozen=True)
class Item:
    """One list item of a prompt: its marker style, number as written (``None`` for bullets) and text."""

    style: str
    num: int | None
    body: str
    line: int  # index of its first line
    indent: int


@dataclasses.dataclass(frozen=True)
class ParsedPrompt:
    """A multi-task prompt split into its context and instructions.

    Attributes:
        context: Every line outside the instruction list (a leading ``Context:`` label removed).
        instructions: The instructions in order, each as written (continuation lines joined).
        depends_on: Per instruction, the 1-based indices of the earlier instructions it uses.
        numbers: Per instruction, its number as written (bullets: its position).
    """

    context: str
    instructions: tuple[str, ...]
    depends_on: tuple[tuple[int, ...], ...]
    numbers: tuple[int, ...]

    @property
    def k(self) -> int:
        """Number of sub-tasks."""
        return len(self.instructions)

    @property
    def depth(self) -> int:
        """Longest dependency chain, in edges (0 when every instruction stands alone)."""
        out: list[int] = []
        for deps in self.depends_on:
            out.append(1 + max(out[j - 1] for j in deps) if deps else 0)
        return max(out, default=0)


def _classify(line: str) -> Item | None:
    plain = re.sub(r"^(\s*)#{1,6}\s+(?=[A-Za-z])", r"\1", line.replace("**", "").replace("__", ""))  # "## Step 1"
    for style, rx in (("canon", _CANON), ("kw", _KW_ITEM), ("hash", _HASH_ITEM), ("num", _NUM_ITEM), ("paren", _PAREN_ITEM),
                      ("bullet", _BULLET_ITEM)):
        m = rx.match(plain)
        if not m:
            continue
        if style == "kw":
            style = "kw:" + m.group("kw").lower().replace("-", "")
        elif style == "num":
            style = "num" + m.group("p")
        elif style == "bullet":
            style = "bullet" + m.group("b")
        num = int(m.group("num")) if "num" in m.groupdict() and m.group("num") else None
        return Item(style=style, num=num, body=m.group("body").strip(), line=-1, indent=len(m.group("indent").expandtabs()))
    return None


def split_items(text: str) -> list[list[Item]]:
    """Blocks of list items: runs of items of one marker style with rising numbers.

    A block continues over blank lines and over non-item lines that directly follow an
    item (continuation lines, joined to it) or are indented deeper than the items; a
    restart of the numbering, another marker style, a label line (``Context:``) or a
    paragraph after a blank line ends it.
    """
    lines = str(text).replace("\r", "").split("\n")
    blocks: list[list[Item]] = []
    cur: list[Item] = []
    last_blank = False
    for idx, line in enumerate(lines):
        if not line.strip():
            last_blank = True
            continue
        item = _classify(line)
        if cur and item is not None and item.indent > cur[-1].indent and item.style != cur[-1].style:
            item = None  # a nested list inside an item: part of that item's text
        if item is not None:
            item = dataclasses.replace(item, line=idx)
            same = cur and item.style == cur[-1].style and (item.num is None or cur[-1].num is None or item.num > cur[-1].num)
            if not same:
                if cur:
                    blocks.append(cur)
                cur = []
            cur.append(item)
        elif cur:
            indent = len(line) - len(line.lstrip())
            labelled = _CONTEXT_LABEL.match(line) or re.match(r"^\s*[A-Z][\w ]{0,25}:(?:\s|$)", line) or _FORMAT_LINE.search(line)
            cont = (not last_blank and not labelled and not line.rstrip().endswith(":")) or indent > cur[-1].indent
            if cont:
                cur[-1] = dataclasses.replace(cur[-1], body=(cur[-1].body + " " + line.strip()).strip())
            else:
                blocks.append(cur)
                cur = []
        last_blank = False
    if cur:
        blocks.append(cur)
    return _merge_interrupted(blocks)


def _merge_interrupted(blocks: list[list[Item]]) -> list[list[Item]]:
    """Joins a numbered block interrupted by another list (options under an instruction) when its numbering goes on."""
    out: list[list[Item]] = []
    for block in blocks:
        merged = False
        for back in range(len(out) - 1, max(len(out) - 3, -1), -1):
            prev = out[back]
            if back < len(out) - 1 and prev[0].style == block[0].style and prev[-1].num is not None and \
                    block[0].num == prev[-1].num + 1:
                inner = [it for b in out[back + 1:] for it in b]
                last = prev[-1]
                text = " ".join(f"{it.num or '-'}) {it.body}" for it in inner)
                out[back] = prev[:-1] + [dataclasses.replace(last, body=(last.body + " " + text).strip())] + block
                del out[back + 1:]
                merged = True
                break
        if not merged:
            out.append(block)
    return out


def _instruction_like(body: str) -> float:
    words = re.findall(r"[A-Za-z']+", body)
    if not words:
        return 0.0
    first = words[0].lower()
    score = 1.0 if first in _VERBS else 0.0
    if body.rstrip().endswith("?") or re.search(r"<\s*/?\s*task", body, re.I) or re.search(r"\byour\s+(?:answer|result)\b", body,
                                                                                              re.I):
        score = 1.0
    return score


def _block_score(block: list[Item], lines: list[str]) -> float:
    score = sum(_instruction_like(it.body) for it in block) / len(block)
    style = block[0].style
    if style == "canon":
        score += 2.0
    elif style.startswith("kw:") or style == "hash":
        score += 0.5
    prev = next((lines[i] for i in range(block[0].line - 1, -1, -1) if lines[i].strip()), "")
    if _CONTEXT_LABEL.match(prev) and prev.rstrip().endswith(":"):
        score -= 0.6
    elif _TASK_HEADER.search(prev):
        score += 0.4
    if any(dependencies(it.body, i + 1, [b.num or (j + 1) for j, b in enumerate(block)]) for i, it in enumerate(block)):
        score += 0.3
    return score


def parse_prompt(text: str) -> ParsedPrompt | None:
    """Splits a multi-task prompt into context and instructions, with their dependencies.

    Args:
        text: The prompt as a user wrote it (any length, any line layout).

    Returns:
        The parsed prompt, or ``None`` when the text holds no list of instructions.
    """
    lines = str(text).replace("\r", "").split("\n")
    blocks = split_items(text)
    if not any(len(b) >= 2 for b in blocks):
        inline = _inline(lines)
        if inline is not None:
            return inline
    if not blocks:
        return None
    scores = [_block_score(b, lines) for b in blocks]
    best = max(range(len(blocks)), key=lambda i: (scores[i], i))
    block = blocks[best]
    taken: set[int] = set()
    for it in block:  # the item's own line and its continuation lines
        taken.add(it.line)
    start, end = block[0].line, block[-1].line
    nxt = next((b[0].line for b in blocks[best + 1:]), len(lines))
    for i in range(end + 1, nxt):  # continuation lines of the last item
        if not lines[i].strip():
            break
        if block[-1].body.endswith(lines[i].strip()):
            taken.add(i)
    for i in range(start, end):
        if lines[i].strip() and lines[i].strip() in " ".join(it.body for it in block):
            taken.add(i)
    rest = [ln for i, ln in enumerate(lines) if i not in taken and not (start <= i <= end and not ln.strip())]
    context = "\n".join(rest).strip()
    context = re.sub(r"^\s*context\s*:\s*", "", context, flags=re.I)
    numbers = [it.num if it.num is not None else i + 1 for i, it in enumerate(block)]
    instructions = tuple(it.body for it in block)
    deps = tuple(tuple(dependencies(body, i + 1, numbers)) for i, body in enumerate(instructions))
    return ParsedPrompt(context=context, instructions=instructions, depends_on=deps, numbers=tuple(numbers))


_INLINE = re.compile(r"(?:(?<=\s)|^)(?:\((?P<a>\d)\)|(?P<b>\d)\)|(?P<kw>step|task|instruction|part)\s+#?(?P<c>\d)\s*[:.)])\s+", re.I)


def _inline(lines: list[str]) -> ParsedPrompt | None:
    """Instructions written inline on one line: "Do three things: (1) ..., (2) ... and (3) ..."."""
    for idx in range(len(lines) - 1, -1, -1):
        marks = [m for m in _INLINE.finditer(lines[idx])]
        nums = [int(m.group("a") or m.group("b") or m.group("c")) for m in marks]
        if len(marks) < 2 or nums != list(range(1, len(nums) + 1)):
            continue
        line = lines[idx]
        bodies = [line[m.end():(marks[i + 1].start() if i + 1 < len(marks) else len(line))] for i, m in enumerate(marks)]
        bodies = [re.sub(r"(?:,|;)?\s*(?:and|then)?\s*$", "", b.strip()).strip() for b in bodies]
        head = line[:marks[0].start()].strip()
        context = "\n".join([*lines[:idx], head, *lines[idx + 1:]]).strip()
        context = re.sub(r"^\s*context\s*:\s*", "", context, flags=re.I)
        deps = tuple(tuple(dependencies(b, i + 1, nums)) for i, b in enumerate(bodies))
        return ParsedPrompt(context=context, instructions=tuple(bodies), depends_on=deps, numbers=tuple(nums))
    return None


# ------------------------------------------------------------------ dependencies
_EXPLICIT = [
    # "task 2", "steps 1 and 3", "instruction #2", "Q2", "sub-task 1"
    re.compile(rf"(?<![</\w])\b{_KW}\s*#?\s*(?P<n>\d{{1,2}})(?P<more>(?:\s*(?:,|and|&|or)\s*(?:{_KW}\s*)?#?\s*\d{{1,2}}\b)*)(?!\s*(?:%|\.\d))",
               re.I),
    # "the answer to 1", "the result of (2)", "answer from #1"
    re.compile(rf"\b{_ANS}\s+(?:to|of|from|for|in)\s+(?:the\s+)?#?\s*\(?(?P<n>\d{{1,2}})\)?(?!\d|\.\d|%)(?!\s*(?:[a-z]{{3,}}s\b))", re.I),
    # "the number from 1", "the list in (2)"
    re.compile(r"\b(?:number|value|list|word|words|sum|total|sentence)\s+(?:from|in)\s+(?:the\s+)?#?\s*\(?(?P<n>\d{1,2})\)?"
               r"(?!\d|\.\d|%|\s*[a-z]{3,})", re.I),
    # "#2" on its own (MTI's markers)
    re.compile(r"(?<![\w#&])#\s?(?P<n>\d{1,2})\b"),
    # "<task1>" used as a reference ("the word in <task1>")
    re.compile(r"<\s*task\s*(?P<n>\d{1,2})\s*/?\s*>", re.I),
]
_ORDW = r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth)"
_ORDINAL = [
    # "the first task", "the first and second tasks", "the second step's answer"
    re.compile(rf"\b(?:the\s+)?(?P<w>{_ORDW}(?:\s*(?:,|and|&)\s*(?:the\s+)?{_ORDW})*)\s+(?:{_KW}|{_ANS})\b", re.I),
    re.compile(rf"\b{_KW}\s+(?P<w>one|two|three|four|five|six|seven|eight)\b", re.I),
]
_PREVIOUS = [
    re.compile(rf"\b(?:the|your|my|that|this)\s+(?:previous|preceding|prior|above|earlier|former|last)\s+(?:\w+\s+)?(?:{_ANS}|{_KW})\b",
               re.I),
    re.compile(r"\b(?:the|your|my|that|this)\s+(?:previous|preceding|prior|earlier)\s+(?:\w+\s+)?(?:number|value|list|word|"
               r"sentence|sum|total|count|name|item)s?\b", re.I),
    re.compile(rf"\b(?:{_ANS}|number|value|list|word|sum|total)\s+(?:from\s+)?above\b", re.I),
    re.compile(r"\b(?:that|this)\s+(?:result|answer|number|value|list|sum|total|product|difference|output|count|word|name)\b", re.I),
    re.compile(r"\bthe\s+(?:result|outcome)\b(?!\s+of\s+(?!the\s+(?:previous|last|above)))", re.I),
    re.compile(rf"\byour\s+(?:answer|result|output|response)\b(?!\s+(?:to|of|from|for|in)\s+(?:the\s+)?(?:{_KW}|#|\(|\d|first|"
               r"second|third|fourth|fifth|sixth))", re.I),
    re.compile(r"\b(?:what|the\s+(?:\w+\s+){0,2}?\w+|that\s+\w+|those\s+\w+|it)\s+(?:that\s+)?you\s+(?:just\s+|have\s+)?"
               r"(?:found|computed|calculated|got|wrote|written|gave|given|obtained|chose|chosen|picked|selected|identified|"
               r"extracted|listed|named|made|created|translated|sorted|counted)\b", re.I),
]


def explicit_refs(instruction: str) -> list[tuple[int, int, int]]:
    """Numbered references in an instruction: ``(start, end, number)`` spans of the number digits."""
    out = []
    for rx in _EXPLICIT:
        for m in rx.finditer(instruction):
            out.append((m.start("n"), m.end("n"), int(m.group("n"))))
            if "more" in rx.groupindex and m.group("more"):
                base = m.start("more")
                for mm in re.finditer(r"\d{1,2}", m.group("more")):
                    out.append((base + mm.start(), base + mm.end(), int(mm.group())))
    seen, uniq = set(), []
    for s, e, n in sorted(out):
        if not any(s < e2 and s2 < e for s2, e2 in seen):
            seen.add((s, e))
            uniq.append((s, e, n))
    return uniq


def dependencies(instruction: str, index: int, numbers: Sequence[int] | None = None) -> list[int]:
    """The 1-based indices of the earlier instructions that ``instruction`` (the ``index``-th) uses.

    Args:
        instruction: The instruction's text.
        index: Its 1-based position.
        numbers: The numbers the instructions are written with (default ``1..``); a
            reference to a number is mapped to the instruction carrying it.
    """
    numbers = list(numbers) if numbers is not None else list(range(1, index + 1))
    pos = {}
    for i, n in enumerate(numbers[:index - 1], 1):
        pos.setdefault(n, i)
    found: set[int] = set()
    refs = [n for _, _, n in explicit_refs(instruction)]
    for rx in _ORDINAL:
        refs += [_ORD[w.lower()] for m in rx.finditer(instruction) for w in re.findall(r"[A-Za-z]+", m.group("w"))
                 if w.lower() in _ORD]
    for n in refs:
        j = pos.get(n, n if numbers == list(range(1, len(numbers) + 1)) else None)
        if j is not None and 1 <= j < index:
            found.add(j)
    if index > 1 and any(rx.search(instruction) for rx in _PREVIOUS):
        found.add(index - 1)
    return sorted(found)


def rewrite_refs(instruction: str, mapping: dict[int, int]) -> str:
    """Renumbers the numbered references (``task N``, ``step #N``, ``the answer to N``) by ``mapping``."""
    out, last = [], 0
    for s, e, n in explicit_refs(instruction):
        out.append(instruction[last:s])
        out.append(str(mapping.get(n, n)))
        last = e
    out.append(instruction[last:])
    return "".join(out)
