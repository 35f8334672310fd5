"""Mutation operators: each turns the archive into a batch of LM prompts."""

from __future__ import annotations

import dataclasses

import numpy as np

from qdaif.archive import EdgeGridArchive
from qdaif.domain import Domain, LMXPrompt

__all__ = ["Proposal", "SeededInit", "LMXNear", "LMXRewrite", "lmx_near_weights", "seed_ref"]


@dataclasses.dataclass(frozen=True)
class Proposal:
    """A prompt to send to the generator and where its examples came from.

    Attributes:
        prompt: The text given to the LM.
        operator: Name of the operator that built it.
        parents: Candidate ids of the few-shot examples (``"seed:K"`` for seed text K).
        meta: What a domain plugin needs to know about the proposal (e.g. the input a
            rewrite is of); recorded in ``history.jsonl`` when not empty. JSON values.
        generation: Overrides of the domain's :class:`qdaif.domain.Generation` for this
            prompt (e.g. ``{"max_tokens": 40, "stop": ("\n",)}`` for an operator that
            needs one line). Proposals with the same settings share one ``generate`` call.
    """

    prompt: str
    operator: str
    parents: tuple
    meta: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)
    generation: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)


def seed_ref(k: int) -> str:
    """Returns the parent reference of seed text ``k``."""
    return f"seed:{k}"


class SeededInit:
    """LMX over the domain's seed texts: ``num_examples`` seeds in a random order.

    Args:
        lmx: The domain's LMX prompt.
        seeds: Seed texts.
    """

    name = "seeded_init"

    def __init__(self, *, lmx: LMXPrompt, seeds: tuple[str, ...]) -> None:
        self.lmx = lmx
        self.seeds = seeds

    def propose(self, archive: EdgeGridArchive, rng: np.random.Generator, n: int) -> list[Proposal]:
        k = min(self.lmx.num_examples, len(self.seeds))
        out = []
        for _ in range(n):
            pick = rng.choice(len(self.seeds), size=k, replace=False)
            out.append(Proposal(self.lmx.render([self.seeds[i] for i in pick]), self.name, tuple(seed_ref(int(i)) for i in pick)))
        return out


def lmx_near_weights(parent_cell: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Sampling weights of elites for LMX-Near: ``1 / (1 + d**3)``, normalised.

    Args:
        parent_cell: Grid index of the parent, shape ``(measure_dim,)``.
        cells: Grid indices of the occupied cells, shape ``(num_elites, measure_dim)``.

    Returns:
        Probabilities, shape ``(num_elites,)``; ``d`` is the Euclidean distance in bins.
    """
    d = np.linalg.norm(np.asarray(cells, float) - np.asarray(parent_cell, float), axis=1)
    w = 1.0 / (1.0 + d**3)
    return w / w.sum()


class LMXNear:
    """LMX-Near, QDAIF's default operator.

    For each candidate, a parent cell is drawn uniformly from the occupied cells, then
    ``num_examples`` elites are drawn without replacement with weights that fall with
    their bin distance to the parent (:func:`lmx_near_weights`) and become the few-shot
    examples, in the order drawn.

    Args:
        lmx: The domain's LMX prompt.
    """

    name = "lmx_near"

    def __init__(self, *, lmx: LMXPrompt) -> None:
        self.lmx = lmx

    def propose(self, archive: EdgeGridArchive, rng: np.random.Generator, n: int) -> list[Proposal]:
        data = archive.data(["solution", "id", "index"])
        if len(data["index"]) < self.lmx.num_examples:
            raise ValueError(f"LMX-Near needs at least {self.lmx.num_examples} elites, archive has {len(data['index'])}")
        cells = archive.int_to_grid_index(data["index"])
        out = []
        for _ in range(n):
            parent = rng.integers(len(cells))
            p = lmx_near_weights(cells[parent], cells)
            pick = rng.choice(len(cells), size=self.lmx.num_examples, replace=False, p=p)
            prompt = self.lmx.render([str(data["solution"][i]).strip() for i in pick])
            out.append(Proposal(prompt, self.name, tuple(int(data["id"][i]) for i in pick)))
        return out


class LMXRewrite:
    """LMX-rewrite toward a target cell, for domains with categorical measures (poetry).

    For each candidate: a target cell is drawn uniformly from the empty cells (from all
    cells once the archive is full), a parent uniformly from the elites; the prompt
    shows the parent and up to ``num_examples - 1`` other elites, each under a header
    naming its cell, and ends with the target cell's header. The proposal is generated
    with the target cell's settings (:meth:`qdaif.domain.Domain.generation_for`, e.g. more
    tokens for a sonnet than for a haiku); the target's category names are its ``meta``
    (``history.jsonl`` records them).

    Args:
        domain: A domain with a ``rewrite`` prompt and categorical measures.
    """

    name = "lmx_rewrite"

    def __init__(self, *, domain: Domain) -> None:
        self.rewrite = domain.rewrite
        self.measures = domain.measures
        self.domain = domain

    def _names(self, cell) -> dict[str, str]:
        return {m.name: m.categories[int(c)] for m, c in zip(self.measures, cell)}

    def propose(self, archive: EdgeGridArchive, rng: np.random.Generator, n: int) -> list[Proposal]:
        data = archive.data(["solution", "id", "index"])
        if not len(data["index"]):
            raise ValueError("LMX-rewrite needs at least one elite")
        cells = archive.int_to_grid_index(data["index"])
        all_cells = np.array(np.unravel_index(np.arange(archive.cells), archive.dims)).T
        empty = np.setdiff1d(np.arange(archive.cells), data["index"])
        out = []
        for _ in range(n):
            target = all_cells[rng.choice(empty)] if len(empty) else all_cells[rng.integers(archive.cells)]
            parent = int(rng.integers(len(cells)))
            others = [i for i in range(len(cells)) if i != parent]
            k = min(self.rewrite.num_examples - 1, len(others))
            chosen = [int(i) for i in rng.choice(others, size=k, replace=False)] if k else []
            order = chosen + [parent]  # the parent comes last, right before the target
            examples = [(self._names(cells[i]), str(data["solution"][i]).strip()) for i in order]
            names = self._names(target)
            prompt = self.rewrite.render(examples, names)
            gen = self.domain.generation_for(names)
            overrides = {} if gen == self.domain.generation else dataclasses.asdict(gen)
            out.append(Proposal(prompt, self.name, tuple(int(data["id"][i]) for i in order), meta={"target": names},
                                generation=overrides))
        return out
