"""Domain plugins: the code a domain needs when prompts and label judges are not enough.

Most domains are pure data (a YAML file). A domain whose candidates have structure
(a typed genome), whose quality needs more LM calls (a target model answering the
candidate) or exact checkers, names a plugin in its YAML file::

    plugin: multitask          # a registered plugin (see below)
    settings: {mode: data}     # the plugin's own options, validated by the plugin

The module defines ``Plugin``, a subclass of :class:`DomainPlugin`. A domain file is
data, so ``plugin:`` names only a *registered* plugin: a built-in one (``multitask``,
``rewrites``, ``redteam``) or one that an installed package declares as an entry point::

    [project.entry-points."qdaif.plugins"]
    my_domain = "my_package.my_domain"       # a module defining Plugin (or "module:Class")

Any other importable module (e.g. a file in the current folder) is imported only when
the user passes ``allow_code=true``: importing it runs its code. The engine keeps
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

__all__ = ["DomainPlugin", "plugin_class", "make_plugin", "registered_plugins", "ENTRY_POINT_GROUP", "BUILTIN_PLUGINS"]

#: Entry-point group in which installed packages register their plugins.
ENTRY_POINT_GROUP = "qdaif.plugins"
#: The plugins shipped with qdaif (also registered as entry points in pyproject.toml).
BUILTIN_PLUGINS = {"multitask": "qdaif.plugins.multitask", "rewrites": "qdaif.plugins.rewrites",
                   "redteam": "qdaif.plugins.redteam"}


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
    #: Whether the domain has a model under test: then :meth:`evaluate` also gets
    #: ``target_lm``, the run's ``target_model`` (the generator itself unless set).
    uses_target: ClassVar[bool] = False

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
            target_lm: Passed only to a plugin with :attr:`uses_target`: the model under
                test (``target_model``; the same object as ``lm`` unless set).

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


def registered_plugins() -> dict[str, str]:
    """Returns the registered plugins: name to ``module`` or ``module:attribute``.

    The built-in plugins and every entry point of the group :data:`ENTRY_POINT_GROUP`
    of the installed packages; an entry point does not override a built-in name.
    """
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **BUILTIN_PLUGINS}


def _import(target: str, name: str, where: str) -> Any:
    """Imports ``module`` or ``module:attribute``; a missing module is a one-line error."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is None or not module_name.startswith(e.name):
            raise  # the plugin itself imports something missing: show that
        raise ConfigError(f"{where}.plugin: cannot import {name!r} (module {module_name} not found)") from None
    if not attr:
        return module
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if obj is None:
        raise ConfigError(f"{where}.plugin: {name!r} is registered as {target}, which does not exist")
    return obj


def plugin_class(name: str, where: str = "domain", *, allow_code: bool = False) -> type[DomainPlugin]:
    """Finds a plugin's class by its registered name (or, with ``allow_code``, any module).

    Registered names are the built-in plugins and the entry points of group
    :data:`ENTRY_POINT_GROUP` (:func:`registered_plugins`); the built-ins are also
    found by module name (``qdaif.plugins.multitask``). An entry point names a module
    defining ``Plugin`` or the class itself (``module:Class``).

    Args:
        name: The domain's ``plugin`` field.
        where: Names the domain in error messages.
        allow_code: Also import ``name`` as a module when it is not registered
            (``qdaif.plugins.NAME`` first, then ``NAME``); its code runs on import.

    Raises:
        ConfigError: ``name`` is not registered (and ``allow_code`` is off), cannot be
            imported, or defines no ``Plugin`` subclass of :class:`DomainPlugin`.
    """
    registered = registered_plugins()
    builtin_modules = {m: m for m in BUILTIN_PLUGINS.values()}
    target = registered.get(name) or builtin_modules.get(name)
    if target is None and not allow_code:
        raise ConfigError(
            f"{where}.plugin: {name!r} is not a registered plugin (registered: {', '.join(sorted(registered))}); "
            f"a domain file names plugins that installed packages register (entry point group '{ENTRY_POINT_GROUP}'), "
            f"or pass allow_code=true to import the module {name!r} and run its code")
    if target is not None:
        obj = _import(target, name, where)
    else:
        modules = [f"qdaif.plugins.{name}", name] if "." not in name else [name]
        obj = None
        for m in modules:
            try:
                obj = importlib.import_module(m)
                break
            except ModuleNotFoundError as e:
                if e.name is None or not m.startswith(e.name):
                    raise  # the plugin itself imports something missing: show that
        if obj is None:
            raise ConfigError(f"{where}.plugin: cannot import {name!r} (tried {', '.join(modules)}); "
                              "give a registered plugin or an importable dotted path")
    cls = obj if isinstance(obj, type) else getattr(obj, "Plugin", None)
    if not (isinstance(cls, type) and issubclass(cls, DomainPlugin)):
        source = getattr(obj, "__name__", name)
        raise ConfigError(f"{where}.plugin: {source} defines no 'Plugin' class derived from qdaif.plugin.DomainPlugin")
    return cls


def make_plugin(domain: "Domain") -> DomainPlugin | None:
    """Builds the plugin of ``domain``, or returns ``None`` for a pure-data domain.

    Raises:
        ConfigError: See :func:`plugin_class` and the plugin's constructor.
    """
    if not domain.plugin:
        return None
    return plugin_class(domain.plugin, f"domain {domain.name}", allow_code=domain.allow_code)(domain=domain)
