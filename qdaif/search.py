"""The QDAIF loop: propose with LM mutation, judge with LM feedback, keep elites."""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from qdaif.algorithms import QDAIF, Algorithm, Batch
from qdaif.archive import EdgeGridArchive, archive_state, cells_of, make_archive, restore_archive
from qdaif.domain import Domain, Generation
from qdaif.errors import ConfigError, QDAIFError, RunDirError
from qdaif.feedback import Evaluation, LabelJudge
from qdaif.lm import LM
from qdaif.operators import Proposal
from qdaif.plugin import DomainPlugin, make_plugin
from qdaif.run_dir import CALIBRATION, ELITES, HEATMAP, HISTORY, METRICS, RunDir, atomic_write

__all__ = ["SearchState", "Search", "Interrupted", "iteration_seed", "PIPELINES"]

#: How an iteration's LM calls are ordered; see :class:`Search`.
PIPELINES = ("auto", "barrier", "candidate")


class Interrupted(Exception):
    """The run was stopped by Ctrl-C or SIGTERM; the run directory is resumable."""


def iteration_seed(seed: int, iteration: int) -> int:
    """Returns the LM sampling seed of an iteration, derived from the run seed alone."""
    return int(np.random.SeedSequence([seed, iteration]).generate_state(1)[0])


_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
_COUNTERS = ("iteration", "evaluations", "next_id", "dropped_empty", "dropped_nonfinite", "dropped_invalid",
             "lm_seconds", "wall_seconds", "archive_seed")


def generator_from_state(state: dict[str, Any]) -> np.random.Generator:
    """Rebuilds a NumPy generator from its ``bit_generator.state`` (only NumPy's own bit generators).

    Raises:
        ValueError: An unknown bit generator or a malformed state.
    """
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _BIT_GENERATORS:
        raise ValueError(f"unknown bit generator {name!r}")
    rng = np.random.Generator(getattr(np.random, name)())
    rng.bit_generator.state = state
    return rng


@dataclasses.dataclass
class SearchState:
    """Everything a resumed run needs besides its config; saved as data in the checkpoint."""

    archive: EdgeGridArchive
    rng: np.random.Generator
    algorithm: Algorithm
    iteration: int = 0  # completed iterations
    evaluations: int = 0  # candidates generated
    next_id: int = 0
    dropped_empty: int = 0
    dropped_nonfinite: int = 0
    dropped_invalid: int = 0
    lm_seconds: float = 0.0
    wall_seconds: float = 0.0
    archive_seed: int | None = None

    @classmethod
    def new(cls, domain: Domain, seed: int, algorithm: Algorithm | None = None) -> "SearchState":
        """A fresh state; the algorithm defaults to QDAIF with the paper's seeded init."""
        rng = np.random.default_rng(seed)
        archive_seed = int(rng.integers(2**31))
        archive = make_archive([m.edges for m in domain.measures], seed=archive_seed)
        return cls(archive=archive, rng=rng, algorithm=algorithm or QDAIF(domain=domain), archive_seed=archive_seed)

    def to_checkpoint(self) -> dict[str, Any]:
        """The state as checkpoint data: counters, generator state, archive contents, algorithm state."""
        return {
            **{k: getattr(self, k) for k in _COUNTERS},
            "rng": self.rng.bit_generator.state,
            "archive": archive_state(self.archive),
            "algorithm": {"name": self.algorithm.name, "state": self.algorithm.state_dict()},
        }

    @classmethod
    def from_checkpoint(cls, data: dict[str, Any], *, domain: Domain, algorithm: Algorithm) -> "SearchState":
        """Rebuilds a state saved by :meth:`to_checkpoint`.

        Args:
            data: What :meth:`qdaif.run_dir.RunDir.load_checkpoint` returned.
            domain: The run's domain (its measures give the archive's edges).
            algorithm: The run's algorithm, built from its config; its state is replaced.

        Raises:
            RunDirError: The checkpoint does not fit this domain or algorithm.
        """
        try:
            saved = data["algorithm"]["name"]
            if saved != algorithm.name:
                raise ValueError(f"it was written by algorithm {saved!r}, the config names {algorithm.name!r}")
            algorithm.load_state_dict(data["algorithm"]["state"])
            archive = make_archive([m.edges for m in domain.measures], seed=data["archive_seed"])
            restore_archive(archive, data["archive"])
            counters = {k: data[k] for k in _COUNTERS}
            return cls(archive=archive, rng=generator_from_state(data["rng"]), algorithm=algorithm, **counters)
        except (KeyError, TypeError, ValueError) as e:
            raise RunDirError(f"the checkpoint does not fit the run's config ({type(e).__name__}: {e})") from None


@dataclasses.dataclass
class _Judged:
    """An iteration's candidates after generate, parse and evaluate, in proposal order."""

    proposals: list[Proposal]
    texts: list[str]  # parsed text per proposal ("" where dropped)
    keep: list[int]  # proposals with a text; ``evaluation`` has one row each
    evaluation: Evaluation
    invalid: int  # dropped because the plugin could not parse them


@dataclasses.dataclass
class _Inserted:
    """What the archive did with an iteration's finite candidates."""

    kept: list[int]  # proposals judged finite and added
    ok: np.ndarray  # mask over ``_Judged.keep``
    ids: np.ndarray
    cells: np.ndarray
    accepted: np.ndarray  # holds its cell after the insert
    new_cells: int


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class Search:
    """Runs QDAIF iterations and records them in a run directory.

    Each iteration asks the state's algorithm for ``batch_size`` prompts, makes one
    ``generate`` call (one per distinct generation setting when operators override the
    domain's) and one judge ``score`` call, adds the judged candidates to
    the evaluation archive, lets the algorithm observe them, appends to
    ``history.jsonl`` and ``metrics.jsonl``, rewrites ``elites.jsonl`` and writes the
    checkpoint.

    Args:
        domain: What is searched.
        lm: The generator.
        judge_lm: The judge model (often the same object as ``lm``).
        target_lm: The model under test of a plugin with a target (``uses_target``);
            ``None``: ``lm``.
        run_dir: Where the run is recorded.
        state: Search state (with its algorithm), new or loaded from a checkpoint.
        batch_size: Candidates per iteration.
        seed: The run's seed; LM sampling seeds derive from it and the iteration.
        plot_every: Iterations between heatmap refreshes (0: only at the end).
        refresh: Called with ``archive``, ``domain``, ``iteration`` and ``path`` (the
            heatmap file) to redraw the run's pictures, e.g. :func:`qdaif.plot.draw_archive`;
            ``None`` draws nothing.
        plugin: The domain's plugin, built once per run and shared with the algorithm
            (``None``: the state's algorithm's). It is code, never saved in the checkpoint.
        pipeline: ``barrier`` (all generations, then all judging), ``candidate`` (each
            candidate is judged as soon as its generation returns; for backends whose
            requests run concurrently, e.g. ``openai``) or ``auto`` (``candidate`` when
            every model is concurrent and the domain has no plugin). Both give the same
            archive for a seed.

    Raises:
        ConfigError: An unknown ``pipeline``.
    """

    def __init__(
        self,
        *,
        domain: Domain,
        lm: LM,
        judge_lm: LM,
        run_dir: RunDir,
        state: SearchState,
        batch_size: int,
        seed: int,
        plot_every: int = 0,
        refresh: Callable[..., None] | None = None,
        plugin: DomainPlugin | None = None,
        pipeline: str = "auto",
        target_lm: LM | None = None,
    ) -> None:
        self.domain = domain
        self.lm = lm
        self.judge_lm = judge_lm
        self.target_lm = lm if target_lm is None else target_lm
        self.plugin = plugin if plugin is not None else getattr(state.algorithm, "plugin", None)
        if self.plugin is None and domain.plugin:
            self.plugin = make_plugin(domain)
        self.judge = None if self.plugin else LabelJudge(domain=domain, lm=judge_lm)
        if self.judge is not None and any(s.calibrate for s in self.judge.specs):
            self._load_or_compute_calibration(run_dir)
        feasible = self.plugin.feasible_cells() if self.plugin else None
        self.feasible = None if feasible is None else np.asarray(feasible, dtype=bool).reshape(-1)
        self.run_dir = run_dir
        self.state = state
        self.batch_size = batch_size
        self.seed = seed
        self.plot_every = plot_every
        self.refresh = refresh
        if pipeline not in PIPELINES:
            raise ConfigError(f"pipeline must be one of {', '.join(PIPELINES)}, got {pipeline!r}")
        self.pipeline = pipeline
        self._pool = None  # the pipeline's threads, made on first use

    def _load_or_compute_calibration(self, run_dir: RunDir) -> None:
        """Contextual calibration is computed once per run and kept in ``judge_calibration.json``."""
        path = run_dir.file(CALIBRATION)
        if path.exists():
            self.judge.calibration = {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
        self.judge._ensure_calibration()
        atomic_write(path, (json.dumps(self.judge.calibration, indent=1) + "\n").encode("utf-8"))

    # ------------------------------------------------------------------ steps
    def _lms(self) -> list[LM]:
        return list({id(x): x for x in (self.lm, self.judge_lm, self.target_lm)}.values())

    def _cache_counts(self) -> tuple[int, int]:
        lms = self._lms()
        return sum(int(getattr(m, "hits", 0)) for m in lms), sum(int(getattr(m, "misses", 0)) for m in lms)

    def _server_counts(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for m in self._lms():
            out.update(m.server_counters())
        return out

    @property
    def pipelined(self) -> bool:
        """Whether iterations run per candidate without barriers (see ``pipeline``)."""
        if self.pipeline == "barrier" or self.plugin is not None:
            return False
        return self.pipeline == "candidate" or all(m.concurrent for m in self._lms())

    def step(self) -> dict[str, Any]:
        """Runs one iteration: propose, generate, parse, evaluate, insert, record; returns its metrics line."""
        t_start = time.perf_counter()
        before = self._cache_counts(), self._server_counts()
        iteration = self.state.iteration + 1
        proposals = self.propose()
        t0 = time.perf_counter()
        judged = (self._pipelined if self.pipelined else self._barrier)(proposals, iteration)
        lm_seconds = time.perf_counter() - t0
        inserted = self.insert(judged, iteration)
        return self.record(judged, inserted, iteration=iteration, lm_seconds=lm_seconds, t_start=t_start,
                           before=before)

    def propose(self) -> list[Proposal]:
        """Asks the algorithm for ``batch_size`` prompts (mutation of elites, or seeds)."""
        s = self.state
        return s.algorithm.propose(s.archive, s.evaluations, s.rng, self.batch_size)

    def _settings(self, proposal: Proposal) -> Generation:
        """The domain's generation settings with the operator's overrides (e.g. a one-line edit's stop)."""
        over = {k: tuple(v) if k == "stop" else v for k, v in proposal.generation.items()}
        return dataclasses.replace(self.domain.generation, **over)

    def _groups(self, proposals: list[Proposal]) -> dict[Generation, list[int]]:
        """Proposal indices by generation setting: one batched call each (one call unless operators override)."""
        groups: dict[Generation, list[int]] = {}
        for i, p in enumerate(proposals):
            groups.setdefault(self._settings(p), []).append(i)
        return groups

    def generate(self, proposals: list[Proposal], iteration: int) -> list[str]:
        """One batched ``generate`` call per generation setting; each text cut to the domain's ``max_lines``."""
        raw = [""] * len(proposals)
        for g, idx in self._groups(proposals).items():
            out = self.lm.generate([proposals[i].prompt for i in idx], max_tokens=g.max_tokens, temperature=g.temperature,
                                   top_p=g.top_p, stop=g.stop, seed=iteration_seed(self.seed, iteration))
            for i, text in zip(idx, out):
                raw[i] = g.cut(text)
        return raw

    def parse(self, proposal: Proposal, raw: str) -> tuple[str | None, bool]:
        """A generation's candidate text: ``(text, invalid)``; ``text`` is ``None`` when it is dropped.

        A blank generation is dropped as empty; one the domain's plugin cannot read is
        dropped as invalid.
        """
        text = raw.strip()
        if not text:
            return None, False
        if self.plugin:
            parsed = self.plugin.parse(proposal, raw)
            return parsed, parsed is None
        return text, False

    def evaluate(self, texts: list[str], proposals: list[Proposal], iteration: int) -> Evaluation:
        """Judges ``n`` candidate texts in batched ``score`` calls (the plugin's or the label judges')."""
        if self.plugin:
            target = {"target_lm": self.target_lm} if self.plugin.uses_target else {}
            return self.plugin.evaluate(texts, proposals, lm=self.lm, judge_lm=self.judge_lm,
                                        seed=iteration_seed(self.seed + 1, iteration), **target)
        return self.judge.evaluate(texts)

    def _barrier(self, proposals: list[Proposal], iteration: int) -> "_Judged":
        """Generate everything, then parse, then judge everything: two batched calls."""
        raw = self.generate(proposals, iteration)
        parsed = [self.parse(p, r) for p, r in zip(proposals, raw)]
        keep = [i for i, (t, _) in enumerate(parsed) if t is not None]
        ev = self.evaluate([parsed[i][0] for i in keep], [proposals[i] for i in keep], iteration)
        return _Judged(proposals, [t or "" for t, _ in parsed], keep, ev, invalid=sum(bad for _, bad in parsed))

    def _pipelined(self, proposals: list[Proposal], iteration: int) -> "_Judged":
        """Each candidate's judge requests go out as soon as its own generation returns.

        Every candidate keeps the sampling seed it has in a batched call (its row in its
        generation group) and results are placed in proposal order, so the archive is
        the one :meth:`_barrier` gives for the same seed and servers.
        """
        rows = {i: (g, row) for g, idx in self._groups(proposals).items() for row, i in enumerate(idx)}
        seed = iteration_seed(self.seed, iteration)

        def one(i: int) -> tuple[str | None, bool, Evaluation | None]:
            g, row = rows[i]
            out = self.lm.generate([proposals[i].prompt], max_tokens=g.max_tokens, temperature=g.temperature,
                                   top_p=g.top_p, stop=g.stop, seed=seed, rows=[row])
            text, invalid = self.parse(proposals[i], g.cut(out[0]))
            return text, invalid, None if text is None else self.judge.evaluate([text])

        done = self._run_concurrently(one, range(len(proposals)))
        keep = [i for i, (t, _, _) in enumerate(done) if t is not None]
        ev = Evaluation.concat([done[i][2] for i in keep], like=self.judge.evaluate([]))
        return _Judged(proposals, [t or "" for t, _, _ in done], keep, ev, invalid=sum(bad for _, bad, _ in done))

    def _run_concurrently(self, fn: Callable[[int], Any], items: Any) -> list[Any]:
        """``[fn(i) for i in items]`` on the pipeline's threads, in order; an error or Ctrl-C abandons the rest."""
        import concurrent.futures

        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(self.batch_size, 64)),
                                                               thread_name_prefix="qdaif-pipeline")
        futures = [self._pool.submit(fn, i) for i in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            for m in self._lms():
                m.abandon_requests()
            try:
                concurrent.futures.wait(futures, timeout=10)
            finally:
                for m in self._lms():
                    m.accept_requests()
            raise

    def insert(self, judged: "_Judged", iteration: int) -> "_Inserted":
        """Adds the finite candidates to the archive; the algorithm observes which were kept."""
        s, ev = self.state, judged.evaluation
        ok = ev.finite
        kept = [judged.keep[j] for j in np.flatnonzero(ok)]
        n = len(kept)
        ids = np.arange(s.next_id, s.next_id + n, dtype=np.int64)
        quality, measures = ev.quality[ok], ev.measures[ok]
        before = len(s.archive)
        texts = [judged.texts[i] for i in kept]
        if n:
            s.archive.add(solution=np.array(texts, dtype=object), objective=quality, measures=measures, id=ids,
                          iteration=np.full(n, iteration, dtype=np.int32))
            # pyribs reports NEW for every candidate of a batch that lands in an empty
            # cell, though only the best is kept: ask the archive who holds each cell.
            accepted = s.archive.retrieve(measures)[1]["id"] == ids
            cells = cells_of(s.archive, measures)
        else:
            accepted, cells = np.zeros(0, dtype=bool), np.zeros((0, len(self.domain.measures)), dtype=int)
        s.algorithm.observe(Batch(texts=texts, quality=quality, measures=measures, ids=ids,
                                  parents=[judged.proposals[i].parents for i in kept], accepted=accepted))
        return _Inserted(kept=kept, ok=ok, ids=ids, cells=cells, accepted=accepted, new_cells=len(s.archive) - before)

    def _history(self, judged: "_Judged", ins: "_Inserted", iteration: int) -> list[dict[str, Any]]:
        """One ``history.jsonl`` row per inserted candidate."""
        ev = judged.evaluation
        labels = {name: p[ins.ok] for name, p in ev.label_probs.items()}
        details = [ev.details[j] for j in np.flatnonzero(ins.ok)] if ev.details is not None else None
        rows = []
        for j, i in enumerate(ins.kept):
            p, text = judged.proposals[i], judged.texts[i]
            row = {"id": int(ins.ids[j]), "iteration": iteration, "operator": p.operator, "parents": list(p.parents),
                   "text": text, "quality": float(ev.quality[ins.ok][j]), "measures": ev.measures[ins.ok][j].tolist(),
                   "cell": ins.cells[j].tolist(), "bins": self._bin_names(ins.cells[j]),
                   "accepted": bool(ins.accepted[j]), "labels": {k: v[j].round(6).tolist() for k, v in labels.items()}}
            if p.meta:
                row["meta"] = p.meta
            if self.plugin:
                row.update(self.plugin.record(text))
            if details is not None:
                row["details"] = details[j]
            rows.append(row)
        return rows

    def record(self, judged: "_Judged", ins: "_Inserted", *, iteration: int, lm_seconds: float, t_start: float,
               before: tuple[Any, Any]) -> dict[str, Any]:
        """Updates the counters, appends history and metrics, rewrites the elites, saves the checkpoint."""
        s = self.state
        n = len(judged.proposals)
        dropped = {"dropped_empty": n - len(judged.keep) - judged.invalid,
                   "dropped_nonfinite": len(judged.keep) - len(ins.kept), "dropped_invalid": judged.invalid}
        s.iteration, s.evaluations, s.next_id = iteration, s.evaluations + n, s.next_id + len(ins.kept)
        for k, v in dropped.items():
            setattr(s, k, getattr(s, k) + v)
        self.run_dir.append(HISTORY, self._history(judged, ins, iteration))
        self.run_dir.write_jsonl(ELITES, self.elites())
        wall = time.perf_counter() - t_start
        s.lm_seconds += lm_seconds
        s.wall_seconds += wall
        metrics = {**self._archive_metrics(), "operator": ",".join(sorted({p.operator for p in judged.proposals})),
                   "new_cells": ins.new_cells, "improved": int(ins.accepted.sum()) - ins.new_cells, **dropped,
                   **self._lm_metrics(before), "lm_seconds": round(lm_seconds, 4), "wall_seconds": round(wall, 4),
                   "elapsed_seconds": round(s.wall_seconds, 3)}
        self.run_dir.append(METRICS, [metrics])
        self.run_dir.save_checkpoint(s.to_checkpoint())
        if self.plot_every and iteration % self.plot_every == 0:
            self.plot()
        return metrics

    def _archive_metrics(self) -> dict[str, Any]:
        s = self.state
        stats = s.archive.stats
        return {"iteration": s.iteration, "evaluations": s.evaluations, "qd_score": float(stats.qd_score),
                "coverage": float(stats.coverage),
                "max_quality": None if stats.obj_max is None else float(stats.obj_max),
                "num_elites": int(stats.num_elites), **self._feasible_coverage()}

    def _lm_metrics(self, before: tuple[Any, Any]) -> dict[str, Any]:
        """Cache hits/misses of the iteration and, for server backends, each server's counts in it."""
        (hits0, misses0), servers0 = before
        hits, misses = self._cache_counts()
        out: dict[str, Any] = {"cache_hits": hits - hits0, "cache_misses": misses - misses0}
        servers = self._server_counts()
        if servers:
            out["servers"] = {url: {k: (v if isinstance(v, bool) else v - servers0.get(url, {}).get(k, 0))
                                    for k, v in c.items()} for url, c in servers.items()}
        return out

    def _feasible_coverage(self) -> dict[str, float]:
        if self.feasible is None:
            return {}
        occupied = self.state.archive.data("index")
        return {"feasible_coverage": float(self.feasible[occupied].sum() / self.feasible.sum())}

    def elites(self) -> list[dict[str, Any]]:
        """The archive as JSON rows: text, quality, measures, cell, bins (measure name -> bin name), id, iteration."""
        a = self.state.archive
        d = a.data()
        cells = a.int_to_grid_index(d["index"]) if len(d["index"]) else np.zeros((0, len(a.dims)), int)
        order = np.lexsort(cells.T[::-1]) if len(cells) else []
        extra = self.plugin.record if self.plugin else (lambda text: {})
        return [
            {
                "text": d["solution"][k],
                "quality": float(d["objective"][k]),
                "measures": d["measures"][k].tolist(),
                "cell": cells[k].tolist(),
                "bins": self._bin_names(cells[k]),
                "id": int(d["id"][k]),
                "iteration": int(d["iteration"][k]),
                **extra(d["solution"][k]),
            }
            for k in order
        ]

    def _bin_names(self, cell: np.ndarray) -> dict[str, str]:
        """Measure name -> the name of the cell's bin: its category, or its value range ``"lo-hi"``."""
        out = {}
        for m, k in zip(self.domain.measures, cell):
            k = int(k)
            out[m.name] = m.categories[k] if m.categories else f"{m.edges[k]:g}-{m.edges[k + 1]:g}"
        return out

    def plot(self) -> None:
        """Asks the run's ``refresh`` callback (if any) to redraw its pictures; the loop draws nothing itself."""
        if self.refresh is not None:
            self.refresh(archive=self.state.archive, domain=self.domain, iteration=self.state.iteration,
                         path=self.run_dir.file(HEATMAP))

    # ------------------------------------------------------------------- runs
    def back_to_checkpoint(self) -> SearchState:
        """Replaces the state by the last checkpoint and rewrites ``elites.jsonl`` to match it (if it can).

        Raises:
            RunDirError: The checkpoint cannot be read.
        """
        self.state = SearchState.from_checkpoint(self.run_dir.load_checkpoint(), domain=self.domain,
                                                 algorithm=self.state.algorithm)
        try:
            self.run_dir.write_jsonl(ELITES, self.elites())
        except RunDirError:
            pass  # a full disk: resume rewrites it from the checkpoint
        return self.state

    def run(self, iterations: int, *, progress: bool = True) -> SearchState:
        """Runs until ``iterations`` iterations are complete in total.

        Raises:
            Interrupted: Ctrl-C or SIGTERM; the state of the last finished iteration is
                on disk (checkpoint, elites, heatmap).
        """
        from tqdm.auto import tqdm

        s = self.state
        if s.iteration == 0:
            self.run_dir.save_checkpoint(s.to_checkpoint())
        bar = tqdm(total=iterations, initial=min(s.iteration, iterations), disable=not progress,
                   desc=self.domain.name, unit="it", dynamic_ncols=True)
        try:
            with _sigterm_as_interrupt():
                while s.iteration < iterations:
                    m = self.step()
                    bar.update(1)
                    rate = s.evaluations / s.wall_seconds if s.wall_seconds else 0.0
                    bar.set_postfix(evals=m["evaluations"], qd=f"{m['qd_score']:.2f}",
                                    cov=f"{m['coverage']:.0%}", ev_s=f"{rate:.1f}", refresh=False)
        except QDAIFError:
            bar.close()
            self.back_to_checkpoint()
            raise
        except KeyboardInterrupt:
            bar.close()
            # The archive may hold part of an unfinished iteration: go back to the
            # checkpoint so that what is on disk is one consistent state.
            s = self.back_to_checkpoint()
            try:
                self.plot()
            except RunDirError:
                pass  # e.g. a full disk: the heatmap is redrawn on resume
            raise Interrupted(f"interrupted after iteration {s.iteration}") from None
        bar.close()
        self.plot()
        return s
