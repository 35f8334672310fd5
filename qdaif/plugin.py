"""Domain plugins: the code a domain needs when prompts and label judges are not enough.

Most domains are pure data (a YAML file). A domain whose candidates have structure
(a typed genome), whose quality needs more LM calls (a target model answering the
candidate) or exact checkers, names a plugin in its YAML file::

    plugin: multitask          # qdaif.plugins.multitask, or any importable module
    settings: {mode: data}     # the plugin's own options, validated by the plugin

The module defines ``Plugin``, a subclass of :class:`DomainPlugin`. The engine keeps
its contract: each iteration the algorithm proposes prompts, the generator answers
them in one batched ``generate`` call, the plugin turns each generation into a
candidate text (:meth:`DomainPlugin.parse`) and judges the batch
(:meth:`DomainPlugin.evaluate`, itself batched), and the archive keeps the best text
per cell.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from qdaif.errors import ConfigError

if TYPE_CHECKING:
    from qdaif.archive import EdgeGridArchive
    from qdaif.domain import Domain
    from qdaif.feedback import Evaluation
    from qdaif.lm import LM
    from qdaif.operators import Proposal

__all__ = ["DomainPlugin", "plugin_class", "make_plugin"]


class DomainPlugin(abc.ABC):
    """Hooks of a domain that needs code. Subclasses are named ``Plugin`` in their module.

    A plugin object is built from the domain alone and keeps no state between
    iterations (the run's checkpoint does not hold it); every random choice comes from
    the ``rng`` it is given.

    Args:
        domain: The validated domain; ``domain.settings`` holds the plugin's options.

    Raises:
        ConfigError: A setting is missing or invalid.
    """

    #: Placeholders the domain's judge queries may use besides ``{text}``.
    placeholders: ClassVar[frozenset[str]] = frozenset({"text"})

    def __init__(self, *, domain: "Domain") -> None:
        self.domain = domain

    @classmethod
    def default_seeds(cls, settings: Mapping[str, Any]) -> list[str]:
        """Seed texts used when the domain file lists none."""
        raise ConfigError(f"{cls.__module__}: this plugin ships no seeds; list 'seeds' in the domain file")

    # ---------------------------------------------------------------- search
    def init_proposals(self, archive: "EdgeGridArchive", rng: np.random.Generator, n: int) -> list["Proposal"] | None:
        """Prompts for the seeded initialisation; ``None`` uses the generic LMX over seeds."""
        return None

    def mutate(self, archive: "EdgeGridArchive", rng: np.random.Generator, n: int) -> list["Proposal"] | None:
        """Prompts of QDAIF's mutation step; ``None`` uses the domain's ``mutation`` operator."""
        return None

    def zero_shot(self, rng: np.random.Generator, n: int) -> list["Proposal"] | None:
        """Prompts of a baseline without archive (random search); ``None`` uses the generic one."""
        return None

    def parse(self, proposal: "Proposal", generation: str) -> str | None:
        """Turns one generation into the candidate text stored in the archive.

        Returns:
            The canonical (repaired) text, or ``None`` when nothing usable is left; such
            candidates are dropped and counted as ``dropped_invalid``.
        """
        return generation.strip() or None

    @abc.abstractmethod
    def evaluate(self, texts: Sequence[str], proposals: Sequence["Proposal"], *, lm: "LM", judge_lm: "LM",
                 seed: int) -> "Evaluation":
        """Judges ``n`` candidates in batched LM calls.

        Args:
            texts: ``n`` candidate texts (outputs of :meth:`parse`).
            proposals: The ``n`` proposals they answer (their ``meta`` carries context).
            lm: The generator (e.g. the target model that answers a candidate prompt).
            judge_lm: The judge model.
            seed: Sampling seed for any generation the evaluation makes.

        Returns:
            An :class:`qdaif.feedback.Evaluation`; ``quality`` or ``measures`` are
            ``nan`` where a candidate could not be judged; ``details`` may hold one JSON
            dict per candidate, recorded in ``history.jsonl``.
        """

    def record(self, text: str) -> dict[str, Any]:
        """Extra JSON fields of a candidate in ``history.jsonl`` and ``elites.jsonl`` (e.g. its genome)."""
        return {}

    def feasible_cells(self) -> np.ndarray | None:
        """Mask of the cells a candidate can reach, shape ``domain.dims``; ``None``: all cells.

        When given, ``metrics.jsonl`` adds ``feasible_coverage``: elites over feasible cells.
        """
        return None


def plugin_class(name: str, where: str = "domain") -> type[DomainPlugin]:
    """Imports a plugin: a module under :mod:`qdaif.plugins` by short name, or any dotted module path.

    Raises:
        ConfigError: The module cannot be imported or defines no ``Plugin`` subclass of
            :class:`DomainPlugin`.
    """
    modules = [f"qdaif.plugins.{name}", name] if "." not in name else [name]
    module = None
    for m in modules:
        try:
            module = importlib.import_module(m)
            break
        except ModuleNotFoundError as e:
            if e.name is None or not m.startswith(e.name):
                raise  # the plugin itself imports something missing: show that
    if module is None:
        raise ConfigError(f"{where}.plugin: cannot import {name!r} (tried {', '.join(modules)}); "
                          "give a module under qdaif.plugins or an importable dotted path")
    cls = getattr(module, "Plugin", None)
    if not (isinstance(cls, type) and issubclass(cls, DomainPlugin)):
        raise ConfigError(f"{where}.plugin: module {module.__name__} defines no 'Plugin' class derived from "
                          "qdaif.plugin.DomainPlugin")
    return cls


def make_plugin(domain: "Domain") -> DomainPlugin | None:
    """Builds the plugin of ``domain``, or returns ``None`` for a pure-data domain.

    Raises:
        ConfigError: See :func:`plugin_class` and the plugin's constructor.
    """
    if not domain.plugin:
        return None
    return plugin_class(domain.plugin, f"domain {domain.name}")(domain=domain)
