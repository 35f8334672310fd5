"""Judge evaluation (``judge --labels FILE``): the metrics, labelled-file errors, and a real-model run."""

import csv
import json

import numpy as np
import pytest

from qdaif.errors import ConfigError
from qdaif.judge_eval import (
    accuracy,
    auc,
    bootstrap_ci,
    confusion_matrix,
    evaluate_judges,
    expected_calibration_error,
    macro_f1,
    read_labelled,
    spearman,
)
from tests.helpers import run_cli
from tests.test_cli import assert_one_line_error

FAKE = "model=scripted_fake"


# ------------------------------------------------------------------ metrics
def test_auc_with_ties_by_hand():
    # positives 0.5, 0.9 against negatives 0.5, 0.1: the tied pair counts 1/2, so (0.5 + 1 + 1 + 1) / 4
    assert auc([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1]) == pytest.approx(0.875)
    assert auc([1, 1, 0, 0], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)
    assert np.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_scikit_learn_with_many_ties(seed):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40).astype(bool)
    s = np.round(rng.random(40) + 0.3 * y, 1)  # one decimal: many ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_f1_and_confusion_match_scikit_learn(seed):
    from sklearn.metrics import confusion_matrix as sk_confusion
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 30)  # class 4 is never true ...
    pred = np.where(rng.random(30) < 0.5, y, rng.integers(0, 5, 30))
    pred[0] = 4  # ... but predicted once
    assert macro_f1(y, pred, 5) == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    assert confusion_matrix(y, pred, 5).tolist() == sk_confusion(y, pred, labels=range(5)).tolist()
    assert accuracy(y, pred) == pytest.approx(np.mean(y == pred))


def test_macro_f1_by_hand():
    # class 0: tp 1, 2 true, 1 predicted -> F1 2/3; class 1: tp 1, 1 true, 2 predicted -> 2/3; class 2 absent
    assert macro_f1([0, 0, 1], [0, 1, 1], 3) == pytest.approx(2 / 3)


def test_expected_calibration_error_by_hand():
    conf = [0.05, 0.15, 0.15, 0.95, 1.0]
    correct = [0, 1, 0, 1, 1]
    # bins [0, .1): |0 - .05|; [.1, .2): |1 - .3|; [.9, 1]: |2 - 1.95|; divided by 5 texts
    assert expected_calibration_error(conf, correct) == pytest.approx((0.05 + 0.7 + 0.05) / 5)
    assert expected_calibration_error([0.25, 0.25, 0.25, 0.25], [1, 0, 0, 0]) == pytest.approx(0.0)
    assert expected_calibration_error([1.0, 0.0], [0, 1]) == pytest.approx(1.0)


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    x = [1, 2, 2, 3, 5, 5, 7, 8]
    y = [2, 1, 4, 4, 3, 6, 6, 9]
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_bootstrap_interval_contains_the_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50).astype(bool)
    s = rng.random(50) + 0.5 * y

    def stats(idx):
        return {"auc": auc(y[idx], s[idx]), "accuracy": accuracy(y[idx], s[idx] >= 0.5)}

    point = stats(np.arange(50))
    a = bootstrap_ci(stats, 50, resamples=500, seed=3)
    for name, value in point.items():
        low, high = a[name]
        assert low <= value <= high and low < high
    assert bootstrap_ci(stats, 50, resamples=500, seed=3) == a
    assert bootstrap_ci(stats, 50, resamples=500, seed=4) != a
    assert bootstrap_ci(stats, 50, resamples=0, seed=3) == {}


# ------------------------------------------------------- labelled files
@pytest.fixture(scope="module")
def poetry_domain():
    from qdaif.cli import compose_config
    from qdaif.domain import domain_from_config

    return domain_from_config(compose_config(["domain=poetry", FAKE]).domain)


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_reads_booleans_label_names_and_skips_unlabelled(tmp_path, opinions_domain):
    f = _jsonl(tmp_path / "l.jsonl", [
        {"text": "Carrots are great.", "on_topic": True, "sentiment": "positive"},
        {"text": "Leeks are awful.", "on_topic": "true", "sentiment": " negative"},
        {"text": "The bus was late.", "on_topic": 0, "sentiment": None},
        {"text": "Peas.", "on_topic": "", "sentiment": "POSITIVE"},
    ])
    data = read_labelled(f, opinions_domain)
    q, s = data.targets["on_topic"], data.targets["sentiment"]
    assert q.values[:3].tolist() == [1, 1, 0] and np.isnan(q.values[3])
    assert s.values[[0, 1, 3]].tolist() == [1, 0, 1] and np.isnan(s.values[2])
    assert s.classes == ("positive", "negative") and data.warnings == []


def test_positive_class_from_axis_label_or_option(tmp_path):
    from qdaif.cli import compose_config
    from qdaif.domain import domain_from_config

    stories = domain_from_config(compose_config(["domain=stories", FAKE]).domain)
    rows = [{"text": "A", "good": True, "genre": "horror"}, {"text": "B", "good": True, "genre": "romance"}]
    f = _jsonl(tmp_path / "s.jsonl", rows)
    # "Genre: P(horror)": horror is the class P(fear) stands for.
    assert read_labelled(f, stories).targets["genre"].values.tolist() == [1, 0]
    assert read_labelled(f, stories, positive={"genre": "romance"}).targets["genre"].values.tolist() == [0, 1]
    with pytest.raises(ConfigError, match="not a label judge"):
        read_labelled(f, stories, positive={"spy": "x"})


def test_csv_with_categories_and_ratings(tmp_path, poetry_domain):
    f = tmp_path / "p.csv"
    with f.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "poem_quality", "genre", "tone", "split"])
        w.writerow(["a poem, with a comma", "8", "Sonnet", "dark", "dev"])
        w.writerow(["another\npoem", "2.5", "", "happy", "dev"])
    data = read_labelled(f, poetry_domain)
    assert data.texts == ["a poem, with a comma", "another\npoem"] and data.lines == [2, 4]
    assert data.targets["poem_quality"].values.tolist() == [8, 2.5] and not data.targets["poem_quality"].boolean
    assert data.targets["genre"].values[0] == 1 and np.isnan(data.targets["genre"].values[1])
    assert data.targets["tone"].values.tolist() == [1, 0]


def test_unknown_column_is_one_warning_naming_the_judges(tmp_path, opinions_domain):
    f = _jsonl(tmp_path / "l.jsonl", [{"text": "Kale.", "on_topic": True, "sentimnt": "positive", "split": "dev"},
                                      {"text": "Rain.", "on_topic": False, "sentimnt": "negative", "note": "x"}])
    (w,) = read_labelled(f, opinions_domain).warnings
    assert "'sentimnt' (did you mean 'sentiment'?)" in w and "'note'" in w and "on_topic" in w and "sentiment" in w


BAD_OPINIONS = [
    ([{"text": "Kale.", "on_topic": True}, {"on_topic": True}], "line 2: 'text' is missing"),
    ([{"text": "Kale.", "on_topic": True}, {"text": "  ", "on_topic": True}], "line 2: 'text' is empty"),
    ([{"text": "Kale.", "on_topic": "abc"}], 'line 1: on_topic="abc" is not a label of judge on_topic'),
    ([{"text": "Kale.", "on_topic": 3}], "line 1: on_topic=3 is a int"),
    ([{"text": "Kale.", "on_topic": True, "sentiment": "meh"}], "positive=sentiment:meh"),
    (['{"text": "Kale.", "on_topic": true}', '{"text": "Peas", on_topic: 1}'], "line 2: invalid JSON"),
    (["[1, 2]"], "line 1: expected a JSON object"),
    ([{"text": "Kale.", "good": True, "on_topic": True}], "both label the quality judge"),
    ([{"text": "Kale.", "mood": "happy"}], "no column for any judge"),
]


@pytest.mark.parametrize(("rows", "fragment"), BAD_OPINIONS)
def test_bad_labelled_rows_name_the_line(tmp_path, opinions_domain, rows, fragment):
    f = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ConfigError) as e:
        read_labelled(f, opinions_domain)
    assert fragment in str(e.value) and str(f) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(("rows", "fragment"), [
    ([{"text": "x", "genre": "villanelle"}], 'line 1: genre="villanelle" is not a category of judge genre'),
    ([{"text": "x", "genre": 2}], "is a int, not a category name"),
    ([{"text": "x", "poem_quality": "abc"}], "is neither a number nor true/false"),
    ([{"text": "x", "poem_quality": 7}, {"text": "y", "poem_quality": True}], "line 2: poem_quality=true is a boolean"),
])
def test_bad_categories_and_ratings(tmp_path, poetry_domain, rows, fragment):
    with pytest.raises(ConfigError, match=None) as e:
        read_labelled(_jsonl(tmp_path / "bad.jsonl", rows), poetry_domain)
    assert fragment in str(e.value), str(e.value)


def test_third_class_with_a_positive_mapping(tmp_path, opinions_domain):
    f = _jsonl(tmp_path / "l.jsonl", [{"text": t, "on_topic": True, "sentiment": s}
                                      for t, s in (("a", "good"), ("b", "bad"), ("c", "mixed"))])
    with pytest.raises(ConfigError, match="line 3: sentiment=\"mixed\" is a third class"):
        read_labelled(f, opinions_domain, positive={"sentiment": "good"})


def test_non_utf8_and_csv_errors(tmp_path, opinions_domain):
    f = tmp_path / "latin1.jsonl"
    f.write_bytes(b'{"text": "ok", "on_topic": true}\n{"text": "caf\xe9", "on_topic": true}\n')
    with pytest.raises(ConfigError, match="line 2: not UTF-8 text"):
        read_labelled(f, opinions_domain)
    c = tmp_path / "extra.csv"
    c.write_text("text,on_topic\nKale is nice,true\nPeas, beans and leeks,true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 3: more fields than the header"):
        read_labelled(c, opinions_domain)
    with pytest.raises(ConfigError, match="must be .jsonl"):
        read_labelled((tmp_path / "x.txt").resolve(), opinions_domain) if (tmp_path / "x.txt").write_text("a") else None


def test_evaluate_judges_on_a_scripted_evaluation(tmp_path, opinions_domain):
    """Reports from a hand-made Evaluation: quality on all texts, the measure on good texts and on all."""
    from qdaif.feedback import Evaluation

    f = _jsonl(tmp_path / "l.jsonl", [
        {"text": "a", "on_topic": True, "sentiment": "positive"},
        {"text": "b", "on_topic": True, "sentiment": "negative"},
        {"text": "c", "on_topic": False, "sentiment": "positive"},
        {"text": "d", "on_topic": False, "sentiment": None},
    ])
    data = read_labelled(f, opinions_domain)
    q = np.array([0.9, 0.6, 0.7, 0.1])  # on-topic 0.6 below off-topic 0.7: AUC 3/4
    s = np.array([0.8, 0.3, 0.2, 0.5])
    ev = Evaluation(quality=q, measures=s[:, None],
                    label_probs={"on_topic": np.stack([q, 1 - q], 1), "sentiment": np.stack([s, 1 - s], 1)})
    quality, good, every = evaluate_judges(opinions_domain, data, ev, resamples=50, seed=0)
    assert (quality.judge, quality.n, good.subset, good.n, every.subset, every.n) == ("on_topic", 4, "good", 2, "all", 3)
    assert quality.metrics["auc"] == pytest.approx(0.75) and quality.metrics["accuracy"] == pytest.approx(0.75)
    assert every.metrics["auc"] == pytest.approx(0.5) and every.metrics["accuracy"] == pytest.approx(2 / 3)
    assert quality.details["cells_of_positive"]["filled"] == 2
    assert sum(every.details["bins"]["positive"]) == 2 and sum(every.details["bins"]["negative"]) == 1
    json.dumps([r.to_dict() for r in (quality, good, every)])


# ------------------------------------------------------------- the command
@pytest.fixture
def judge_files(tmp_path, monkeypatch):
    _jsonl(tmp_path / "l.jsonl", [{"text": "Kale.", "on_topic": True}])
    _jsonl(tmp_path / "bad.jsonl", [{"text": "Kale.", "on_topic": True}, "{oops"])
    (tmp_path / "t.txt").write_text("Kale.\n")
    (tmp_path / "latin1.txt").write_bytes(b"ok\nna\xefve\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("args", "fragment"), [
    (["--labels", "l.jsonl", "--chunk", "0"], "argument --chunk: must be an integer >= 1, got '0'"),
    (["--labels", "l.jsonl", "--chunk", "-3"], "argument --chunk: must be an integer >= 1"),
    (["--input", "t.txt", "--chunk", "many"], "argument --chunk: must be an integer >= 1, got 'many'"),
    (["--labels", "l.jsonl", "--bootstrap", "x"], "argument --bootstrap: must be an integer >= 0"),
    (["--labels", "l.jsonl", "--output", "nowhere/r.json"], "folder 'nowhere' does not exist"),
    (["--input", "latin1.txt"], "latin1.txt line 2: not UTF-8 text"),
    (["--labels", "l.jsonl", "labls=x"], "unknown config key 'labls'"),
    (["--labels", "l.jsonl", "--labls", "x"], "unrecognized arguments: --labls"),
    (["--labels", "l.jsonl", "l2.jsonl"], "expected a key=value config override, got 'l2.jsonl'"),
    (["--labels", "l.jsonl", "--input", "t.txt"], "argument --input: not allowed with argument --labels"),
    (["domain=opinions"], "one of the arguments --input --labels is required"),
    (["--input", "t.txt", "--bootstrap", "10"], "--bootstrap only apply with --labels FILE"),
    (["--labels", "bad.jsonl"], "bad.jsonl line 2: invalid JSON"),
    (["--labels", "l.jsonl", "--positive", "genre"], "judge:class pairs"),
    (["--labels", "l.jsonl", "--positive", "genre:horror"], "not a label judge of domain opinions"),
    (["domain=multitask", "--labels", "l.jsonl"], "judged by its plugin"),
])
def test_judge_command_gives_one_line_errors(judge_files, capsys, args, fragment):
    """In-process (fast): exit code 2 and one line on stderr, before any model is loaded."""
    from qdaif import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["judge", FAKE, *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("qdaif: error:") and fragment in err, err


@pytest.mark.parametrize(("args", "fragment"), [
    (["--labels", "bad.jsonl"], "bad.jsonl line 2: invalid JSON"),
    (["--labels", "l.jsonl", "--chunk", "0"], "--chunk: must be an integer >= 1"),
])
def test_judge_command_errors_as_a_user_sees_them(judge_files, args, fragment):
    proc = run_cli("judge", FAKE, *args, cwd=judge_files)
    assert proc.returncode == 2
    assert_one_line_error(proc, fragment)


def test_judge_labels_writes_the_report_with_a_scripted_model(judge_files):
    """The whole command with the scripted fake LM (engine plumbing only; the scores mean nothing)."""
    from qdaif import cli

    _jsonl(judge_files / "l.jsonl", [{"text": t, "on_topic": q, "sentiment": s} for t, q, s in OPINIONS_ROWS])
    cli.main(["judge", FAKE, "--labels", "l.jsonl", "--output", "r.json", "--bootstrap", "20", "--seed", "1"])
    doc = json.loads((judge_files / "r.json").read_text())
    assert (doc["texts"], doc["bootstrap"], doc["seed"]) == (10, 20, 1)
    assert [(j["judge"], j["subset"], j["n"]) for j in doc["judges"]] == [
        ("on_topic", "all", 10), ("sentiment", "good", 7), ("sentiment", "all", 7)]


OPINIONS_ROWS = [  # written for this test
    ("Roasted cauliflower with a little cumin is one of my favourite dinners.", True, "positive"),
    ("I could eat fresh green beans every single day; they are so crisp and sweet.", True, "positive"),
    ("A bowl of spinach soup warms me up and makes me genuinely happy.", True, "positive"),
    ("Buttery mashed parsnips are a delight I look forward to all winter.", True, "positive"),
    ("Boiled cabbage is soggy and smells terrible; I hate it.", True, "negative"),
    ("Raw celery is stringy and bitter, and I cannot stand eating it.", True, "negative"),
    ("Brussels sprouts always taste awful to me, no matter how they are cooked.", True, "negative"),
    ("The train was forty minutes late again this morning.", False, None),
    ("My new laptop has a bright screen and a quiet keyboard.", False, None),
    ("The football match ended in a draw after extra time.", False, ""),
]


@pytest.mark.embedded
def test_judge_labels_with_the_embedded_model(tmp_path):
    f = tmp_path / "mine.csv"
    with f.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "on_topic", "sentiment"])
        w.writerows([(t, str(q).lower(), s or "") for t, q, s in OPINIONS_ROWS])
    proc = run_cli("judge", "domain=opinions", "--labels", "mine.csv", "--output", "report.json", "--bootstrap", "200", cwd=tmp_path,
                   check=True)
    assert "| on_topic (quality, label) | all | 10 | AUC |" in proc.stdout
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["texts"] == 10 and doc["bootstrap"] == 200 and doc["model"]["backend"] == "transformers"
    by = {(j["judge"], j["subset"]): j for j in doc["judges"]}
    assert set(by) == {("on_topic", "all"), ("sentiment", "good"), ("sentiment", "all")}
    assert by["on_topic", "all"]["n"] == 10 and by["sentiment", "good"]["n"] == 7 and by["sentiment", "all"]["n"] == 7
    for j in doc["judges"]:
        for name in ("auc", "accuracy", "ece"):
            m = j["metrics"][name]
            assert np.isfinite(m["value"]) and 0 <= m["value"] <= 1, (j["judge"], name, m)
            low, high = m["ci95"]
            assert low <= m["value"] <= high
    assert by["on_topic", "all"]["details"]["n_positive"] == 7
    assert sum(by["on_topic", "all"]["details"]["cells_of_positive"]["counts"].values()) == 7
