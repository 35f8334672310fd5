import math

import numpy as np
import pytest

from qdaif.feedback import LabelJudge, label_probabilities
from qdaif.lm import LM, ScoreRequest


def test_label_probabilities_softmax_and_scale():
    p = label_probabilities([[math.log(0.75), math.log(0.25)]])
    assert p[0] == pytest.approx([0.75, 0.25])
    # logit_scale multiplies the log-odds: 3 -> 9 : 1 becomes 27 : 1 at scale 1.5
    p = label_probabilities([[math.log(0.9), math.log(0.1)]], scale=1.5)
    assert p[0, 0] / p[0, 1] == pytest.approx(27.0)
    assert np.isnan(label_probabilities([[math.nan, -1.0]])).all()


class RecordingLM(LM):
    """Test double: records score requests and returns fixed log-probabilities."""

    def __init__(self):
        self.requests = []

    def generate(self, prompts, **kw):
        raise AssertionError("the judge must not generate")

    def score(self, requests):
        self.requests.append(list(requests))
        return [[-0.1, -2.0] for _ in requests]


def test_judge_makes_one_call_with_quality_then_measures(opinions_domain):
    lm = RecordingLM()
    ev = LabelJudge(domain=opinions_domain, lm=lm).evaluate(["a", "b", "c"])
    assert len(lm.requests) == 1
    reqs = lm.requests[0]
    assert len(reqs) == 6
    assert all(isinstance(r, ScoreRequest) for r in reqs)
    assert [r.continuations for r in reqs] == [(" vegetables", " other")] * 3 + [(" positive", " negative")] * 3
    assert reqs[0].prefix == reqs[1].prefix == opinions_domain.quality.shots
    assert ev.quality.shape == (3,) and ev.measures.shape == (3, 1)
    scale = opinions_domain.measures[0].judge.logit_scale
    assert ev.measures[0, 0] == pytest.approx(1 / (1 + math.exp(-1.9 * scale)))
