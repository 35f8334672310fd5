"""Programmatic sub-tasks: arithmetic, list (sort, select, count) and format tasks with known answers.

Each generator returns a :class:`~qdaif.plugins.multitask.genome.SubTask` whose
instruction follows a checker template, and the expected answer computed here
directly (not through the checkers), so tests can compare the two. Judged types get a
reference-carrying pools too: ``qa`` looks things up in the context (word number N, the
first/largest number...), ``classify`` asks yes/no facts of the context or of an earlier
answer, ``transform`` asks exact rewrites (a word backwards, a list reversed). Only
``generate`` (free generation) has no reference and is left to the ``followed`` judge.
The mutation operators use these as the deterministic fallback when the LM's line is
unusable.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from qdaif.plugins.multitask.genome import COMPUTABLE_TYPES, JUDGED_TYPES, Genome, SubTask

__all__ = ["arithmetic", "sort_list", "select_from_list", "count_items", "format_task", "judged", "make_subtask",
           "chained_subtask", "random_genome", "lookup", "fact", "rewrite", "WORDS"]

WORDS = ("apple", "river", "candle", "zebra", "maple", "orbit", "lantern", "pebble", "violin", "harbor", "tulip",
         "meadow", "copper", "falcon", "basket", "quartz", "saddle", "ember", "glacier", "walnut", "biscuit", "dune")
_CONTEXTS = (
    "A bakery sold 14 loaves on Monday, 9 on Tuesday and 21 on Wednesday.",
    "The museum opens at nine, closes at five, and is free on the first Sunday of each month.",
    "Ravi planted three rows of beans and two rows of carrots behind his house last spring.",
    "The night train leaves the coast at ten and reaches the mountains shortly after dawn.",
    "Our team meeting moved from Tuesday to Thursday because the projector was broken.",
    "A small library lends books, board games and sewing machines to anyone with a card.",
)
_NUM = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")


def _ints(rng: np.random.Generator, n: int, lo: int = 1, hi: int = 60) -> list[int]:
    return [int(v) for v in rng.choice(np.arange(lo, hi), size=n, replace=False)]


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


def arithmetic(rng: np.random.Generator, dep: tuple[int, int] | None = None) -> tuple[SubTask, int]:
    """An integer expression; with ``dep = (j, value)`` one that uses sub-task j's numeric answer as x."""
    a, b, c = (int(v) for v in rng.integers(2, 13, size=3))
    form = int(rng.integers(3))
    if dep is not None:
        j, x = dep
        text, value = [(f"x * {a} + {b}", x * a + b), (f"x + {a} * {b}", x + a * b), (f"(x - {a}) * {b}", (x - a) * b)][form]
        return SubTask("arithmetic", f"Compute {text}, where x is your answer to task {j}.", (j,)), value
    text, value = [(f"{a} + {b} * {c}", a + b * c), (f"({a} + {b}) * {c}", (a + b) * c), (f"{a} * {b} - {c}", a * b - c)][form]
    return SubTask("arithmetic", f"Compute {text}."), value


def sort_list(rng: np.random.Generator, dep: tuple[int, Any] | None = None) -> tuple[SubTask, tuple]:
    """Sort numbers or words; with ``dep = (j, list)`` sort sub-task j's list answer."""
    if dep is not None:
        j, values = dep
        if all(isinstance(v, int) for v in values):
            up = bool(rng.integers(2))
            order = "from smallest to largest" if up else "from largest to smallest"
            return (SubTask("sort", f"Sort the numbers in your answer to task {j} {order}.", (j,)),
                    tuple(sorted(values, reverse=not up)))
        return SubTask("sort", f"Sort the words in your answer to task {j} in alphabetical order.", (j,)), tuple(sorted(values))
    n = int(rng.integers(3, 7))
    if rng.integers(2):
        values = _ints(rng, n)
        up = bool(rng.integers(2))
        order = "from smallest to largest" if up else "from largest to smallest"
        return SubTask("sort", f"Sort the numbers {_join(values)} {order}."), tuple(sorted(values, reverse=not up))
    words = [str(w) for w in rng.choice(WORDS, size=n, replace=False)]
    return SubTask("sort", f"Sort the words {_join(words)} in alphabetical order."), tuple(sorted(words))


def select_from_list(rng: np.random.Generator, dep: tuple[int, Any] | None = None) -> tuple[SubTask, Any]:
    """Pick the largest/smallest/even/odd numbers (or the longest word); ``dep`` selects from sub-task j's list."""
    if dep is not None:
        j, values = dep
        if all(isinstance(v, int) for v in values):
            big = bool(rng.integers(2))
            what = "the largest number" if big else "the smallest number"
            return SubTask("select", f"From your answer to task {j}, pick {what}.", (j,)), max(values) if big else min(values)
        return None  # noqa: RET501 - no word selection over a dependency: the caller picks another type
    values = _ints(rng, int(rng.integers(4, 7)))
    kind = int(rng.integers(4))
    if kind == 0:
        return SubTask("select", f"From the list {_join(values)}, pick the largest number."), max(values)
    if kind == 1:
        return SubTask("select", f"From the list {_join(values)}, pick the smallest number."), min(values)
    if kind == 2:
        evens = tuple(v for v in values if v % 2 == 0)
        if len(evens) >= 2:
            return SubTask("select", f"From the list {_join(values)}, pick the even numbers."), evens
    threshold = sorted(values)[len(values) // 2]
    picked = tuple(v for v in values if v > threshold)
    if len(picked) == 1:
        picked = picked[0]
    return SubTask("select", f"From the list {_join(values)}, pick the numbers greater than {threshold}."), picked


def count_items(rng: np.random.Generator, dep: tuple[int, Any] | None = None, context: str = "") -> tuple[SubTask, int]:
    """Count list items, even numbers, a letter in a word, or the context's words; ``dep`` counts sub-task j's list."""
    if dep is not None:
        j, values = dep
        return SubTask("count", f"Count the items in your answer to task {j}.", (j,)), len(values)
    kind = int(rng.integers(4 if context else 3))
    if kind == 0:
        values = _ints(rng, int(rng.integers(4, 8)))
        return (SubTask("count", f"Count the even numbers in the list {_join(values)}."),
                sum(1 for v in values if v % 2 == 0))
    if kind == 1:
        words = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(3, 7)), replace=False)]
        return SubTask("count", f"Count the items in the list {_join(words)}."), len(words)
    if kind == 2:
        word = str(rng.choice(WORDS))
        letter = word[int(rng.integers(len(word)))]
        return SubTask("count", f"Count how many times the letter '{letter}' appears in \"{word}\"."), word.count(letter)
    return SubTask("count", "Count the words in the context."), len(context.split())


def format_task(rng: np.random.Generator, dep: tuple[int, Any] | None = None, context: str = "") -> tuple[SubTask, tuple]:
    """A content request with a checkable format constraint; returns the constraint pairs it should carry."""
    n = int(rng.integers(2, 6))
    options = [
        ("Describe the context in exactly {n} words.", (("words", n),)),
        ("Summarise the context in one sentence using only lowercase letters.", (("lowercase", None),)),
        ("Name the main subject of the context in capital letters.", (("uppercase", None),)),
        ("Ask one question about the context, ending with a question mark.", (("question", None),)),
        ("Give a title for the context in at most {n} words.", (("max_words", n),)),
    ]
    if dep is not None:
        j = dep[0]
        n = int(rng.integers(6, 11))
        options = [(f"Write a sentence about your answer to task {j} in at most {{n}} words.", (("max_words", n),))]
        if not isinstance(dep[1], int):  # a number has no letters to capitalise
            options.append((f"Repeat your answer to task {j} in capital letters.", (("uppercase", None),)))
    text, constraints = options[int(rng.integers(len(options)))]
    text = text.replace("{n}", _NUM[n])
    return SubTask("format", text, (dep[0],) if dep is not None else ()), constraints


_JUDGED = {
    "qa": ("Which place or person does the context mention first?", "What is the main event described in the context?",
           "According to the context, what happens last?"),
    "classify": ("Is the tone of the context positive, negative or neutral?",
                 "Is the context about food, travel, work or nature? Answer with one word.",
                 "Does the context describe a past or a future event?"),
    "transform": ("Rewrite the context in simpler words.", "Translate the first sentence of the context into French.",
                  "Turn the context into a short bulleted list written on one line."),
    "generate": ("Write a short title for the context.", "Write one follow-up question a reader might ask.",
                 "Write a one-sentence story that begins where the context ends."),
}
_JUDGED_DEP = {
    "qa": "Which word of the context is closest in meaning to your answer to task {j}?",
    "classify": "Is your answer to task {j} a number, a word or a sentence?",
    "transform": "Translate your answer to task {j} into Spanish.",
    "generate": "Write one sentence that uses your answer to task {j}.",
}


def _context_words(context: str) -> list[str]:
    return [w.strip("'-") for w in re.findall(r"[A-Za-z0-9][A-Za-z0-9'-]*", context)]


def lookup(rng: np.random.Generator, context: str) -> SubTask:
    """A ``qa`` lookup in the context whose answer code can read off (a word by position, a number)."""
    words = _context_words(context)
    nums = re.findall(r"(?<![\w.])\d+(?![\w.]\d)", context)
    options = []
    if words:
        n = int(rng.integers(1, min(len(words), 12) + 1))
        options += [f"What is word number {n} of the context?", "What is the first word of the context?",
                    "What is the last word of the context?"]
        low = [w.lower() for w in words[:-1]]
        unique = [w for w in low if low.count(w) == 1 and re.fullmatch(r"[a-z]+", w) and len(w) > 3]
        if unique:
            options.append(f"Which word comes right after '{unique[int(rng.integers(len(unique)))]}' in the context?")
    if nums:
        options += ["What is the first number mentioned in the context?", "What is the largest number in the context?"]
    if len(nums) >= 2:
        options += ["List the numbers in the context in the order they appear.", "Add up all the numbers in the context."]
    if not options:
        return SubTask("qa", "How many sentences does the context have?")
    return SubTask("qa", options[int(rng.integers(len(options)))])


def fact(rng: np.random.Generator, context: str, dep: tuple[int, Any] | None = None) -> SubTask | None:
    """A ``classify`` yes/no question about the context (or about sub-task j's numeric answer)."""
    if dep is not None:
        j, value = dep
        if not isinstance(value, int):
            return None
        if rng.integers(2):
            return SubTask("classify", f"Is your answer to task {j} an {'even' if rng.integers(2) else 'odd'} number? "
                                       "Answer yes or no.", (j,))
        return SubTask("classify", f"Is your answer to task {j} greater than {int(value) + int(rng.integers(-5, 6))}? "
                                   "Answer yes or no.", (j,))
    words = [w for w in _context_words(context) if re.fullmatch(r"[A-Za-z]+", w) and len(w) > 3]
    kind = int(rng.integers(3))
    if kind == 0 and words:
        word = str(rng.choice(words)).lower() if rng.integers(2) else str(rng.choice(WORDS))
        return SubTask("classify", f"Does the context contain the word '{word}'? Answer yes or no.")
    nums = re.findall(r"(?<![\w.])\d+(?![\w.]\d)", context)
    if kind == 1 and nums:
        n = int(rng.choice(nums)) if rng.integers(2) else int(rng.integers(1, 40))
        return SubTask("classify", f"Does the context mention the number {n}? Answer yes or no.")
    n = max(1, len(context.split()) + int(rng.integers(-4, 5)))
    return SubTask("classify", f"Does the context have more than {n} words? Answer yes or no.")


def rewrite(rng: np.random.Generator, dep: tuple[int, Any] | None = None) -> SubTask | None:
    """A ``transform`` with one exact result: a word backwards, initials of a list, a list reversed."""
    if dep is not None:
        j, value = dep
        if isinstance(value, tuple):
            return SubTask("transform", f"Reverse the order of the items in your answer to task {j}.", (j,))
        if isinstance(value, str) and re.fullmatch(r"[A-Za-z]+", value):
            return SubTask("transform", f"Write your answer to task {j} backwards.", (j,))
        return None
    kind = int(rng.integers(3))
    if kind == 0:
        return SubTask("transform", f"Write the word '{rng.choice(WORDS)}' backwards.")
    words = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(3, 6)), replace=False)]
    if kind == 1:
        return SubTask("transform", f"Write the first letter of each word in the list {_join(words)} as one word.")
    return SubTask("transform", f"Reverse the order of the items in the list {_join(words)}.")


def judged(kind: str, rng: np.random.Generator, dep: int | None = None) -> SubTask:
    """A context-generic instruction without a reference (only ``generate`` uses these by default)."""
    if dep is not None:
        return SubTask(kind, _JUDGED_DEP[kind].format(j=dep), (dep,))
    bank = _JUDGED[kind]
    return SubTask(kind, bank[int(rng.integers(len(bank)))])


def chained_subtask(rng: np.random.Generator, j: int, ref: Any, kind: str | None = None) -> SubTask | None:
    """A computable sub-task that uses sub-task j's answer (a :class:`Reference`), or ``None`` if none fits.

    Args:
        rng: Random generator.
        j: 1-based index of the sub-task used.
        ref: Sub-task j's reference (``None``: not computable, no chained task fits).
        kind: The wanted type; ``None`` lets the reference's kind decide.
    """
    if ref is None or ref.match == "format":
        return None
    value = ref.value
    if ref.match == "gold":  # a gold answer chains as the number or list it is
        from qdaif.plugins.multitask.checkers import _dep_int, _dep_list

        n = _dep_int(ref)
        value = n if n is not None else _dep_list(ref)
        if value is None:
            return format_task(rng, (j, str(ref.value)))[0] if kind in (None, "format") else None
        ref = type(ref)(value, "exact" if isinstance(value, int) else "ordered")
    if isinstance(value, int) and ref.match == "exact":
        if kind in (None, "arithmetic"):
            return arithmetic(rng, (j, value))[0]
        if kind == "format":
            return format_task(rng, (j, value))[0]
        if kind == "classify":
            return fact(rng, "", (j, value))
        return None
    if isinstance(value, tuple):
        choices = {"sort": sort_list, "select": select_from_list, "count": count_items}
        if kind == "transform":
            return rewrite(rng, (j, value))
        if kind == "qa" and all(isinstance(v, int) for v in value):
            kind = "select"
        if kind is None:
            kind = str(rng.choice(["sort", "count", "select"] if all(isinstance(v, int) for v in value) else ["sort", "count"]))
        if kind == "format":
            return format_task(rng, (j, value))[0]
        if kind not in choices:
            return None
        out = choices[kind](rng, (j, value))
        return None if out is None else out[0]
    if kind == "format":
        return format_task(rng, (j, value))[0]
    if kind == "transform":
        return rewrite(rng, (j, value))
    return None


def make_subtask(kind: str, rng: np.random.Generator, context: str = "") -> SubTask:
    """An independent sub-task of type ``kind``."""
    if kind == "arithmetic":
        return arithmetic(rng)[0]
    if kind == "sort":
        return sort_list(rng)[0]
    if kind == "select":
        return select_from_list(rng)[0]
    if kind == "count":
        return count_items(rng, context=context)[0]
    if kind == "format":
        return format_task(rng, context=context)[0]
    if kind == "qa":
        return lookup(rng, context)
    if kind == "classify":
        return fact(rng, context)
    if kind == "transform":
        return rewrite(rng)
    if kind in JUDGED_TYPES:
        return judged(kind, rng)
    raise ValueError(f"unknown sub-task type {kind!r}")


def random_genome(rng: np.random.Generator, k: int, depth: int) -> Genome:
    """A genome of ``k`` generated sub-tasks whose dependency depth is ``depth`` (a chain at the start).

    Args:
        rng: Random generator.
        k: Number of sub-tasks, 1..5.
        depth: Dependency depth, 0..k-1.
    """
    from qdaif.plugins.multitask.checkers import reference_of

    if not (1 <= k <= 5 and 0 <= depth <= k - 1):
        raise ValueError(f"no genome has k={k} sub-tasks and depth {depth}")
    context = str(_CONTEXTS[int(rng.integers(len(_CONTEXTS)))])
    subtasks: list[SubTask] = []
    refs: list = []
    for i in range(k):
        st = None
        if 0 < i <= depth:
            st = chained_subtask(rng, i, refs[i - 1])
            if st is None:
                st = format_task(rng, (i, None))[0]
        while st is None or any(s.instruction == st.instruction for s in subtasks):
            start = sort_list(rng)[0] if (i == 0 and depth > 0) else None
            st = start or make_subtask(str(rng.choice(COMPUTABLE_TYPES + JUDGED_TYPES)), rng, context)
        subtasks.append(st)
        refs.append(reference_of(st, context, refs))
    return Genome(context=context, subtasks=tuple(subtasks))
