"""Human evaluation: a blinded export, and ratings that come back through CSV and Label Studio files."""

import csv
import io
import json
import re
from collections import defaultdict

import numpy as np
import pytest

from qdaif import cli
from qdaif.human_eval import (
    AGREEMENT_CSV,
    INSTRUCTIONS,
    ITEMS_CSV,
    KEY,
    LS_CONFIG,
    LS_TASKS,
    RESULTS_CSV,
    RESULTS_MD,
    RatingsError,
    RatingsWarning,
    export_items,
    fleiss_kappa,
    import_ratings,
    parse_run_arg,
)
from qdaif.runs import load_run
from tests.test_plot import categorical, make_run, numeric, random_rows

RATER_FILES = (ITEMS_CSV, LS_TASKS, LS_CONFIG, INSTRUCTIONS)
MEASURES = [numeric("sentiment", [0, 0.2, 0.5, 0.8, 1])]


@pytest.fixture
def runs(tmp_path):
    a_rows = random_rows(MEASURES, 24, seed=1)
    b_rows = [{**r, "text": f"other {r['text']}"} for r in random_rows(MEASURES, 16, seed=2)]
    a = make_run(tmp_path / "run_a", measures=MEASURES, rows=a_rows, algorithm={"name": "alpha_method"})
    b = make_run(tmp_path / "run_b", measures=MEASURES, rows=b_rows)
    return a, b


@pytest.fixture
def export(runs, tmp_path):
    a, b = runs
    out = tmp_path / "rating_set"
    key = export_items([a, f"{b}=beta_method"], out=out, per_cell=2, seed=1)
    return out, key


def read_csv(path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))


def test_export_is_blinded(export, runs):
    out, key = export
    assert {it["method"] for it in key["items"]} == {"alpha_method", "beta_method"}
    for name in RATER_FILES:
        text = (out / name).read_text(encoding="utf-8")
        for secret in ("alpha_method", "beta_method", "qdaif", "run_a", "run_b", str(runs[0].parent), "0."):
            assert secret not in text, (name, secret)
        assert not re.search(r"\b(cell|score|method|ai_\w+)\b", text, re.I), name
    rows = read_csv(out / ITEMS_CSV)
    assert rows[0] == ["item", "text", "quality", "sentiment"]
    assert [r[0] for r in rows[1:]] == [it["item"] for it in key["items"]]
    assert all(r[2] == r[3] == "" for r in rows[1:])
    tasks = json.loads((out / LS_TASKS).read_text())
    assert [t["data"] for t in tasks] == [{"item": it["item"], "text": it["text"]} for it in key["items"]]
    config = (out / LS_CONFIG).read_text()
    assert '<Rating name="quality" toName="text" maxRating="5"' in config
    assert '<Choice value="positive"/>' in config and '<Choice value="negative"/>' in config
    methods = [it["method"] for it in key["items"]]
    assert sum(x != y for x, y in zip(methods, methods[1:])) > 3  # shuffled together, not run after run
    assert [it["item"] for it in key["items"]] == [f"item-{k:04d}" for k in range(1, len(methods) + 1)]


def test_export_takes_the_elite_then_the_next_best_of_each_cell(export, runs):
    _, key = export
    for run_dir, method in zip(runs, ("alpha_method", "beta_method")):
        run = load_run(run_dir)
        mine = [it for it in key["items"] if it["method"] == method]
        assert {tuple(it["cell"]) for it in mine} == {tuple(e["cell"]) for e in run.elites}
        for e in run.elites:
            in_cell = sorted((h for h in run.history if h["cell"] == e["cell"]), key=lambda h: -h["quality"])
            picked = sorted((it for it in mine if it["cell"] == e["cell"]), key=lambda it: it["rank"])
            assert [it["text"] for it in picked] == [h["text"] for h in in_cell[:2]]
            assert picked[0]["id"] == e["id"] and picked[0]["ai_quality"] == e["quality"]
            for it in picked:
                assert it["ai_labels"]["sentiment"] == ("positive" if it["ai_measures"][0] >= 0.5 else "negative")


def synthetic_ratings(key, raters, seed=0):
    """Ratings near the AI's scores, with some label flips: {rater: {item: (quality, label)}}."""
    rng = np.random.default_rng(seed)
    out = {}
    for rater in raters:
        mine = {}
        for it in key["items"]:
            q = int(np.clip(1 + round(it["ai_quality"] * 4) + rng.integers(-1, 2), 1, 5))
            label = it["ai_labels"]["sentiment"]
            if rng.random() < 0.25:
                label = "negative" if label == "positive" else "positive"
            mine[it["item"]] = (q, label)
        out[rater] = mine
    return out


def texts_of(key):
    return {it["item"]: it["text"] for it in key["items"]}


def write_csv(path, answers, key, *, extra=()):
    """A filled-in items.csv: the text column as the rater saw it (from the key)."""
    texts = texts_of(key)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item", "text", "quality", "sentiment"])
        for item, (q, label) in answers.items():
            w.writerow([item, texts[item], q, label.upper() if item.endswith("3") else label])
        for row in extra:
            w.writerow(row)
    return path


def write_label_studio(path, answers, key, user_id=7):
    tasks = []
    texts = texts_of(key)
    for n, (item, (q, label)) in enumerate(answers.items()):
        result = [{"from_name": "quality", "to_name": "text", "type": "rating", "value": {"rating": q}},
                  {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]
        tasks.append({"id": 100 + n, "data": {"item": item, "text": texts[item]},
                      "annotations": [{"id": n, "completed_by": user_id, "was_cancelled": False, "result": result}]})
    path.write_text(json.dumps(tasks))
    return path


def expected_scores(key, ratings):
    """Human QD, quality rating and agreement per method, computed directly from the definitions."""
    items = {it["item"]: it for it in key["items"]}
    out = {}
    for method in {it["method"] for it in key["items"]}:
        scores, qualities, hits = [], [], []
        for answers in ratings.values():
            by_label = defaultdict(list)
            for item, (q, label) in answers.items():
                if items[item]["method"] == method:
                    by_label[label].append((q - 1) / 4)
                    qualities.append(q)
                    hits.append(label == items[item]["ai_labels"]["sentiment"])
            scores.append(sum(sum(v) / len(v) for v in by_label.values()))
        out[method] = (sum(scores) / len(scores), sum(qualities) / len(qualities), sum(hits) / len(hits))
    return out


def cohen(a, b):
    cats = sorted(set(a) | set(b))
    n = len(a)
    po = sum(x == y for x, y in zip(a, b)) / n
    pe = sum((a.count(c) / n) * (b.count(c) / n) for c in cats)
    return (po - pe) / (1 - pe)


def fleiss_by_hand(table):
    """Fleiss' kappa of an (items, raters) table of answers, from the textbook sums."""
    cats = sorted({x for row in table for x in row}, key=str)
    n, raters = len(table), len(table[0])
    p_items = []
    totals = dict.fromkeys(cats, 0)
    for row in table:
        agree = 0
        for c in cats:
            k = row.count(c)
            totals[c] += k
            agree += k * (k - 1)
        p_items.append(agree / (raters * (raters - 1)))
    p_bar = sum(p_items) / n
    p_e = sum((t / (n * raters)) ** 2 for t in totals.values())
    return (p_bar - p_e) / (1 - p_e)


def test_ratings_round_trip_two_raters_csv(export, tmp_path):
    out, key = export
    ratings = synthetic_ratings(key, ["ann", "bob"])
    files = [write_csv(tmp_path / f"{r}.csv", answers, key) for r, answers in ratings.items()]
    result = import_ratings(out, files)
    assert result.raters == ["ann", "bob"] and result.warnings == []
    expected = expected_scores(key, ratings)
    for row in result.methods:
        hqd, quality, agreement = expected[row["method"]]
        assert row["human_qd"] == pytest.approx(hqd)
        assert row["human_qd_normalised"] == pytest.approx(hqd / 2)
        assert row["mean_quality"] == pytest.approx(quality)
        assert row["agreement_sentiment"] == pytest.approx(agreement)
        assert row["items"] == sum(it["method"] == row["method"] for it in key["items"])
    order = [it["item"] for it in key["items"]]
    inter = {r["rating"]: r for r in result.inter_rater}
    assert inter["quality"]["statistic"] == "Cohen's kappa" and inter["quality"]["items"] == len(order)
    assert inter["quality"]["value"] == pytest.approx(
        cohen([ratings["ann"][i][0] for i in order], [ratings["bob"][i][0] for i in order]))
    assert inter["sentiment"]["value"] == pytest.approx(
        cohen([ratings["ann"][i][1] for i in order], [ratings["bob"][i][1] for i in order]))
    md = (out / RESULTS_MD).read_text()
    assert "| alpha_method |" in md and "| beta_method |" in md and "Cohen's kappa" in md
    with open(out / RESULTS_CSV, newline="") as f:
        table = list(csv.DictReader(f))
    assert {r["method"] for r in table} == {"alpha_method", "beta_method"}
    assert float(table[0]["human_qd"]) == pytest.approx(result.methods[0]["human_qd"])
    assert (out / AGREEMENT_CSV).is_file()


def test_ratings_round_trip_three_raters_csv_and_label_studio(export, tmp_path):
    out, key = export
    ratings = synthetic_ratings(key, ["ann", "bob", "cat"], seed=3)
    files = [write_csv(tmp_path / "ann.csv", ratings["ann"], key), write_csv(tmp_path / "bob.csv", ratings["bob"], key),
             write_label_studio(tmp_path / "export.json", ratings["cat"], key)]
    result = import_ratings(out, files, write=False)
    assert result.raters == ["ann", "bob", "user7"]
    ratings["user7"] = ratings.pop("cat")
    expected = expected_scores(key, ratings)
    for row in result.methods:
        assert (row["human_qd"], row["mean_quality"], row["agreement_sentiment"]) == pytest.approx(expected[row["method"]])
    order = [it["item"] for it in key["items"]]
    inter = {r["rating"]: r for r in result.inter_rater}
    assert inter["quality"]["statistic"] == "Fleiss' kappa"
    for name, k in (("quality", 0), ("sentiment", 1)):
        table = [[ratings[r][i][k] for r in ("ann", "bob", "user7")] for i in order]
        assert inter[name]["value"] == pytest.approx(fleiss_by_hand(table))


def test_human_labels_decide_the_cells(export, tmp_path):
    out, key = export
    items = [it for it in key["items"] if it["method"] == "alpha_method"]
    # one rater calls every alpha text positive and rates it 5: one human cell of value 1
    answers = {it["item"]: (5, "positive") for it in items}
    with pytest.warns(RatingsWarning, match="gave no quality rating"):  # the beta items
        result = import_ratings(out, [write_csv(tmp_path / "ann.csv", answers, key)], write=False)
    alpha = next(r for r in result.methods if r["method"] == "alpha_method")
    assert alpha["human_qd"] == pytest.approx(1.0) and alpha["cells_found"] == 1
    assert any("gave no quality rating" in w for w in result.warnings)


def test_fleiss_kappa_textbook_example():
    # Fleiss (1971)-style worked example: 10 items, 14 raters, 5 categories; kappa = 0.210
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(np.array(counts)) == pytest.approx(0.20993, abs=1e-5)
    assert np.isnan(fleiss_kappa(np.array([[3, 0], [3, 0]])))
    with pytest.raises(ValueError):
        fleiss_kappa(np.array([[2, 0], [1, 0]]))


def test_malformed_ratings_name_their_rows(export, tmp_path):
    out, key = export
    ids = [it["item"] for it in key["items"]]
    answers = {i: (3, "positive") for i in ids}
    texts = texts_of(key)
    bad = write_csv(tmp_path / "ann.csv", answers, key, extra=[
        ["item-9999", "", "3", "positive"],  # unknown item
        [ids[0], texts[ids[0]], "7", "positive"],  # out of range
        [ids[1], texts[ids[1]], "3.5", "positive"],  # not whole
        [ids[2], texts[ids[2]], "4", "maybe"],  # not a label
        [ids[3], texts[ids[3]], "2", "negative"],  # duplicate of an earlier row
        ["", "", "4", ""],  # rating without an item
    ])
    n = len(ids) + 2  # first extra row
    with pytest.raises(RatingsError) as e:
        import_ratings(out, [bad])
    msg = str(e.value)
    assert f"ann.csv row {n} (item-9999)" in msg
    assert f"ann.csv row {n + 1} ('7')" in msg and f"ann.csv row {n + 2} ('3.5')" in msg
    assert f"ann.csv row {n + 3} ('maybe')" in msg and "not among positive, negative" in msg
    assert f"ann.csv row {n + 4} repeats ann.csv row 5" in msg
    assert f"ann.csv row {n + 5}" in msg and "without an item id" in msg
    assert "\n" not in msg
    assert not (out / RESULTS_MD).exists()


def test_missing_and_blank_ratings_warn_by_name(export, tmp_path):
    out, key = export
    ids = [it["item"] for it in key["items"]]
    path = tmp_path / "ann.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item", "text", "quality", "sentiment"])
        texts = texts_of(key)
        w.writerow([ids[0], texts[ids[0]], "4", "positive"])
        w.writerow([ids[1], texts[ids[1]], "", "negative"])  # label without a quality
        w.writerow([ids[2], "", "", ""])  # left blank
        w.writerow([ids[3], texts[ids[3]], "2", ""])  # quality without a label: the AI's label places it
    with pytest.warns(RatingsWarning) as record:
        result = import_ratings(out, [path])
    text = " | ".join(str(r.message) for r in record)
    assert "ann.csv row 3" in text and "without a quality rating" in text
    assert "ann.csv row 5" in text and "without a sentiment label" in text
    assert f"gave no quality rating for {len(ids) - 2} of {len(ids)} items: {ids[1]}, {ids[2]}, {ids[4]}" in text
    assert sum(r["ratings"] for r in result.methods) == 2


def test_label_studio_problems(export, tmp_path):
    out, key = export
    item = key["items"][0]["item"]
    tasks = [{"data": {"item": item, "text": key["items"][0]["text"]}, "annotations": [
        {"completed_by": {"id": 3, "email": "ann@example.org"}, "result": [
            {"from_name": "quality", "type": "rating", "value": {"rating": 4}},
            {"from_name": "sentiment", "type": "choices", "value": {"choices": ["positive", "negative"]}}]},
        {"completed_by": 4, "was_cancelled": True, "result": []}]}]
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(tasks))
    with pytest.raises(RatingsError, match=r"sentiment with other than one choice: ls.json task 1 annotation 1"):
        import_ratings(out, [path])
    tasks[0]["annotations"][0]["result"].pop()
    path.write_text(json.dumps(tasks))
    with pytest.warns(RatingsWarning) as record:
        result = import_ratings(out, [path], write=False)
    assert any("cancelled annotations (skipped): ls.json task 1 annotation 2" in str(r.message) for r in record)
    assert result.raters == ["ann@example.org"]
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(RatingsError, match=r"\.csv files or Label Studio \.json"):
        import_ratings(out, [tmp_path / "x.txt"])


def test_categorical_measure_labels_are_its_categories(tmp_path):
    measures = [categorical("genre", ["horror", "romance", "comedy"])]
    run = make_run(tmp_path / "r", measures=measures, rows=random_rows(measures, 12))
    key = export_items([run], out=tmp_path / "out", per_cell=1)
    assert key["measures"] == [{"name": "genre", "labels": ["horror", "romance", "comedy"], "categorical": True}]
    assert all(it["ai_labels"]["genre"] == ["horror", "romance", "comedy"][it["cell"][0]] for it in key["items"])
    assert all(it["method"] == "qdaif" for it in key["items"])


def test_parse_run_arg(tmp_path):
    assert parse_run_arg("runs/a=QDAIF") == (tmp_path.__class__("runs/a"), "QDAIF")
    assert parse_run_arg(str(tmp_path)) == (tmp_path, None)
    odd = tmp_path / "seed=1"
    odd.mkdir()
    assert parse_run_arg(str(odd)) == (odd, None)  # an existing folder is taken whole


def test_cli_export_and_import(runs, tmp_path, capsys):
    a, b = runs
    out = tmp_path / "set"
    cli.main(["human-eval", "export", str(a), f"{b}=beta_method", "--per-cell", "1", "--out", str(out)])
    assert "keep key.json from them" in capsys.readouterr().out
    key = json.loads((out / KEY).read_text())
    ratings = synthetic_ratings(key, ["ann"])
    answers = dict(list(ratings["ann"].items())[:-1])  # one item left out
    cli.main(["human-eval", "import", str(out), str(write_csv(tmp_path / "ann.csv", answers, key))])
    captured = capsys.readouterr()
    assert "| alpha_method |" in captured.out and "| beta_method |" in captured.out
    assert captured.err.startswith("qdaif: warning: rater ann gave no quality rating for 1 of")
    with pytest.raises(SystemExit):
        cli.main(["human-eval", "import", str(tmp_path), str(tmp_path / "ann.csv")])
    assert "has no key.json" in capsys.readouterr().err


# ---------------------------------------------------------------- issue 13
def test_import_refuses_ratings_of_another_export(runs, tmp_path):
    """Item 5: ratings made on another export of the same runs (same ids, other texts) are refused."""
    a, b = runs
    key_a = export_items([a, b], out=tmp_path / "set_a", per_cell=2, seed=1)
    key_b = export_items([a, b], out=tmp_path / "set_b", per_cell=2, seed=2)  # same texts, other item ids
    assert texts_of(key_a) != texts_of(key_b) and set(texts_of(key_a)) == set(texts_of(key_b))
    answers = {it["item"]: (3, "positive") for it in key_b["items"]}
    rated_on_b = write_csv(tmp_path / "ann.csv", answers, key_b)
    with pytest.raises(RatingsError, match=r"not this export's text of the item .*ann.csv: \d+ of \d+ rated items"):
        import_ratings(tmp_path / "set_a", [rated_on_b])
    assert not (tmp_path / "set_a" / RESULTS_MD).exists()
    import_ratings(tmp_path / "set_b", [rated_on_b], write=False)  # the export they were made on
    ls = write_label_studio(tmp_path / "ls.json", answers, key_b)
    with pytest.raises(RatingsError, match=r"ls.json: \d+ of \d+ rated items"):
        import_ratings(tmp_path / "set_a", [ls])
    from tests.helpers import run_cli
    from tests.test_cli import assert_one_line_error

    assert_one_line_error(run_cli("human-eval", "import", str(tmp_path / "set_a"), str(rated_on_b), cwd=tmp_path),
                          "ratings made on another export?")


LS_TIME = "2026-11-30T10:{:02d}:{:02d}.{:06d}Z"


def label_studio_exports(key, ratings):
    """The three exports Label Studio 1.23 writes for a project with qdaif's config and tasks.

    ``ratings`` is {user id: {item: (quality, label)}}. Built by hand in Label Studio's
    shapes: the full JSON (tasks with their annotations; ``completed_by`` a user id),
    JSON-MIN (one flat row per annotation, a Rating as ``[{"rating": N}]``, a single
    choice as its label, ``annotator`` the user id) and CSV (JSON-MIN's columns sorted,
    non-numbers quoted, a Rating as compact JSON text, ``annotator`` the id as text).
    """
    texts = texts_of(key)
    full, json_min, rows, next_id = [], [], [], 1
    for t, it in enumerate(key["items"], 1):
        item = it["item"]
        annotations = []
        for user, answers in ratings.items():
            if item not in answers:
                continue
            q, label = answers[item]
            created = LS_TIME.format(user, t % 60, 1000 * t + user)
            annotations.append({
                "id": next_id, "completed_by": user,
                "result": [
                    {"value": {"rating": q}, "id": f"r{next_id}q", "from_name": "quality", "to_name": "text",
                     "type": "rating", "origin": "manual"},
                    {"value": {"choices": [label]}, "id": f"r{next_id}s", "from_name": "sentiment", "to_name": "text",
                     "type": "choices", "origin": "manual"}],
                "was_cancelled": False, "ground_truth": False, "created_at": created, "updated_at": created,
                "draft_created_at": None, "lead_time": 4.2, "prediction": {}, "result_count": 2,
                "unique_id": f"00000000-0000-4000-8000-{next_id:012d}", "import_id": None, "last_action": None,
                "bulk_created": False, "task": t, "project": 1, "updated_by": user, "parent_prediction": None,
                "parent_annotation": None, "last_created_by": None})
            next_id += 1
        full.append({"id": t, "annotations": annotations, "file_upload": "0a1b2c3d-label_studio_tasks.json",
                     "drafts": [], "predictions": [], "data": {"item": item, "text": texts[item]}, "meta": {},
                     "created_at": LS_TIME.format(0, 0, t), "updated_at": LS_TIME.format(0, 0, t), "inner_id": t,
                     "total_annotations": len(annotations), "cancelled_annotations": 0, "total_predictions": 0,
                     "comment_count": 0, "unresolved_comment_count": 0, "last_comment_updated_at": None,
                     "project": 1, "updated_by": None, "comment_authors": []})
        for ann in sorted(annotations, key=lambda x: x["created_at"], reverse=True):
            q, label = ann["result"][0]["value"]["rating"], ann["result"][1]["value"]["choices"][0]
            json_min.append({"item": item, "text": texts[item], "id": t, "quality": [{"rating": q}], "sentiment": label,
                             "annotator": ann["completed_by"], "annotation_id": ann["id"],
                             "created_at": ann["created_at"], "updated_at": ann["updated_at"], "lead_time": 4.2})
            rows.append({**json_min[-1], "quality": json.dumps([{"rating": q}], separators=(",", ":")),
                         "annotator": str(ann["completed_by"])})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=sorted(rows[0]), quoting=csv.QUOTE_NONNUMERIC)
    w.writeheader()
    w.writerows(rows)
    return (json.dumps(full, indent=2, ensure_ascii=False), json.dumps(json_min, indent=2, ensure_ascii=False),
            buf.getvalue())


def test_label_studio_json_json_min_and_csv_exports_import_alike(export, tmp_path):
    """Item 6: all three Label Studio export formats, raters from the annotator ids."""
    out, key = export
    ratings = synthetic_ratings(key, ["a", "b"], seed=5)
    by_user = {1: ratings["a"], 2: ratings["b"]}
    full, json_min, table = label_studio_exports(key, by_user)
    assert '"quality": [\n      {\n        "rating": ' in json_min  # Label Studio's JSON-MIN shape of a Rating
    assert table.splitlines()[0] == ('"annotation_id","annotator","created_at","id","item","lead_time","quality",'
                                     '"sentiment","text","updated_at"')
    order = [it["item"] for it in key["items"]]
    expected_kappa = cohen([ratings["a"][i][0] for i in order], [ratings["b"][i][0] for i in order])
    expected = expected_scores(key, {"user1": ratings["a"], "user2": ratings["b"]})
    for name, content in (("full.json", full), ("min.json", json_min), ("export.csv", table)):
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        result = import_ratings(out, [path], write=False)
        assert result.raters == ["user1", "user2"], name
        assert result.warnings == [], name
        inter = {r["rating"]: r for r in result.inter_rater}
        assert inter["quality"]["statistic"] == "Cohen's kappa"
        assert inter["quality"]["value"] == pytest.approx(expected_kappa), name
        for row in result.methods:
            assert (row["human_qd"], row["mean_quality"], row["agreement_sentiment"]) == pytest.approx(
                expected[row["method"]]), name


def test_label_studio_same_annotations_in_two_files_warn_and_count_once(export, tmp_path):
    """Item 6: the same annotations exported twice are two raters, not four."""
    out, key = export
    ratings = synthetic_ratings(key, ["a", "b"], seed=6)
    full, json_min, table = label_studio_exports(key, {1: ratings["a"], 2: ratings["b"]})
    (tmp_path / "full.json").write_text(full)
    (tmp_path / "again.csv").write_text(table)
    with pytest.warns(RatingsWarning, match=r"annotation\(s\) of full.json appear again in again.csv"):
        result = import_ratings(out, [tmp_path / "full.json", tmp_path / "again.csv"], write=False)
    assert result.raters == ["user1", "user2"]
    inter = {r["rating"]: r for r in result.inter_rater}
    assert inter["quality"]["statistic"] == "Cohen's kappa"
    order = [it["item"] for it in key["items"]]
    assert inter["quality"]["value"] == pytest.approx(
        cohen([ratings["a"][i][0] for i in order], [ratings["b"][i][0] for i in order]))
    assert sum(r["ratings"] for r in result.methods) == 2 * len(order)
