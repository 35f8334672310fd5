"""export lm-eval: a run's archive as an lm-evaluation-harness task folder, checked by the real harness."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from collections import Counter

import pytest
import yaml

from qdaif import cli
from qdaif.errors import ConfigError
from qdaif.export_lmeval import GENERATE_UNTIL, MULTIPLE_CHOICE, export_lm_eval
from qdaif.runs import load_run
from tests.test_plot import make_run, random_rows

# A pure-data domain with a categorical measure (two labels: the scripted fake LM scores any
# number of labels, but one judge call holds every judge, so all judges here have two) and a
# label measure.
SWEETS = """\
name: sweets
version: 3
description: Desserts, chocolate or fruit.
generation: {max_tokens: 20, temperature: 0.9, top_p: 0.95, stop: ["\\n"]}
lmx: {instruction: "A dessert:"}
seeds: ["Warm apple crumble.", "A dark chocolate tart.", "Lemon posset with raspberries."]
quality:
  name: dessert
  query: "Text: {text}\\nTopic:"
  labels: [" dessert", " other"]
measures:
  - name: flavour
    kind: categorical
    shots: "Text: Molten brownie.\\nFlavour: chocolate\\n\\n"
    query: "Text: {text}\\nFlavour:"
    labels: [" chocolate", " fruit"]
    categories: [choc, fruity]
  - name: warm
    query: "Text: {text}\\nServed:"
    labels: [" warm", " cold"]
    edges: [0.0, 0.25, 0.5, 0.75, 1.0]
"""


def _start(tmp_path_factory, name, overrides):
    from omegaconf import OmegaConf

    cfg = cli.compose_config(["model=scripted_fake", *overrides])
    cfg = OmegaConf.merge(cfg, {"progress": False, "plot_every": 0})
    path = tmp_path_factory.mktemp(name) / "run"
    cli.start_run(cfg, path)
    return path


@pytest.fixture(scope="module")
def opinions_run(tmp_path_factory):
    return _start(tmp_path_factory, "opinions", ["iterations=3", "batch_size=8"])


@pytest.fixture(scope="module")
def sweets_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweets_domain") / "sweets.yaml"
    path.write_text(SWEETS, encoding="utf-8")
    return _start(tmp_path_factory, "sweets", [f"domain_file={path}", "iterations=3", "batch_size=8"])


@pytest.fixture(scope="module")
def multitask_run(tmp_path_factory):
    return _start(tmp_path_factory, "multitask", ["domain=multitask", "domain.settings.mode=stress", "iterations=2",
                                                  "batch_size=8"])


def read_task(out, task):
    """The task YAML (``!function`` tags read as their text) and the documents."""
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: "!function " + loader.construct_scalar(node))
    config = yaml.load((out / f"{task}.yaml").read_text(encoding="utf-8"), Loader=Loader)
    docs = [json.loads(line) for line in (out / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()]
    return config, docs


# ------------------------------------------------------------------ multiple choice
def test_label_measure_exports_multiple_choice_with_the_side_of_one_half(opinions_run, tmp_path):
    run = load_run(opinions_run)
    out = tmp_path / "task"
    result = export_lm_eval(opinions_run, out=out)
    assert (result.task, result.output_type, result.measure) == ("qdaif_opinions_sentiment", MULTIPLE_CHOICE, "sentiment")
    assert sorted(p.name for p in out.iterdir()) == sorted(result.files) == sorted(
        ["README.md", "qdaif_opinions_sentiment.yaml", "qdaif_opinions_sentiment.jsonl"])
    config, docs = read_task(out, result.task)
    assert config["task"] == result.task and config["output_type"] == "multiple_choice"
    assert config["dataset_path"] == "json" and config["test_split"] == "test"
    assert config["dataset_kwargs"]["data_files"]["test"] == str((out / f"{result.task}.jsonl").resolve())
    assert (config["doc_to_text"], config["doc_to_target"], config["target_delimiter"]) == ("prompt", "label", "")
    assert config["doc_to_choice"] == [" positive", " negative"]  # the judge's continuations, as it scored them
    assert [m["metric"] for m in config["metric_list"]] == ["acc", "acc_norm"]
    assert config["metadata"]["version"] == run.config["domain"]["version"]
    assert config["metadata"]["qdaif_run"] == opinions_run.name
    # One document per elite, labelled by the side of 0.5 of P(positive).
    assert len(docs) == result.docs == len(run.elites)
    assert {d["id"] for d in docs} == {e["id"] for e in run.elites}
    for d in docs:
        p = d["measures"]["sentiment"]
        assert d["label"] == (0 if p >= 0.5 else 1)
        assert d["label_name"] == ("positive" if p >= 0.5 else "negative")
        assert d["prompt"].endswith(f"Text: {d['text']}\nTopic: vegetables\nSentiment:")
        assert d["prompt"].startswith(run.config["domain"]["measures"][0]["shots"][:40])
        assert d["seed"] == 0 and d["run"] == opinions_run.name and d["rank_in_cell"] == 0
        assert isinstance(d["quality"], float) and len(d["cell"]) == 1
    assert {d["label"] for d in docs} == {0, 1}
    readme = (out / "README.md").read_text()
    for fragment in ("`opinions` domain", "measure `sentiment`", "scripted_fake", opinions_run.name, "UTC",
                     "algorithm qdaif, seed 0, 3 iterations of 8"):
        assert fragment in readme


def test_categorical_measure_answer_is_the_category_of_the_cell(sweets_run, tmp_path):
    run = load_run(sweets_run)
    default = export_lm_eval(sweets_run, out=tmp_path / "a")
    assert default.measure == "flavour" and default.task == "qdaif_sweets_flavour"  # the first exportable measure
    config, docs = read_task(tmp_path / "a", default.task)
    assert config["doc_to_choice"] == [" chocolate", " fruit"]
    assert config["metadata"]["version"] == 3
    for d in docs:
        assert d["label"] == d["cell"][0]
        assert d["label_name"] == ("choc", "fruity")[d["cell"][0]]
        assert d["prompt"] == f"Text: Molten brownie.\nFlavour: chocolate\n\nText: {d['text']}\nFlavour:"
    warm = export_lm_eval(sweets_run, out=tmp_path / "b", measure="warm", name="my-task")
    _, docs = read_task(tmp_path / "b", "my-task")
    assert warm.task == "my-task" and warm.choices == (" warm", " cold")
    assert [d["label"] for d in docs] == [0 if d["measures"]["warm"] >= 0.5 else 1 for d in docs]
    assert len(docs) == len(run.elites)


def test_per_cell_and_min_quality_select_texts(opinions_run, tmp_path):
    run = load_run(opinions_run)
    three = export_lm_eval(opinions_run, out=tmp_path / "three", per_cell=3)
    _, docs = read_task(tmp_path / "three", three.task)
    per_cell = Counter(tuple(d["cell"]) for d in docs)
    assert len(docs) > len(run.elites) and max(per_cell.values()) <= 3 and len(per_cell) == len(run.elites)
    elite_ids = {e["id"] for e in run.elites}
    assert {d["id"] for d in docs if d["rank_in_cell"] == 0} == elite_ids
    for cell in per_cell:  # the elite first, then the next best by quality
        q = [d["quality"] for d in docs if tuple(d["cell"]) == cell]
        assert q[0] == max(q) and q[1:] == sorted(q[1:], reverse=True)
    cut = sorted(e["quality"] for e in run.elites)[len(run.elites) // 2]
    kept = export_lm_eval(opinions_run, out=tmp_path / "kept", min_quality=cut)
    _, docs = read_task(tmp_path / "kept", kept.task)
    assert {d["id"] for d in docs} == {e["id"] for e in run.elites if e["quality"] >= cut}
    assert "quality >= " in (tmp_path / "kept" / "README.md").read_text()


# ------------------------------------------------------------------ multitask
def _load_utils(out):
    spec = importlib.util.spec_from_file_location("exported_utils", out / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_multitask_exports_generate_until_scored_by_the_exact_checkers(multitask_run, tmp_path):
    from omegaconf import OmegaConf

    from qdaif.domain import domain_from_config
    from qdaif.plugin import make_plugin
    from qdaif.plugins.multitask.checkers import check, references

    run = load_run(multitask_run)
    out = tmp_path / "task"
    result = export_lm_eval(multitask_run, out=out)
    assert (result.task, result.output_type, result.measure) == ("qdaif_multitask_stress", GENERATE_UNTIL, None)
    assert sorted(p.name for p in out.iterdir()) == sorted(result.files)
    config, docs = read_task(out, result.task)
    assert config["process_results"] == "!function utils.process_results"
    assert config["generation_kwargs"]["until"] == ["###", "\nContext:", "Multi-task prompt:"]
    assert config["generation_kwargs"]["do_sample"] is False
    assert [m["metric"] for m in config["metric_list"]] == ["subtasks_passed", "all_passed"]
    assert len(docs) + result.left_out == len(run.elites)
    plugin = make_plugin(domain_from_config(OmegaConf.create(run.config["domain"])))
    utils = _load_utils(out)
    for d in docs:
        assert d["prompt"].startswith("Answer every numbered task.") and d["prompt"].endswith(d["text"] + "\nAnswers:")
        refs = references(plugin.genome(d["text"]))
        checks = json.loads(d["checks"])
        assert [c["task"] for c in checks] == [i for i, r in enumerate(refs, 1) if r is not None]
        # A reply with the reference answers passes what the run's checker passes; no tags pass nothing.
        reply = "\n".join(f"<task{i}>{r.display() if r else 'x'}</task{i}>" for i, r in enumerate(refs, 1))
        want = [check(refs[c["task"] - 1], r.display() if (r := refs[c["task"] - 1]) else "x", reply) for c in checks]
        got = utils.process_results(d, [reply])
        assert got == {"subtasks_passed": sum(want) / len(want), "all_passed": float(all(want))}
        assert utils.process_results(d, ["I do not know."]) == {"subtasks_passed": 0.0, "all_passed": 0.0}
    exact = [d for d in docs if all(c["reference"]["match"] != "format" for c in json.loads(d["checks"]))]
    assert exact, "the shipped seeds have sub-tasks with exact references"
    for d in exact:
        refs = references(plugin.genome(d["text"]))
        reply = "\n".join(f"<task{i}>{r.display() if r else 'x'}</task{i}>" for i, r in enumerate(refs, 1))
        assert utils.process_results(d, [reply])["all_passed"] == 1.0


# ------------------------------------------------------------------ bad input
def _rating_run(tmp_path):
    measures = [{"name": "stars", "kind": "rating", "labels": [" 1", " 2", " 3"], "query": "{text}", "edges": [0, 2, 4]}]
    return make_run(tmp_path / "rated", measures=measures, rows=random_rows(measures, 8))


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["{tmp}/nowhere", "--out", "{tmp}/o"], ["run directory", "does not exist"]),
        (["{tmp}", "--out", "{tmp}/o"], ["is not a qdaif run directory (no config.yaml)"]),
        (["{op}", "--out", "{tmp}/o", "--measure", "genre"], ["unknown measure 'genre'; measures of this run: sentiment"]),
        (["{op}", "--out", "{tmp}/o", "--min-quality", "1.5"], ["nothing to export", "no text has quality >= 1.5",
                                                                  "the best elite's is"]),
        (["{op}", "--out", "{tmp}/full"], ["--out", "exists and is not empty"]),
        (["{op}", "--out", "{tmp}/o", "--per-cell", "0"], ["argument --per-cell: must be an integer >= 1"]),
        (["{op}", "--out", "{tmp}/o", "--min-quality", "nan"], ["argument --min-quality: must be a finite number"]),
        (["{op}", "--out", "{tmp}/o", "--name", "a b"], ["--name must start with a letter"]),
        (["{op}"], ["the following arguments are required: --out"]),
        (["{rated}", "--out", "{tmp}/o"], ["has no label or categorical measure to export", "stars (rating)"]),
        (["{rated}", "--out", "{tmp}/o", "--measure", "stars"], ["measure 'stars' is a rating judge"]),
        (["{mt}", "--out", "{tmp}/o", "--measure", "num_subtasks"], ["--measure is for label and categorical domains"]),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(opinions_run, multitask_run, tmp_path, capsys, args, fragments):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    rated = _rating_run(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(["export", "lm-eval", *(a.format(tmp=tmp_path, op=opinions_run, mt=multitask_run, rated=rated)
                                         for a in args)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("qdaif: error: ") and err.count("\n") == 1, err
    for f in fragments:
        assert f in err
    assert not (tmp_path / "o").exists()
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


def test_a_plugin_domain_other_than_multitask_is_refused(tmp_path):
    path = make_run(tmp_path / "run", measures=[{"name": "x", "kind": "computed", "edges": [0, 1]}],
                    rows=[{"text": "t", "quality": 0.5, "measures": [0.5], "cell": [0]}])
    config = json.loads((path / "config.yaml").read_text())
    config["domain"]["plugin"] = "rewrites"
    (path / "config.yaml").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="plugin rewrites.*does not export to lm-eval"):
        export_lm_eval(path, out=tmp_path / "o")


def test_cli_prints_what_it_wrote(opinions_run, tmp_path, capsys):
    cli.main(["export", "lm-eval", str(opinions_run), "--out", str(tmp_path / "o"), "--per-cell", "2"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("qdaif: wrote task qdaif_opinions_sentiment (multiple_choice, ")
    assert f"lm_eval --include_path {tmp_path / 'o'} --tasks qdaif_opinions_sentiment" in line


# ------------------------------------------------------------------ the real harness
@pytest.mark.embedded
def test_round_trip_through_lm_eval_on_the_embedded_model(opinions_run, multitask_run, tmp_path):
    """Exported tasks load in lm-evaluation-harness and run on the embedded model (hf backend, offline)."""
    pytest.importorskip("lm_eval", reason="lm-eval is not installed: pip install 'qdaif[lmeval]' (scripts/setup.sh --dev)")
    from qdaif.lm._embedded import embedded_model_dir

    tasks = tmp_path / "tasks"  # --include_path reads every task folder below it
    mc = export_lm_eval(opinions_run, out=tasks / "mc")
    gen = export_lm_eval(multitask_run, out=tasks / "gen")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache"),
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "hf",
           "--model_args", f"pretrained={embedded_model_dir()},dtype=float32", "--device", "cpu",
           "--include_path", str(tasks), "--tasks", f"{mc.task},{gen.task}", "--limit", "3", "--batch_size", "4",
           "--output_path", str(tmp_path / "results")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = list((tmp_path / "results").rglob("results_*.json"))
    assert len(found) == 1, found
    results = json.loads(found[0].read_text())["results"]
    assert set(results) == {mc.task, gen.task}
    for task, metrics in ((mc.task, ("acc,none", "acc_norm,none")), (gen.task, ("subtasks_passed,none", "all_passed,none"))):
        for m in metrics:
            assert math.isfinite(results[task][m]) and 0.0 <= results[task][m] <= 1.0, (task, m, results[task])
