import numpy as np
import pytest

from qdaif.archive import cells_of, make_archive

PAPER_EDGES = [0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.10, 0.20, 0.50,
               0.80, 0.90, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 0.995, 1.0]


@pytest.fixture
def archive():
    return make_archive([PAPER_EDGES], seed=0)


@pytest.mark.parametrize(
    ("value", "cell"),
    [(0.0, 0), (0.0049, 0), (0.005, 1), (0.5, 10), (0.4999, 9), (0.995, 19), (0.9949, 18), (1.0, 19),
     (-0.3, 0), (1.7, 19)],
)
def test_bin_of_value_edges_and_out_of_range(archive, value, cell):
    # A value exactly on an edge goes to the bin above it; 1.0 to the last bin.
    assert cells_of(archive, [[value]])[0, 0] == cell


def test_binning_matches_numpy_digitize_on_interior_edges(archive):
    values = np.random.default_rng(0).random(1000)
    expected = np.digitize(values, PAPER_EDGES[1:-1])
    assert np.array_equal(cells_of(archive, values[:, None])[:, 0], expected)


def test_two_dimensional_cells():
    edges = [0.0, 0.005, 0.02, 0.05, 0.2, 0.5, 0.8, 0.95, 0.98, 0.995, 1.0]
    a = make_archive([edges, edges])
    assert a.dims.tolist() == [10, 10]
    assert cells_of(a, [[0.0, 1.0], [0.5, 0.2], [0.97, 0.004]]).tolist() == [[0, 9], [5, 4], [7, 0]]


def test_archive_keeps_best_text_per_cell(archive):
    archive.add(solution=np.array(["a", "b", "c"], dtype=object), objective=[0.2, 0.9, 0.5],
                measures=[[0.6], [0.61], [0.1]], id=[0, 1, 2], iteration=[1, 1, 1])
    occupied, data = archive.retrieve([[0.6], [0.1]])
    assert occupied.tolist() == [True, True]
    assert list(data["solution"]) == ["b", "c"]
    assert float(archive.stats.qd_score) == pytest.approx(1.4)


def test_non_finite_measures_are_rejected(archive):
    with pytest.raises(ValueError, match="finite"):
        archive.index_of([[np.nan]])
