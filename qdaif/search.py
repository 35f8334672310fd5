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
from qdaif.domain import Domain
from qdaif.errors import QDAIFError, RunDirError
from qdaif.feedback import LabelJudge
from qdaif.lm import LM
from qdaif.plugin import make_plugin
from qdaif.run_dir import CALIBRATION, ELITES, HEATMAP, HISTORY, METRICS, RunDir, atomic_write

__all__ = ["SearchState", "Search", "Interrupted", "iteration_seed"]


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
        run_dir: Where the run is recorded.
        state: Search state (with its algorithm), new or loaded from a checkpoint.
        batch_size: Candidates per iteration.
        seed: The run's seed; LM sampling seeds derive from it and the iteration.
        plot_every: Iterations between heatmap refreshes (0: only at the end).
        refresh: Called with ``archive``, ``domain``, ``iteration`` and ``path`` (the
            heatmap file) to redraw the run's pictures, e.g. :func:`qdaif.plot.draw_archive`;
            ``None`` draws nothing.
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
    ) -> None:
        self.domain = domain
        self.lm = lm
        self.judge_lm = judge_lm
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

    def _load_or_compute_calibration(self, run_dir: RunDir) -> None:
        """Contextual calibration is computed once per run and kept in ``judge_calibration.json``."""
        path = run_dir.file(CALIBRATION)
        if path.exists():
            self.judge.calibration = {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
        self.judge._ensure_calibration()
        atomic_write(path, (json.dumps(self.judge.calibration, indent=1) + "\n").encode("utf-8"))

    # ------------------------------------------------------------------ steps
    def _cache_counts(self) -> tuple[int, int]:
        lms = {id(x): x for x in (self.lm, self.judge_lm)}.values()
        return sum(int(getattr(m, "hits", 0)) for m in lms), sum(int(getattr(m, "misses", 0)) for m in lms)

    def step(self) -> dict[str, Any]:
        """Runs one iteration; returns its metrics line."""
        t_start = time.perf_counter()
        hits0, misses0 = self._cache_counts()
        s, gen = self.state, self.domain.generation
        iteration = s.iteration + 1
        proposals = s.algorithm.propose(s.archive, s.evaluations, s.rng, self.batch_size)

        t0 = time.perf_counter()
        # One batched call per distinct generation setting: one call unless an operator
        # asks for other settings (e.g. a one-line edit that stops at a newline).
        groups: dict[Any, list[int]] = {}
        for i, p in enumerate(proposals):
            g = dataclasses.replace(gen, **{k: tuple(v) if k == "stop" else v for k, v in p.generation.items()})
            groups.setdefault(g, []).append(i)
        raw = [""] * len(proposals)
        for g, idx in groups.items():
            out = self.lm.generate(
                [proposals[i].prompt for i in idx],
                max_tokens=g.max_tokens,
                temperature=g.temperature,
                top_p=g.top_p,
                stop=g.stop,
                seed=iteration_seed(self.seed, iteration),
            )
            for i, text in zip(idx, out):
                raw[i] = g.cut(text)
        lm_seconds = time.perf_counter() - t0
        texts = [t.strip() for t in raw]
        keep = [i for i, t in enumerate(texts) if t]
        dropped_invalid = 0
        if self.plugin:
            parsed = {i: self.plugin.parse(proposals[i], raw[i]) for i in keep}
            dropped_invalid = sum(v is None for v in parsed.values())
            keep = [i for i in keep if parsed[i] is not None]
            for i in keep:
                texts[i] = parsed[i]
        t0 = time.perf_counter()
        if self.plugin:
            ev = self.plugin.evaluate([texts[i] for i in keep], [proposals[i] for i in keep], lm=self.lm,
                                      judge_lm=self.judge_lm, seed=iteration_seed(self.seed + 1, iteration))
        else:
            ev = self.judge.evaluate([texts[i] for i in keep])
        lm_seconds += time.perf_counter() - t0

        ok = ev.finite
        kept = [keep[j] for j in np.flatnonzero(ok)]
        n_ok = len(kept)
        ids = np.arange(s.next_id, s.next_id + n_ok, dtype=np.int64)
        quality, measures = ev.quality[ok], ev.measures[ok]
        before = len(s.archive)
        if n_ok:
            s.archive.add(
                solution=np.array([texts[i] for i in kept], dtype=object),
                objective=quality,
                measures=measures,
                id=ids,
                iteration=np.full(n_ok, iteration, dtype=np.int32),
            )
            # pyribs reports NEW for every candidate of a batch that lands in an empty
            # cell, though only the best is kept: ask the archive who holds each cell.
            accepted = s.archive.retrieve(measures)[1]["id"] == ids
            cells = cells_of(s.archive, measures)
        else:
            accepted, cells = np.zeros(0, dtype=bool), np.zeros((0, len(self.domain.measures)), dtype=int)
        new_cells = len(s.archive) - before
        s.algorithm.observe(Batch(texts=[texts[i] for i in kept], quality=quality, measures=measures, ids=ids,
                                  parents=[proposals[i].parents for i in kept], accepted=accepted))
        labels = {name: p[ok] for name, p in ev.label_probs.items()}
        details = [ev.details[j] for j in np.flatnonzero(ok)] if ev.details is not None else None
        history = []
        for j, i in enumerate(kept):
            row = {
                "id": int(ids[j]),
                "iteration": iteration,
                "operator": proposals[i].operator,
                "parents": list(proposals[i].parents),
                "text": texts[i],
                "quality": float(quality[j]),
                "measures": measures[j].tolist(),
                "cell": cells[j].tolist(),
                "bins": self._bin_names(cells[j]),
                "accepted": bool(accepted[j]),
                "labels": {name: p[j].round(6).tolist() for name, p in labels.items()},
            }
            if proposals[i].meta:
                row["meta"] = proposals[i].meta
            if self.plugin:
                row.update(self.plugin.record(texts[i]))
            if details is not None:
                row["details"] = details[j]
            history.append(row)
        s.iteration = iteration
        s.evaluations += len(proposals)
        s.next_id += n_ok
        dropped_empty = len(texts) - len(keep)
        dropped_nonfinite = len(keep) - n_ok
        dropped_empty -= dropped_invalid
        s.dropped_invalid += dropped_invalid
        s.dropped_empty += dropped_empty
        s.dropped_nonfinite += dropped_nonfinite
        stats = s.archive.stats

        self.run_dir.append(HISTORY, history)
        self.run_dir.write_jsonl(ELITES, self.elites())
        wall = time.perf_counter() - t_start
        s.lm_seconds += lm_seconds
        s.wall_seconds += wall
        metrics = {
            "iteration": iteration,
            "evaluations": s.evaluations,
            "qd_score": float(stats.qd_score),
            "coverage": float(stats.coverage),
            "max_quality": None if stats.obj_max is None else float(stats.obj_max),
            "num_elites": int(stats.num_elites),
            **self._feasible_coverage(),
            "operator": ",".join(sorted({p.operator for p in proposals})),
            "new_cells": new_cells,
            "improved": int(accepted.sum()) - new_cells,
            "dropped_empty": dropped_empty,
            "dropped_nonfinite": dropped_nonfinite,
            "dropped_invalid": dropped_invalid,
            "cache_hits": self._cache_counts()[0] - hits0,
            "cache_misses": self._cache_counts()[1] - misses0,
            "lm_seconds": round(lm_seconds, 4),
            "wall_seconds": round(wall, 4),
            "elapsed_seconds": round(s.wall_seconds, 3),
        }
        self.run_dir.append(METRICS, [metrics])
        self.run_dir.save_checkpoint(s.to_checkpoint())
        if self.plot_every and iteration % self.plot_every == 0:
            self.plot()
        return metrics

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
