"""The creative-writing domains (stories about a spy and a politician, poetry): configs,
judge prompts, bins, categorical cells and rating values, and short runs with the scripted fake LM."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from qdaif.archive import cells_of, make_archive
from qdaif.cli import compose_config
from qdaif.domain import LabelJudgeSpec, domain_from_config, domain_names, project_root
from qdaif.feedback import LabelJudge, label_probabilities
from qdaif.lm import LM
from tests.helpers import run_cli

STORIES = ("stories_genre", "stories_ending", "stories")
CREATIVE = (*STORIES, "poetry")
EDGES_1D = (0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.10, 0.20, 0.50, 0.80, 0.90, 0.95, 0.96, 0.97, 0.98,
            0.985, 0.99, 0.995, 1.0)
EDGES_2D = (0.0, 0.005, 0.02, 0.05, 0.20, 0.50, 0.80, 0.95, 0.98, 0.995, 1.0)
GENRES = ("haiku", "sonnet", "ballad", "limerick", "hymn")
TONES = ("happy", "dark", "mysterious", "romantic", "reflective")


def load(name: str):
    return domain_from_config(compose_config([f"domain={name}", "model=scripted_fake"]).domain)


@pytest.mark.parametrize("name", CREATIVE)
def test_domain_loads_and_its_judge_prompts_render(name):
    d = load(name)
    assert d.name == name and name in domain_names()
    for spec in (d.quality, *(m.judge for m in d.measures)):
        prefix, suffix = spec.prompt_parts("CANDIDATE TEXT")
        # Few-shot block shared by every candidate, then the candidate's own query.
        assert prefix.endswith("\n\n") and not prefix.endswith("\n\n\n"), spec.name
        assert "CANDIDATE TEXT" in suffix and "CANDIDATE TEXT" not in prefix
        assert suffix.endswith(":"), spec.name  # the label continues right after "Topic:", "Form:"...
        assert all(label.startswith(" ") and label.strip() for label in spec.labels)
        # Every label appears as an answer in the few-shot examples.
        assert all(f":{label}\n" in prefix for label in spec.labels), spec.name


@pytest.mark.parametrize("name", STORIES)
def test_stories_settings(name):
    d = load(name)
    assert d.mutation == "lmx_near"
    assert d.generation.max_tokens == 100 and d.generation.temperature == 0.8 and d.generation.top_p == 0.95
    assert set(d.generation.stop) == {"\n", "#"}
    assert len(d.seeds) >= 3
    for seed in d.seeds:  # one paragraph: generation stops at the first newline
        assert "\n" not in seed and "spy" in seed.lower() and 2 <= seed.count(". ") + 1 <= 4
    assert d.quality.kind == "label" and d.quality.labels == (" spy", " other")
    for m in d.measures:
        assert m.judge.kind == "label" and len(m.anchors) == 2 and m.judge.logit_scale > 1


def test_stories_archives_use_the_paper_bins():
    genre, ending, both = (load(n) for n in STORIES)
    assert genre.dims == (20,) and [m.name for m in genre.measures] == ["genre"]
    assert ending.dims == (20,) and [m.name for m in ending.measures] == ["ending"]
    assert genre.measures[0].edges == EDGES_1D and ending.measures[0].edges == EDGES_1D
    assert both.dims == (10, 10) and [m.name for m in both.measures] == ["genre", "ending"]
    assert all(m.edges == EDGES_2D for m in both.measures)
    archive = make_archive([m.edges for m in both.measures])
    assert cells_of(archive, np.array([[0.001, 0.999], [0.5, 0.5], [0.97, 0.03], [1.0, 0.0]])).tolist() == [
        [0, 9], [5, 5], [7, 2], [9, 0]]


def test_the_three_stories_domains_share_prompts_and_judges():
    genre, ending, both = (load(n) for n in STORIES)
    for d in (genre, ending):
        assert (d.seeds, d.lmx, d.generation, d.quality) == (both.seeds, both.lmx, both.generation, both.quality)
    assert genre.measures[0].judge == both.measures[0].judge and genre.measures[0].anchors == both.measures[0].anchors
    assert ending.measures[0].judge == both.measures[1].judge and ending.measures[0].anchors == both.measures[1].anchors


def test_poetry_is_a_5x5_categorical_archive_with_rewrite():
    d = load("poetry")
    assert d.dims == (5, 5)
    genre, tone = d.measures
    assert (genre.name, genre.categories) == ("genre", GENRES) and (tone.name, tone.categories) == ("tone", TONES)
    assert genre.judge.labels == tuple(f" {g}" for g in GENRES) and tone.judge.labels == tuple(f" {t}" for t in TONES)
    assert genre.judge.kind == tone.judge.kind == "categorical"
    assert d.mutation == "lmx_rewrite" and d.rewrite.header.format(tone="dark", genre="sonnet") == "A dark sonnet:"
    assert d.zero_shot.strip() and d.generation.max_tokens == 80 and "###" in d.generation.stop
    assert "\n" not in d.generation.stop  # poems have several lines
    assert len(d.seeds) >= 5 and all(s.count("\n") >= 2 for s in d.seeds)
    # Seeds carry no cell header: the judges must read the poem, not a "A dark sonnet:" line.
    assert not any(s.splitlines()[0].rstrip().endswith(":") for s in d.seeds)
    prompt = d.lmx.render(d.seeds[:3])
    assert prompt.endswith(d.lmx.instruction) and prompt.count(d.lmx.separator) == 3
    rewrite = d.rewrite.render([({"genre": "haiku", "tone": "happy"}, d.seeds[0])], {"genre": "hymn", "tone": "dark"})
    assert rewrite == f"A happy haiku:\n{d.seeds[0]}{d.rewrite.separator}A dark hymn:\n"


def test_categorical_value_k_lands_in_cell_k():
    d = load("poetry")
    archive = make_archive([m.edges for m in d.measures])
    values = np.array([[g, t] for g in range(5) for t in range(5)], dtype=float)
    assert cells_of(archive, values).tolist() == values.astype(int).tolist()
    # The value of a categorical judge is the index of its most likely label.
    probs = np.eye(5)[[3, 0, 4]] * 0.6 + 0.08
    assert d.measures[0].judge.value(probs).tolist() == [3.0, 0.0, 4.0]


def test_rating_is_the_expected_value_of_the_label_distribution():
    ten = LabelJudgeSpec(name="q", query="{text}", labels=tuple(f" {k}" for k in range(1, 11)), kind="rating",
                         values=tuple(float(k) for k in range(1, 11)))
    probs = np.zeros((2, 10))
    probs[0, [6, 8]] = 0.5  # half 7, half 9
    probs[1] = 0.1  # uniform
    assert ten.value(probs) == pytest.approx([8.0, 5.5])
    # Poetry's quality: a two-level scale, " poem" = 10 and " other" = 1, after logit_scale.
    q = load("poetry").quality
    assert q.kind == "rating" and q.labels == (" poem", " other") and q.values == (10.0, 1.0)
    logps = [[math.log(0.75), math.log(0.25)], [math.log(0.5), math.log(0.5)]]
    p = label_probabilities(logps, q.logit_scale)
    p_poem = 0.75**q.logit_scale / (0.75**q.logit_scale + 0.25**q.logit_scale)
    assert q.value(p) == pytest.approx([1 + 9 * p_poem, 5.5])
    assert q.value(np.array([[np.nan, 0.5]])).tolist() == [pytest.approx(np.nan, nan_ok=True)]


class _FixedLM(LM):
    """Scores the first label of every request highest; records the requests."""

    backend = "fixed"

    def __init__(self):
        self.requests = []

    def generate(self, prompts, **kw):
        raise NotImplementedError

    def score(self, requests):
        self.requests += list(requests)
        return [[-1.0] + [-3.0] * (len(r.continuations) - 1) for r in requests]


def test_poetry_judge_end_to_end_with_a_fixed_model():
    d = load("poetry")
    lm = _FixedLM()
    ev = LabelJudge(domain=d, lm=lm).evaluate(["roses\nare red", "violets\nare blue"])
    assert len(lm.requests) == 2 * 3
    assert ev.measures.tolist() == [[0.0, 0.0], [0.0, 0.0]]  # haiku, happy
    p = 1 / (1 + math.exp(-2 * d.quality.logit_scale))
    assert ev.quality == pytest.approx([1 + 9 * p] * 2)


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in (project_root() / path).read_text().splitlines() if line.strip()]


def test_stories_labelled_set():
    rows = _rows("benchmarks/data/stories_labelled.jsonl")
    assert len(rows) >= 40 and len({r["text"] for r in rows}) == len(rows)
    good = [r for r in rows if r["good"]]
    assert len(rows) - len(good) >= 8
    for r in good:
        assert r["genre"] in ("horror", "romance") and r["ending"] in ("happy", "tragic") and "\n" not in r["text"]
    cells = {(r["genre"], r["ending"]) for r in good}
    assert len(cells) == 4
    assert {r["split"] for r in rows} == {"dev", "holdout"}
    # The labelled stories are not the judges' few-shot examples or the seeds.
    d = load("stories")
    shots = "".join(s.shots for s in (d.quality, *(m.judge for m in d.measures)))
    assert not any(r["text"] in shots or r["text"] in d.seeds for r in rows)


def test_poems_labelled_set():
    rows = _rows("benchmarks/data/poems_labelled.jsonl")
    assert len(rows) >= 30 and len({r["text"] for r in rows}) == len(rows)
    assert sum(not r["good"] for r in rows) >= 5
    good = [r for r in rows if r["good"]]
    assert {r["genre"] for r in good} == set(GENRES) and {r["tone"] for r in good} == set(TONES)
    d = load("poetry")
    shots = "".join(s.shots for s in (d.quality, *(m.judge for m in d.measures)))
    assert not any(r["text"] in shots or r["text"] in d.seeds for r in rows)
    # The dev split, on which the prompts are chosen, has >= 60 rows and full-length forms.
    dev = [r for r in rows if r["split"] == "dev"]
    assert len(dev) >= 60 and sum(r["good"] and r["text"].count("\n") >= 13 for r in dev) >= 8


def test_poetry_quality_does_not_fall_for_full_length_poems(embedded_lm):
    """The real model: full-length good dev poems (14-line sonnets, 4-quatrain ballads,
    3-stanza hymns) score above the middle of the range, long poem-shaped junk below it."""
    d = load("poetry")
    rows = [r for r in _rows("benchmarks/data/poems_labelled.jsonl") if r["split"] == "dev"]
    long_good = [r["text"] for r in rows if r["good"] and r["genre"] in ("sonnet", "ballad", "hymn")
                 and r["text"].count("\n") >= 11]
    junk = [r["text"] for r in rows if not r["good"] and r["text"].count("\n") >= 5]
    assert len(long_good) >= 8 and len(junk) >= 4
    ev = LabelJudge(domain=d, lm=embedded_lm).evaluate(long_good + junk)
    good_q, junk_q = ev.quality[: len(long_good)], ev.quality[len(long_good):]
    assert (good_q > 5.5).mean() >= 0.8 and (junk_q < 5.5).all()


@pytest.mark.parametrize("name", CREATIVE)
def test_domain_runs_two_iterations_with_the_fake_lm(name, tmp_path):
    run_cli("run", f"domain={name}", "model=scripted_fake", "iterations=2", "batch_size=3", "hydra.run.dir=out",
            "progress=false", cwd=tmp_path, check=True, timeout=300)
    out = Path(tmp_path, "out")
    assert out.is_dir() and any(out.iterdir())


def test_poetry_search_moves_on_to_lmx_rewrite(tmp_path):
    run_cli("run", "domain=poetry", "model=scripted_fake", "iterations=3", "batch_size=6", "init_evaluations=6",
            "hydra.run.dir=out", "progress=false", cwd=tmp_path, check=True, timeout=300)
    rows = [json.loads(line) for line in Path(tmp_path, "out", "history.jsonl").read_text().splitlines()]
    assert {r["operator"] for r in rows} == {"seeded_init", "lmx_rewrite"}
    assert all(r["cell"] is None or (0 <= r["cell"][0] < 5 and 0 <= r["cell"][1] < 5) for r in rows)


def test_opinions_labelled_and_holdout_sets():
    dev, holdout = _rows("benchmarks/data/opinions_labelled.jsonl"), _rows("benchmarks/data/opinions_holdout.jsonl")
    assert len(dev) >= 40 and len(holdout) >= 20
    texts = [r["text"] for r in dev + holdout]
    assert len(set(texts)) == len(texts)  # the holdout shares no text with the dev set
    for rows in (dev, holdout):
        assert {r["on_topic"] for r in rows} == {True, False}
        assert {r["sentiment"] for r in rows if r["on_topic"]} == {"positive", "negative"}
    d = load("opinions")
    assert not any(t in d.quality.shots or t in d.seeds for t in texts)


def test_opinions_judges_share_one_prompt_so_the_backend_can_share_rows():
    d = load("opinions")
    (sentiment,) = [m.judge for m in d.measures]
    text = "Kale chips are great."
    quality_prompt = "".join(d.quality.prompt_parts(text))
    assert sentiment.shots == d.quality.shots
    assert "".join(sentiment.prompt_parts(text)).startswith(quality_prompt + d.quality.labels[0])
