"""Judge options (examples, orders, retrieve, calibrate) on scripted test doubles.

The LMs here are scripted fakes: they return log-probabilities computed from the request
text by a fixed rule, so each test knows what a correct judge must output.
"""

import json
import math

import numpy as np
import pytest

from qdaif.domain import domain_from_config, example_orders
from qdaif.errors import ConfigError
from qdaif.feedback import CONTENT_FREE, LabelJudge
from qdaif.lm import LM

EXAMPLES = [{"text": f"example {i}", "label": "yes" if i % 2 else "no"} for i in range(4)]


def _domain(**quality):
    node = {
        "name": "toy", "version": 1, "description": "toy",
        "lmx": {"instruction": "Texts:", "separator": "\n"},
        "seeds": ["a seed"],
        "quality": {"name": "q", "query": "Text: {text}\nAnswer:", "labels": [" yes", " no"], **quality},
        "measures": [{"name": "m", "query": "Text: {text}\nMood:", "labels": [" up", " down"], "edges": [0, 0.5, 1]}],
    }
    return domain_from_config(node)


class PrefixBiasedFakeLM(LM):
    """Scripted fake judge: log P(first label) - log P(second) = bias of the few-shot block
    (+1 if its last example is labelled ' yes', else -1) + 2 if the text contains 'good'."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, **kw):
        raise AssertionError("a judge must not generate")

    def score(self, requests):
        self.calls.append(list(requests))
        out = []
        for r in requests:
            bias = 1.0 if r.prefix.rstrip().endswith("yes") else -1.0 if r.prefix else 0.0
            signal = 2.0 if "good" in r.suffix else 0.0
            out.append([bias + signal, 0.0])
        return out


def test_examples_render_with_the_query_and_accept_labels_without_spaces():
    spec = _domain(examples=EXAMPLES).quality
    assert spec.examples[1] == ("example 1", " yes")
    prefix, suffix = spec.prompt_parts("hello")
    assert prefix == "".join(f"Text: example {i}\nAnswer: {'yes' if i % 2 else 'no'}\n\n" for i in range(4))
    assert suffix == "Text: hello\nAnswer:"


def test_example_orders_are_rotations_that_balance_positions():
    orders = example_orders(4, 4)
    assert orders[0] == (0, 1, 2, 3) and orders[1] == (1, 2, 3, 0)
    for position in range(4):  # every example once in every position
        assert sorted(o[position] for o in orders) == [0, 1, 2, 3]
    assert example_orders(5, 2) == [(0, 1, 2, 3, 4), (1, 2, 3, 4, 0)]


def test_orders_average_the_label_distribution_over_blocks():
    lm = PrefixBiasedFakeLM()
    ev = LabelJudge(domain=_domain(examples=EXAMPLES, orders=4), lm=lm).evaluate(["good text", "plain"])
    (reqs,) = lm.calls
    assert len(reqs) == 4 * 2 + 2  # 4 orders x 2 texts for quality, 1 x 2 for the measure
    orders = example_orders(4, 4)
    last_yes = [EXAMPLES[o[-1]]["label"] == "yes" for o in orders]
    expect = np.mean([[1 / (1 + math.exp(-((1 if y else -1) + s))) for s in (2, 0)] for y in last_yes], axis=0)
    assert ev.quality == pytest.approx(expect)
    assert len({r.prefix for r in reqs[:8]}) == 4  # one few-shot block per order, shared by both texts


def test_calibration_removes_the_block_bias():
    lm = PrefixBiasedFakeLM()
    judge = LabelJudge(domain=_domain(examples=EXAMPLES, calibrate=True), lm=lm)
    ev = judge.evaluate(["good text", "plain"])
    assert len(lm.calls) == 2  # content-free inputs once, then the texts
    assert [r.suffix for r in lm.calls[0]] == [f"Text: {c}\nAnswer:" for c in CONTENT_FREE]
    # the written order ends with a 'yes' example: bias +1; calibration divides it out
    assert judge.calibration["q"][0] == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))])
    assert ev.quality == pytest.approx([1 / (1 + math.exp(-2)), 0.5])
    judge.evaluate(["again"])
    assert len(lm.calls) == 3  # not recomputed


def test_calibration_given_is_used_without_scoring_content_free_inputs():
    lm = PrefixBiasedFakeLM()
    judge = LabelJudge(domain=_domain(examples=EXAMPLES, calibrate=True), lm=lm, calibration={"q": [[0.5, 0.5]]})
    ev = judge.evaluate(["plain"])
    assert len(lm.calls) == 1
    assert ev.quality[0] == pytest.approx(1 / (1 + math.exp(-1)))


class KeywordEmbedder:
    """Scripted fake embedder: one axis per keyword (its count), so similarity counts shared keywords."""

    WORDS = ("cat", "dog", "sea", "sky")

    def embed(self, texts):
        v = np.array([[float(t.count(w)) for w in self.WORDS] + [0.1] for t in texts])
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_retrieve_shows_the_most_similar_examples_last():
    pool = [{"text": f"a {w} story", "label": "yes"} for w in KeywordEmbedder.WORDS]
    lm = PrefixBiasedFakeLM()
    judge = LabelJudge(domain=_domain(examples=pool, retrieve=2), lm=lm, embedder=KeywordEmbedder())
    judge.evaluate(["the dog, another dog and the sea", "a sky"])
    q = lm.calls[0][:2]
    assert q[0].prefix == "Text: a sea story\nAnswer: yes\n\nText: a dog story\nAnswer: yes\n\n"
    assert q[1].prefix.endswith("Text: a sky story\nAnswer: yes\n\n")


@pytest.mark.parametrize("options, message", [
    ({"orders": 2}, "need at least 2 'examples'"),
    ({"examples": EXAMPLES, "retrieve": 4}, "retrieve must be less than"),
    ({"examples": EXAMPLES, "retrieve": 2, "calibrate": True}, "cannot be combined"),
    ({"examples": EXAMPLES, "calibrate": "maybe"}, "calibrate must be true or false"),
    ({"examples": [{"text": "x", "label": "maybe"}]}, "label must be one of the judge's labels (no, yes)"),
    ({"examples": [{"text": "x"}]}, "label"),
    ({"examples": EXAMPLES, "orders": 0}, "orders must be an integer >= 1"),
    ({"examples": EXAMPLES, "orders": 5}, "orders must be at most the number of examples shown (4)"),
])
def test_bad_options_give_one_line(options, message):
    with pytest.raises(ConfigError) as e:
        _domain(**options)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_run_stores_its_calibration_and_a_resume_reads_it(tmp_path):
    from qdaif.run_dir import CALIBRATION, RunDir
    from qdaif.search import Search, SearchState

    domain = _domain(examples=EXAMPLES, calibrate=True)
    lm = PrefixBiasedFakeLM()
    run_dir = RunDir(tmp_path / "run")
    Search(domain=domain, lm=lm, judge_lm=lm, run_dir=run_dir, state=SearchState.new(domain, 0),
           batch_size=2, seed=0)
    stored = json.loads(run_dir.file(CALIBRATION).read_text())
    assert stored["q"][0] == pytest.approx([1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))])
    lm2 = PrefixBiasedFakeLM()
    run_dir.file(CALIBRATION).write_text(json.dumps({"q": [[0.5, 0.5]]}))
    s = Search(domain=domain, lm=lm2, judge_lm=lm2, run_dir=run_dir, state=SearchState.new(domain, 0),
               batch_size=2, seed=0)
    assert lm2.calls == [] and s.judge.calibration == {"q": [[0.5, 0.5]]}


def test_last_sentences_makes_the_judge_read_only_the_end():
    spec = _domain(last_sentences=2).quality
    text = "First part. Then a twist! Was it over? It was."
    assert spec.judged_text(text) == "Was it over? It was."
    assert spec.prompt_parts(text)[1] == "Text: Was it over? It was.\nAnswer:"
    assert _domain(last_sentences=9).quality.judged_text("One. Two.") == "One. Two."
    with pytest.raises(ConfigError, match="last_sentences must be an integer >= 0"):
        _domain(last_sentences=-1)
