"""The multitask domain plugin: operators toward target cells, parsing with repair, and the quality W*F."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from qdaif.errors import ConfigError
from qdaif.feedback import Evaluation, label_probabilities
from qdaif.lm import LM, ScoreRequest
from qdaif.operators import Proposal, seed_ref
from qdaif.plugin import DomainPlugin
from qdaif.plugins.multitask import generators as gen
from qdaif.plugins.multitask.checkers import check, extract_answers, references
from qdaif.plugins.multitask.genome import (COMPUTABLE_TYPES, JUDGED_TYPES, MAX_SUBTASKS, TYPES, Genome, RawTask, SubTask,
                                            clean_instruction, parse_text, repair)
from qdaif.plugins.multitask.items import read_items
from qdaif.plugins.multitask.parsing import rewrite_refs

__all__ = ["Plugin", "load_items", "DEFAULT_SETTINGS", "DEFAULT_ANSWER_PROMPT"]

DEFAULT_ANSWER_PROMPT = (
    "Answer every numbered task. Put each answer inside its own tags.\n\n"
    "Context: Lena has 3 red apples and 5 green apples in her basket.\n"
    "1. [count] Count the items in the list red, green. Answer in <task1></task1> tags.\n"
    "2. [arithmetic] Compute 3 + 5. Answer in <task2></task2> tags.\n"
    "3. [qa; uses 2] What fruit are there 8 of? Answer in <task3></task3> tags.\n"
    "Answers:\n<task1>2</task1>\n<task2>8</task2>\n<task3>apples</task3>\n"
    "###\n"
    "{text}\n"
    "Answers:"
)
DEFAULT_SETTINGS: dict[str, Any] = {
    "mode": "data",  # data: Q = W*F (prompts the target follows); stress: Q = W*(1-F) (well-posed prompts it fails)
    "answer_prompt": DEFAULT_ANSWER_PROMPT,  # what the target model sees; {text} is the candidate prompt
    "answer_max_tokens": 128,
    "answer_temperature": 0.0,
    "min_well_posed": 0.0,  # W below this gives quality 0 (a gate, useful in stress mode)
    "crossover_rate": 0.2,  # share of mutation proposals that are LMX crossovers of two elites
    "empty_target_rate": 0.8,  # share of targeted proposals aimed at an empty feasible cell (when there is one)
    "num_examples": 2,  # elites shown in a mutation prompt besides the parent
    "items": None,  # an MTI-Bench-style JSON file of seed items with gold answers (replaces the shipped seeds)
    "judged_types": ["generate"],  # types a sub-task may have without a reference (scored by the followed judge)
    "max_context_tokens": 8192,  # the target model's context; longer prompts are refused (SmolLM2: 8192)
}
#: Stops of the target's reply: the end of the demonstration's answer block, never a line break
#: (a reply with one answer per line keeps every answer).
ANSWER_STOP = ("###", "\nContext:", "Multi-task prompt:")
CHARS_PER_TOKEN = 3.0  # a conservative estimate (English is about 4 characters per token)
WELL_POSED, FOLLOWED = "well_posed", "followed"
MEASURES = ("num_subtasks", "dependency_depth")
OPERATORS = ("add_subtask", "drop_subtask", "retype_subtask", "chain", "lmx_crossover")

LINE_MAX_TOKENS = 48  # one sub-task instruction line (about 30 words)


@lru_cache(maxsize=4)
def _file_items(path: str, where: str) -> tuple[dict[str, Any], ...]:
    return tuple(read_items(path, where=where))


def _gold_key(g: Genome, i: int) -> tuple:
    """What a sub-task's gold answer depends on: the context, its instruction, and (recursively) what it uses.

    Numbers of referenced tasks are blanked, so the key survives renumbering (a dropped
    sub-task before it) but not a changed instruction or a changed input.
    """
    st = g.subtasks[i]
    text = rewrite_refs(st.instruction, {n: 0 for n in range(100)}).lower()
    return (text, tuple(_gold_key(g, j - 1) for j in st.depends_on))


@lru_cache(maxsize=1)
def load_items() -> tuple[dict[str, Any], ...]:
    """The seed items shipped in ``data/items.jsonl``: context, sub-tasks (with ``reference`` where computable)."""
    text = resources.files("qdaif.plugins.multitask").joinpath("data/items.jsonl").read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def _genome_of_item(item: Mapping[str, Any]) -> Genome:
    tasks = [RawTask(num=i, type=s["type"], instruction=s["instruction"], depends_on=tuple(s.get("depends_on", ())),
                     answer=None if s.get("answer") is None else str(s["answer"]))
             for i, s in enumerate(item["subtasks"], 1)]
    g = repair(item["context"], tasks)
    if g is None:
        raise ConfigError(f"multitask: seed item {item.get('id')!r} has no usable sub-task")
    return g


def _raw(g: Genome) -> list[RawTask]:
    return [RawTask(num=i, type=s.type, instruction=s.instruction, depends_on=s.depends_on, answer=s.answer)
            for i, s in enumerate(g.subtasks, 1)]


def _new_depth(g: Genome, i: int, deps: tuple[int, ...]) -> int:
    """Depth of ``g`` after sub-task ``i`` (1-based) gets dependencies ``deps``."""
    subs = list(g.subtasks)
    subs[i - 1] = SubTask(subs[i - 1].type, subs[i - 1].instruction, tuple(sorted(deps)))
    return Genome(g.context, tuple(subs)).depth


class Plugin(DomainPlugin):
    """Multi-task prompts (MTI-style): a context and 1-5 typed sub-tasks answered inside ``<taskN>`` tags.

    Settings (``domain.settings``): see :data:`DEFAULT_SETTINGS`. The domain must define
    two label judges, ``well_posed`` (query placeholder ``{text}``: the prompt) and
    ``followed`` (``{text}``: one answer; ``{instruction}``, ``{context}``), and two
    computed measures, ``num_subtasks`` and ``dependency_depth``, in that order.

    Raises:
        ConfigError: An unknown or invalid setting, a missing judge or measure.
    """

    placeholders = frozenset({"text", "instruction", "context"})

    def __init__(self, *, domain) -> None:
        super().__init__(domain=domain)
        unknown = sorted(set(domain.settings) - set(DEFAULT_SETTINGS))
        if unknown:
            raise ConfigError(f"domain {domain.name}.settings: unknown key(s) {', '.join(unknown)}; "
                              f"known: {', '.join(DEFAULT_SETTINGS)}")
        s = {**DEFAULT_SETTINGS, **domain.settings}
        if s["mode"] not in ("data", "stress"):
            raise ConfigError(f"domain {domain.name}.settings.mode must be 'data' or 'stress', got {s['mode']!r}")
        if "{text}" not in str(s["answer_prompt"]):
            raise ConfigError(f"domain {domain.name}.settings.answer_prompt must contain {{text}} (the candidate prompt)")
        for key in ("crossover_rate", "empty_target_rate", "min_well_posed"):
            if not 0.0 <= float(s[key]) <= 1.0:
                raise ConfigError(f"domain {domain.name}.settings.{key} must be in [0, 1], got {s[key]}")
        if int(s["answer_max_tokens"]) < 1 or int(s["num_examples"]) < 0 or int(s["max_context_tokens"]) < 1:
            raise ConfigError(f"domain {domain.name}.settings: answer_max_tokens and max_context_tokens must be >= 1 "
                              "and num_examples >= 0")
        bad = [t for t in s["judged_types"] if t not in TYPES]
        if bad:
            raise ConfigError(f"domain {domain.name}.settings.judged_types: unknown type {bad[0]!r}; known: {', '.join(TYPES)}")
        missing = [j for j in (WELL_POSED, FOLLOWED) if j not in domain.judges]
        if missing:
            raise ConfigError(f"domain {domain.name}.judges must define {', '.join(missing)} (label judges)")
        names = tuple(m.name for m in domain.measures)
        if names != MEASURES or any(m.judge.kind != "computed" for m in domain.measures):
            raise ConfigError(f"domain {domain.name}.measures must be {', '.join(MEASURES)} (kind: computed), got {', '.join(names)}")
        self.settings = s
        self.judged_types = frozenset(s["judged_types"])
        # Gold answers of the seed items, found again in any genome that keeps the sub-task and what it uses.
        self._gold: dict[tuple, str] = {}
        for item in self.items(s, where=f"domain {domain.name}.settings.items"):
            g = _genome_of_item(item)
            for i, st in enumerate(g.subtasks):
                if st.answer is not None:
                    self._gold.setdefault((g.context, _gold_key(g, i)), st.answer)

    @staticmethod
    def items(settings: Mapping[str, Any], where: str = "domain multitask.settings.items") -> list[dict[str, Any]]:
        """The seed items: those of ``settings.items`` (an MTI-Bench-style JSON file) or the shipped ones.

        Raises:
            ConfigError: A bad items file (:func:`qdaif.plugins.multitask.items.read_items`), or an
                item whose prompt is longer than the model's context (``max_context_tokens``).
        """
        s = {**DEFAULT_SETTINGS, **settings}
        if not s.get("items"):
            return list(load_items())
        items = list(_file_items(str(s["items"]), where))
        budget = int(s["max_context_tokens"]) - int(s["answer_max_tokens"])
        for item in items:
            g = _genome_of_item(item)
            tokens = len(str(s["answer_prompt"]).replace("{text}", g.render())) / CHARS_PER_TOKEN
            if tokens > budget:
                raise ConfigError(f"{where}: item {item['id']!r} is about {int(tokens)} tokens with the answer prompt, more than "
                                  f"the model's context allows ({s['max_context_tokens']} tokens, settings.max_context_tokens)")
        return items

    def genome(self, text: str) -> Genome | None:
        """The genome of a text, with the gold answers of the seed items where its sub-tasks keep them."""
        g = parse_text(text)
        if g is None or not self._gold:
            return g
        subs = []
        for i, st in enumerate(g.subtasks):
            hit = self._gold.get((g.context, _gold_key(g, i)))
            subs.append(dataclasses.replace(st, answer=hit) if hit is not None else st)
        return Genome(g.context, tuple(subs))

    # ------------------------------------------------------------------ seeds
    @classmethod
    def default_seeds(cls, settings: Mapping[str, Any]) -> list[str]:
        """The rendered seed items: ``settings.items`` (a JSON file) if given, else ``data/items.jsonl``."""
        return [_genome_of_item(item).render() for item in cls.items(settings)]

    # ------------------------------------------------------------------ cells
    def _cell(self, k: int, d: int) -> tuple[int, int] | None:
        out = []
        for m, v in zip(self.domain.measures, (k, d)):
            idx = int(np.searchsorted(m.edges, v, side="right")) - 1
            if not 0 <= idx < m.num_bins:
                return None
            out.append(idx)
        return out[0], out[1]

    def feasible_cells(self) -> np.ndarray:
        """Cells holding some (k, depth) with 1 <= k <= 5 and depth <= k - 1 (15 of the default 5 x 5)."""
        mask = np.zeros(self.domain.dims, dtype=bool)
        for k in range(1, MAX_SUBTASKS + 1):
            for d in range(k):
                cell = self._cell(k, d)
                if cell is not None:
                    mask[cell] = True
        return mask

    def _cell_values(self) -> dict[tuple[int, int], tuple[int, int]]:
        """Grid cell -> one (k, depth) that lands in it."""
        out = {}
        for k in range(1, MAX_SUBTASKS + 1):
            for d in range(k):
                cell = self._cell(k, d)
                if cell is not None:
                    out.setdefault(cell, (k, d))
        return out

    # -------------------------------------------------------------- proposals
    def _lmx_prompt(self, texts: Sequence[str], prefix: str = "") -> str:
        lmx = self.domain.lmx
        parts = [f"{lmx.instruction} {t}" for t in texts]
        return lmx.separator.join(parts + [f"{lmx.instruction} {prefix}" if prefix else lmx.instruction])

    def _splice(self, a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
        """Deterministic crossover: ``a``'s context and first sub-tasks, then ``b``'s computable sub-tasks that fit."""
        cut = int(rng.integers(1, a.k + 1))
        tasks = _raw(a)[:cut]
        refs = references(b)
        offset = 10  # b's numbers, out of a's range (1-5); b's dependencies come along only if carried over
        for i, (st, ref) in enumerate(zip(b.subtasks, refs), 1):
            # b's gold answers belong to b's context: only sub-tasks that code answers in any context move
            if ref is not None and ref.match != "gold" and len(tasks) < MAX_SUBTASKS:
                tasks.append(RawTask(num=offset + i, type=st.type, instruction=_renumber(st.instruction, offset),
                                     depends_on=tuple(offset + j for j in st.depends_on)))
        out = repair(a.context, tasks) or a
        if out == a and a.k < MAX_SUBTASKS:  # nothing of b fits: add a generated sub-task instead
            st = self._fallback_subtask(a, str(rng.choice(COMPUTABLE_TYPES)), (), rng, a.k)
            out = repair(a.context, _raw(a) + [RawTask(a.k + 1, st.type, st.instruction, st.depends_on)]) or a
        return out

    def init_proposals(self, archive, rng: np.random.Generator, n: int) -> list[Proposal]:
        """Seeded init: LMX over seed items (the LM writes a whole prompt); fallback a splice of two of them."""
        seeds = self.domain.seeds
        genomes = [self.genome(s) for s in seeds]
        k = min(self.domain.lmx.num_examples, len(seeds))
        out = []
        for _ in range(n):
            pick = [int(i) for i in rng.choice(len(seeds), size=k, replace=False)]
            a, b = genomes[pick[-1]], genomes[pick[0]]
            fallback = self._splice(a, b, rng) if a is not None and b is not None else a
            meta = {"op": "seeded_init", "fallback": fallback.render() if fallback else None}
            out.append(Proposal(self._lmx_prompt([seeds[i] for i in pick]), "seeded_init", tuple(seed_ref(i) for i in pick), meta=meta))
        return out

    def mutate(self, archive, rng: np.random.Generator, n: int) -> list[Proposal]:
        """Operators toward target cells: empty feasible cells first, the parent an elite near the target."""
        data = archive.data(["solution", "id", "index"])
        if not len(data["index"]):
            return None
        cells = archive.int_to_grid_index(data["index"])
        elites = [(int(i), str(t), self.genome(str(t)), tuple(int(c) for c in cell))
                  for i, t, cell in zip(data["id"], data["solution"], cells)]
        elites = [e for e in elites if e[2] is not None]
        occupied = {e[3] for e in elites}
        values = self._cell_values()
        empty = [c for c in values if c not in occupied]
        out = []
        for _ in range(n):
            if len(elites) >= 2 and rng.random() < float(self.settings["crossover_rate"]):
                out.append(self._crossover(elites, rng))
                continue
            if empty and rng.random() < float(self.settings["empty_target_rate"]):
                target = empty[int(rng.integers(len(empty)))]
            else:
                target = list(values)[int(rng.integers(len(values)))]
            kt, dt = values[target]
            dist = np.array([abs(g.k - kt) + abs(g.depth - dt) for _, _, g, _ in elites], dtype=float)
            w = 1.0 / (1.0 + dist**3)
            parent = elites[int(rng.choice(len(elites), p=w / w.sum()))]
            others = [e for e in elites if e[0] != parent[0]]
            m = min(int(self.settings["num_examples"]), len(others))
            shown = [others[int(i)] for i in rng.choice(len(others), size=m, replace=False)] if m else []
            out.append(self._targeted(parent, shown, (kt, dt), rng))
        return out

    def _crossover(self, elites, rng) -> Proposal:
        i, j = (int(x) for x in rng.choice(len(elites), size=2, replace=False))
        a, b = elites[i], elites[j]
        fallback = self._splice(a[2], b[2], rng)
        meta = {"op": "lmx_crossover", "fallback": fallback.render()}
        return Proposal(self._lmx_prompt([b[1], a[1]]), "lmx_crossover", (b[0], a[0]), meta=meta)

    def _targeted(self, parent, shown, target: tuple[int, int], rng) -> Proposal:
        g: Genome = parent[2]
        kt, dt = target
        k, d = g.k, g.depth
        plan = None
        if kt > k:
            plan = self._plan_add(g, dt, rng)
        elif kt < k:
            plan = self._plan_drop(g, dt, rng)
        elif dt != d:
            plan = self._plan_chain(g, dt, rng)
        if plan is None:
            plan = self._plan_retype(g, rng)
        op, meta = plan
        meta = {"op": op, "target": [kt, dt], **meta}
        examples = [e[1] for e in shown] + [parent[1]]
        prompt = self._lmx_prompt(examples, meta.pop("prompt_prefix", ""))
        # A line operator needs one line from the LM, a drop none: do not sample a whole prompt.
        generation = {"max_tokens": 1} if op == "drop_subtask" else {"max_tokens": LINE_MAX_TOKENS, "stop": ["\n"]}
        return Proposal(prompt, op, tuple(e[0] for e in shown) + (parent[0],), meta=meta, generation=generation)

    def _line_plan(self, g: Genome, slot: int, typ: str, deps: tuple[int, ...], fallback: SubTask, replace: bool) -> dict:
        """Meta of an operator whose LM part is one sub-task line at position ``slot`` (1-based)."""
        base = list(g.subtasks)
        before = Genome(g.context, tuple(base[: slot - 1]))
        uses = f"; uses {', '.join(str(j) for j in deps)}" if deps else ""
        header = f"{slot}. [{typ}{uses}]"
        prefix = before.render() + "\n" + header
        fb = base[: slot - 1] + [fallback] + base[slot - 1 + (1 if replace else 0):]
        fb_genome = repair(g.context, [RawTask(i, s.type, s.instruction, s.depends_on) for i, s in enumerate(fb, 1)])
        return {"prompt_prefix": prefix, "parent": g.to_dict(), "slot": slot, "replace": replace, "type": typ,
                "depends_on": list(deps), "fallback": fb_genome.render() if fb_genome else g.render()}

    def _fallback_subtask(self, g: Genome, typ: str, deps: tuple[int, ...], rng, upto: int) -> SubTask:
        """A generated sub-task of type ``typ`` (using ``deps``) whose instruction ``g`` does not have yet."""
        taken = {s.instruction.lower() for s in g.subtasks}
        st = None
        for attempt in range(12):
            st = self._generated_subtask(g, typ if attempt < 6 else str(rng.choice(TYPES)), deps, rng, upto)
            if st.instruction.lower() not in taken:
                break
        return st

    def _generated_subtask(self, g: Genome, typ: str, deps: tuple[int, ...], rng, upto: int) -> SubTask:
        refs = references(Genome(g.context, g.subtasks[:upto]))
        if deps:
            j = max(deps)
            st = None if typ in self.judged_types else gen.chained_subtask(rng, j, refs[j - 1], typ)
            if st is None and typ in self.judged_types:
                st = gen.judged(typ, rng, dep=j)
            if st is None:  # no chained template of this type fits: one of another type that carries a reference
                st = gen.chained_subtask(rng, j, refs[j - 1], None) or gen.format_task(rng, (j, None))[0]
            return SubTask(st.type, st.instruction, tuple(sorted(set(deps) | set(st.depends_on))))
        return gen.make_subtask(typ, rng, g.context)

    def _plan_add(self, g: Genome, dt: int, rng) -> tuple[str, dict]:
        deps: tuple[int, ...] = ()
        depths = g.depths()
        if dt > g.depth:
            deepest = [i for i, v in enumerate(depths, 1) if v == g.depth]
            deps = (deepest[-1],)
        typ = str(rng.choice(TYPES))
        fb = self._fallback_subtask(g, typ, deps, rng, g.k)
        return "add_subtask", self._line_plan(g, g.k + 1, fb.type, fb.depends_on, fb, replace=False)

    def _plan_drop(self, g: Genome, dt: int, rng) -> tuple[str, dict] | None:
        used = {j for s in g.subtasks for j in s.depends_on}
        leaves = [i for i in range(1, g.k + 1) if i not in used]
        best = None
        for i in leaves:
            rest = [RawTask(j, s.type, s.instruction, s.depends_on) for j, s in enumerate(g.subtasks, 1) if j != i]
            child = repair(g.context, rest)
            if child is None or child.k != len(rest):
                continue
            score = (abs(child.depth - dt), rng.random())
            if best is None or score < best[0]:
                best = (score, i, child)
        if best is None:
            return None
        _, i, child = best
        # The LM writes nothing here: the generation of this proposal is not used.
        return "drop_subtask", {"prompt_prefix": "", "parent": g.to_dict(), "dropped": i, "fallback": child.render()}

    def _plan_chain(self, g: Genome, dt: int, rng) -> tuple[str, dict] | None:
        options = []
        for i in range(2, g.k + 1):
            deps = set(g.subtasks[i - 1].depends_on)
            for j in range(1, i):
                new = deps ^ {j}  # add j, or remove it when present
                if j in deps and f"task {j}" in g.subtasks[i - 1].instruction.lower():
                    continue  # the instruction itself uses task j: removing the edge needs a new instruction (retype)
                nd = _new_depth(g, i, tuple(new))
                if abs(nd - dt) < abs(g.depth - dt):
                    options.append((abs(nd - dt), rng.random(), i, j, tuple(sorted(new))))
        if not options:
            return None
        _, _, i, j, deps = min(options)
        st = g.subtasks[i - 1]
        if j in deps:  # chain: the LM rewrites sub-task i so that it uses task j
            fb = self._fallback_subtask(g, st.type, deps, rng, i - 1)
            if fb.type != st.type:
                fb = SubTask(st.type, st.instruction.rstrip(".?!") + f", using your answer to task {j}.", deps)
        else:  # unchain: the edge was nominal, the instruction stays
            fb = SubTask(st.type, st.instruction, deps)
        meta = self._line_plan(g, i, st.type, deps, fb, replace=True)
        meta["action"] = "chain" if j in deps else "unchain"
        meta["edge"] = [i, j]
        return "chain", meta

    def _plan_retype(self, g: Genome, rng) -> tuple[str, dict]:
        # Prefer a sub-task no other one uses: retyping an input would break its users' references.
        used = {j for s in g.subtasks for j in s.depends_on}
        free = [i for i in range(1, g.k + 1) if i not in used] or list(range(1, g.k + 1))
        i = int(free[int(rng.integers(len(free)))])
        st = g.subtasks[i - 1]
        typ = str(rng.choice([t for t in TYPES if t != st.type]))
        fb = self._fallback_subtask(g, typ, st.depends_on, rng, i - 1)
        return "retype_subtask", self._line_plan(g, i, fb.type, fb.depends_on, fb, replace=True)

    # ------------------------------------------------------------------ parse
    def parse(self, proposal: Proposal, generation: str) -> str | None:
        """The repaired genome text: the LM's line spliced into the planned child, or the LM's whole prompt.

        A line that cannot be used (empty, too short, not following a computable
        type's template, breaking the numbering) is replaced by the operator's
        deterministic fallback (``meta["fallback"]``); a whole prompt (seeded init,
        crossover) that does not parse also falls back; proposals without meta (other
        algorithms' generic LMX) return ``None`` when nothing parses.
        """
        meta = proposal.meta or {}
        op = meta.get("op")
        fallback = meta.get("fallback")
        if op in ("add_subtask", "retype_subtask", "chain"):
            child = self._child_from_line(meta, generation)
            return (child or parse_text(fallback)).render() if (child or fallback) else None
        if op == "drop_subtask":
            return fallback
        g = parse_text(generation if "context:" in generation.lower() else "Context:" + generation)
        return g.render() if g is not None else fallback

    def _child_from_line(self, meta: Mapping[str, Any], generation: str) -> Genome | None:
        parent = Genome.from_dict(meta["parent"])
        line = generation.split("\n", 1)[0]
        if line.lstrip().startswith("["):  # the LM repeated a header
            line = line.split("]", 1)[-1]
        instr = clean_instruction(line)
        slot, typ, deps = int(meta["slot"]), str(meta["type"]), tuple(int(j) for j in meta["depends_on"])
        if len(instr.split()) < 3 or any(s.instruction.lower() == instr.lower() for s in parent.subtasks):
            return None
        base = list(parent.subtasks)
        new = SubTask(typ, instr, deps)
        subs = base[: slot - 1] + [new] + base[slot - 1 + (1 if meta["replace"] else 0):]
        child = repair(parent.context, [RawTask(i, s.type, s.instruction, s.depends_on) for i, s in enumerate(subs, 1)])
        if child is None or child.k != len(subs):
            return None
        if typ not in self.judged_types and references(child)[slot - 1] is None:
            return None  # a sub-task without a reference would only be judged: use the generated one
        if set(deps) - set(child.subtasks[slot - 1].depends_on):
            return None
        return child

    # --------------------------------------------------------------- evaluate
    def evaluate(self, texts: Sequence[str], proposals: Sequence[Proposal], *, lm: LM, judge_lm: LM, seed: int) -> Evaluation:
        """Target answers (one ``generate``), then W and the per-sub-task judges (one ``score``), then Q.

        ``F`` is the mean over sub-tasks of: 1/0 from the exact checker where a reference
        is computable, else the ``followed`` judge's P(first label); 0 where the answer's
        tags are missing. ``W`` is the ``well_posed`` judge's P(first label).
        """
        n = len(texts)
        wp, fj = self.domain.judges[WELL_POSED], self.domain.judges[FOLLOWED]
        if n == 0:
            return Evaluation(np.zeros(0), np.zeros((0, 2)), {WELL_POSED: np.zeros((0, len(wp.labels)))}, details=[])
        genomes = [self.genome(t) for t in texts]
        s = self.settings
        prompts = [str(s["answer_prompt"]).replace("{text}", t) for t in texts]
        replies = lm.generate(prompts, max_tokens=int(s["answer_max_tokens"]), temperature=float(s["answer_temperature"]),
                              top_p=1.0, stop=ANSWER_STOP, seed=seed)
        requests = [ScoreRequest(*wp.prompt_parts(t), wp.labels) for t in texts]
        plans: list[list[tuple[str, Any]]] = []  # per candidate, per sub-task: (how, value or request index)
        for g, reply in zip(genomes, replies):
            plan = []
            if g is None:
                plans.append(plan)
                continue
            answers = extract_answers(reply, g.k)
            for st, ref, ans in zip(g.subtasks, references(g), answers):
                if ans is None:
                    plan.append(("missing", 0.0))
                elif ref is not None:  # a gold answer or an exact checker decides; the judge is not asked
                    plan.append(("gold" if ref.match == "gold" else "code", float(check(ref, ans, reply))))
                else:
                    requests.append(ScoreRequest(fj.shots, fj.query.format(text=ans, instruction=st.instruction,
                                                                           context=g.context), fj.labels))
                    plan.append(("judge", len(requests) - 1))
            plans.append(plan)
        logps = judge_lm.score(requests)
        w_probs = label_probabilities(logps[:n], wp.logit_scale)
        sub_probs = label_probabilities(logps[n:], fj.logit_scale) if len(requests) > n else np.zeros((0, len(fj.labels)))
        quality = np.full(n, np.nan)
        measures = np.full((n, 2), np.nan)
        details = []
        for c, (g, reply, plan) in enumerate(zip(genomes, replies, plans)):
            if g is None:
                details.append({"error": "unparsable text"})
                continue
            scores = [v if how != "judge" else float(sub_probs[v - n, 0]) for how, v in plan]
            f = float(np.mean(scores))
            w = float(w_probs[c, 0])
            q = w * f if s["mode"] == "data" else w * (1.0 - f)
            if np.isfinite(w) and w < float(s["min_well_posed"]):
                q = 0.0
            quality[c] = q
            measures[c] = (g.k, g.depth)
            refs = references(g)  # g carries the seed items' gold answers
            details.append({
                "answer": reply,
                "W": round(w, 6) if np.isfinite(w) else None,
                "F": round(f, 6) if np.isfinite(f) else None,
                "source": self._source(texts[c], proposals[c] if c < len(proposals) else None),
                "subtasks": [{"type": st.type, "by": how, "score": round(sc, 6) if np.isfinite(sc) else None,
                              "pass": bool(sc >= 0.5) if np.isfinite(sc) else None,
                              "reference": ref.to_json() if ref is not None else None}
                             for st, (how, _), sc, ref in zip(g.subtasks, plan, scores, refs)],
            })
        return Evaluation(quality=quality, measures=measures, label_probs={WELL_POSED: w_probs}, details=details)

    @staticmethod
    def _source(text: str, proposal: Proposal | None) -> str:
        """``lm`` if the LM's text was used, ``fallback`` if the operator's deterministic child was."""
        meta = (proposal.meta if proposal is not None else None) or {}
        if meta.get("op") == "drop_subtask":
            return "code"
        return "fallback" if meta.get("fallback") == text else "lm"

    def record(self, text: str) -> dict[str, Any]:
        """``{"genome": ...}``: context, sub-tasks with their computed references, k and depth."""
        g = self.genome(text)
        if g is None:
            return {}
        d = g.to_dict()
        for st, ref in zip(d["subtasks"], references(g)):
            st["reference"] = ref.to_json() if ref is not None else None
        d["k"], d["depth"] = g.k, g.depth
        return {"genome": d}


def _renumber(instruction: str, offset: int) -> str:
    """Shifts "task N" mentions by ``offset`` (so a second parent's numbers do not collide with the first's)."""
    return re.sub(r"\btask\s+(\d{1,2})\b", lambda m: f"task {offset + int(m.group(1))}", instruction, flags=re.I)
