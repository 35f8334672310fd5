import numpy as np
import pytest

from qdaif.archive import make_archive
from qdaif.domain import LMXPrompt
from qdaif.operators import LMXNear, SeededInit, lmx_near_weights

LMX = LMXPrompt(instruction="Opinion:", separator="\n###\n", num_examples=3)


def test_render_ends_with_bare_instruction():
    assert LMX.render(["a", "b"]) == "Opinion: a\n###\nOpinion: b\n###\nOpinion:"


def test_lmx_near_weights_follow_inverse_cubic_distance():
    cells = np.array([[0], [1], [2], [3], [5]])
    w = lmx_near_weights(np.array([0]), cells)
    raw = np.array([1.0, 1 / 2, 1 / 9, 1 / 28, 1 / 126])
    assert w == pytest.approx(raw / raw.sum())


def test_lmx_near_weights_2d_euclidean():
    w = lmx_near_weights(np.array([0, 0]), np.array([[0, 0], [3, 4]]))
    assert w == pytest.approx(np.array([1.0, 1 / 126]) / (1 + 1 / 126))


def _archive_with(n_cells: int):
    a = make_archive([np.linspace(0, 1, 21)], seed=0)
    values = (np.arange(n_cells) + 0.5) / 20
    a.add(solution=np.array([f"text{i}" for i in range(n_cells)], dtype=object), objective=np.full(n_cells, 0.5),
          measures=values[:, None], id=np.arange(n_cells), iteration=np.ones(n_cells, int))
    return a


def test_lmx_near_draws_distinct_elites_near_the_parent():
    a = _archive_with(20)
    props = LMXNear(lmx=LMX).propose(a, np.random.default_rng(0), 400)
    assert len(props) == 400
    for p in props:
        assert len(set(p.parents)) == 3 and p.operator == "lmx_near"
        assert p.prompt.count("Opinion: text") == 3 and p.prompt.endswith("Opinion:")
    # Examples are concentrated near each other: the spread of a prompt's three ids is
    # far below what uniform sampling of 3 of 20 cells gives (about 10).
    spread = np.mean([max(p.parents) - min(p.parents) for p in props])
    assert spread < 6


def test_lmx_near_needs_enough_elites():
    with pytest.raises(ValueError, match="at least 3 elites"):
        LMXNear(lmx=LMX).propose(_archive_with(2), np.random.default_rng(0), 1)


def test_seeded_init_uses_distinct_seeds():
    op = SeededInit(lmx=LMX, seeds=("s0", "s1", "s2", "s3"))
    props = op.propose(make_archive([[0, 1]]), np.random.default_rng(0), 50)
    for p in props:
        assert len(set(p.parents)) == 3 and all(x.startswith("seed:") for x in p.parents)
        for ref in p.parents:
            assert f"Opinion: s{ref.split(':')[1]}" in p.prompt
    assert len({p.parents for p in props}) > 5  # orders and choices vary
