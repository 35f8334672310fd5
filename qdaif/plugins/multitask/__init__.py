"""The ``multitask`` domain: QD over multi-task prompts (MTI-style), judged by a target model's answers.

A candidate is a structured prompt (:class:`Genome`): a shared context and 1-5 typed
sub-tasks, each answered inside ``<taskN></taskN>`` tags, later ones possibly using
earlier answers. Quality combines a well-posedness judge ``W`` with the fraction ``F``
of sub-tasks the target model follows (exact checkers where a reference is
computable, a label judge otherwise); the measures are the number of sub-tasks and
the dependency depth. See ``docs/multitask.md``.
"""

from qdaif.plugins.multitask.checkers import Reference, check, extract_answers, reference_of, references
from qdaif.plugins.multitask.genome import TYPES, Genome, SubTask, parse_text, repair
from qdaif.plugins.multitask.plugin import Plugin, load_items

__all__ = ["Plugin", "Genome", "SubTask", "TYPES", "Reference", "parse_text", "repair", "references", "reference_of",
           "check", "extract_answers", "load_items"]
