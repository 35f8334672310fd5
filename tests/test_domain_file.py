"""Domains from one YAML file, with no Python (``domain_file=PATH``)."""

import json

import pytest
import yaml

from qdaif.run_dir import ELITES
from tests.helpers import run_cli
from tests.test_cli import assert_one_line_error

EXAMPLE = "docs/examples/desserts.yaml"


@pytest.fixture
def example(tmp_path):
    from qdaif.domain import project_root

    return yaml.safe_load((project_root() / EXAMPLE).read_text())


def test_example_domain_file_runs_and_names_the_run_dir(tmp_path, example):
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(example))
    run_cli("run", "domain_file=d.yaml", "model=scripted_fake", "iterations=2", "batch_size=3", "progress=false",
            cwd=tmp_path, check=True)
    (run,) = (tmp_path / "runs" / "desserts").iterdir()
    assert json.loads((run / ELITES).read_text().splitlines()[0])["cell"][0] in range(10)
    assert "Main flavour" in (run / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda d: d.pop("lmx"), "missing required field 'lmx'"),
        (lambda d: d.update(colour="red"), "unknown field(s) colour"),
        (lambda d: d["measures"][0].update(query="Text: {text} in {style}"), "unknown placeholder(s) {style}"),
        (lambda d: d["quality"].pop("labels"), "quality: missing required field 'labels'"),
    ],
)
def test_invalid_domain_file_names_the_field(tmp_path, example, edit, fragment):
    edit(example)
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(example))
    proc = run_cli("run", "domain_file=d.yaml", "model=scripted_fake", "iterations=1", cwd=tmp_path)
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "runs").exists()


def test_missing_domain_file(tmp_path):
    assert_one_line_error(run_cli("run", "domain_file=nope.yaml", "model=scripted_fake", cwd=tmp_path),
                          "domain_file 'nope.yaml' does not exist")


# ---------------------------------------------------------------- issue 13: domain files are data
FAKE_RUN = ["model=scripted_fake", "progress=false", "iterations=1", "batch_size=2"]


def test_plugin_from_the_current_folder_is_refused_without_allow_code(tmp_path, example):
    """Item 3: plugin: names only registered plugins unless allow_code=true."""
    (tmp_path / "evil_plugin.py").write_text("open('MARKER', 'w').write('ran')\n")
    example["plugin"] = "evil_plugin"
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(example))
    proc = run_cli("run", "domain_file=d.yaml", *FAKE_RUN, cwd=tmp_path)
    assert_one_line_error(proc, "'evil_plugin' is not a registered plugin", "multitask, redteam, rewrites", "allow_code=true")
    assert not (tmp_path / "MARKER").exists()
    assert not (tmp_path / "runs").exists()
    # the user's explicit trust imports it (and this module is no plugin)
    proc = run_cli("run", "domain_file=d.yaml", "allow_code=true", *FAKE_RUN, cwd=tmp_path)
    assert_one_line_error(proc, "evil_plugin defines no 'Plugin' class")
    assert (tmp_path / "MARKER").exists()


def test_builtin_plugins_are_registered_and_load_by_name_or_module():
    from qdaif.plugin import BUILTIN_PLUGINS, plugin_class, registered_plugins
    from qdaif.plugins.multitask import Plugin as Multitask
    from qdaif.plugins.rewrites import Plugin as Rewrites

    assert plugin_class("multitask") is Multitask and plugin_class("rewrites") is Rewrites
    assert plugin_class("qdaif.plugins.multitask") is Multitask
    assert set(BUILTIN_PLUGINS) <= set(registered_plugins())


def test_plugin_entry_points_of_installed_packages_are_registered(monkeypatch):
    import importlib.metadata

    from qdaif.errors import ConfigError
    from qdaif.plugin import ENTRY_POINT_GROUP, plugin_class
    from tests.test_plugin import Plugin as Toy

    seen = []

    def entry_points(*, group):
        seen.append(group)
        return [importlib.metadata.EntryPoint(name="toy", value="tests.test_plugin", group=group),
                importlib.metadata.EntryPoint(name="toy_class", value="tests.test_plugin:Plugin", group=group),
                importlib.metadata.EntryPoint(name="broken", value="tests.test_plugin:Nope", group=group)]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    assert plugin_class("toy") is Toy and plugin_class("toy_class") is Toy
    assert seen and set(seen) == {ENTRY_POINT_GROUP}
    with pytest.raises(ConfigError, match="registered as tests.test_plugin:Nope, which does not exist"):
        plugin_class("broken")
    with pytest.raises(ConfigError, match=r"'tests.test_plugin' is not a registered plugin \(registered: broken, multitask"):
        plugin_class("tests.test_plugin")  # the same module, named directly: not without allow_code
    assert plugin_class("tests.test_plugin", allow_code=True) is Toy


def test_domain_texts_are_literal_no_interpolation(tmp_path, example):
    """Item 3: ${oc.env:VAR} and ${anything} in prompts, shots and seeds are text, not resolved, no crash."""
    import os

    example["lmx"]["instruction"] = "Secret ${oc.env:QDAIF_TEST_SECRET}:"
    example["seeds"].append("A cake at ${price} and \\${escaped}.")
    example["quality"]["shots"] = "Text: ${oc.env:HOME}\nTopic: other\n\n"
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(example))
    env_secret = "hunter2-do-not-leak"
    os.environ["QDAIF_TEST_SECRET"] = env_secret
    try:
        run_cli("run", "domain_file=d.yaml", *FAKE_RUN, "hydra.run.dir=runs/lit", cwd=tmp_path, check=True)
        config = (tmp_path / "runs/lit/config.yaml").read_text()
        assert env_secret not in config and os.environ.get("HOME", "/nohome") not in config.replace("runs/lit", "")
        recorded = yaml.safe_load(config)["domain"]
        assert recorded["lmx"]["instruction"] == "Secret ${oc.env:QDAIF_TEST_SECRET}:"
        assert recorded["seeds"][-1] == "A cake at ${price} and \\${escaped}."
        run_cli("run", "resume=runs/lit", "iterations=2", cwd=tmp_path, check=True)  # resuming keeps them literal
        assert env_secret not in (tmp_path / "runs/lit/config.yaml").read_text()
    finally:
        del os.environ["QDAIF_TEST_SECRET"]
    from qdaif.cli import compose_config
    from qdaif.domain import domain_from_config

    cfg = compose_config([f"domain_file={tmp_path / 'd.yaml'}", "model=scripted_fake"])
    domain = domain_from_config(cfg.domain)
    assert domain.lmx.instruction == "Secret ${oc.env:QDAIF_TEST_SECRET}:"
    assert domain.seeds[-1] == "A cake at ${price} and \\${escaped}."
    assert domain.quality.shots.startswith("Text: ${oc.env:HOME}")


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda d: d["measures"][0].update(edges="abc"), "measures[0].edges must be an increasing list"),
        (lambda d: d["lmx"].update(num_examples="abc"), "lmx.num_examples must be an integer >= 1, got 'abc'"),
        (lambda d: d.update(version="abc"), "version must be an integer >= 0, got 'abc'"),
        (lambda d: d["generation"].update(max_tokens="abc"), "generation.max_tokens must be an integer >= 1, got 'abc'"),
        (lambda d: d["measures"][0].update(logit_scale="abc"), "measures[0].logit_scale must be a number > 0, got 'abc'"),
        (lambda d: d.update(measures={"chocolate": d["measures"][0]}), "measures must be a list of measures"),
        (lambda d: d["generation"].update(temperature="hot"), "generation.temperature must be a number >= 0"),
        (lambda d: d["generation"].update(temperature=-1), "generation.temperature must be a number >= 0"),
        (lambda d: d["generation"].update(top_p=5), "generation.top_p must be a number in (0, 1], got 5"),
        (lambda d: d["quality"].update(labels=" dessert"), "quality.labels must be a list of texts"),
        (lambda d: d.update(seeds="one seed"), "seeds must be a list of texts"),
    ],
)
def test_domain_values_of_the_wrong_type_give_one_line(tmp_path, example, edit, fragment):
    """Item 4: wrong types and ranges are refused at validation, naming the field and the allowed values."""
    edit(example)
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(example))
    assert_one_line_error(run_cli("run", "domain_file=d.yaml", *FAKE_RUN, cwd=tmp_path), fragment)
    assert not (tmp_path / "runs").exists()


def test_categorical_measure_without_categories_is_plottable_reportable_exportable(tmp_path, example):
    """Item 5: a categorical judge without categories names its bins by its labels, in every reader."""
    example["measures"][0].update(kind="categorical")
    example["measures"][0].pop("edges")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(example))
    run_cli("run", "domain_file=d.yaml", *FAKE_RUN, "iterations=2", "hydra.run.dir=runs/cat", cwd=tmp_path, check=True)
    from qdaif.runs import load_run

    (axis,) = load_run(tmp_path / "runs/cat").axes
    assert axis.categories == ("chocolate", "fruit")
    run_cli("plot", "runs/cat", cwd=tmp_path, check=True)
    run_cli("report", "runs/cat", cwd=tmp_path, check=True)
    run_cli("human-eval", "export", "runs/cat", "--out", "set", cwd=tmp_path, check=True)
    assert (tmp_path / "runs/cat/heatmap.png").stat().st_size > 0 and (tmp_path / "runs/cat/report.html").is_file()
    key = json.loads((tmp_path / "set/key.json").read_text())
    assert key["measures"] == [{"name": "chocolate", "labels": ["chocolate", "fruit"], "categorical": True}]


@pytest.mark.embedded
def test_seed_longer_than_the_model_context_is_refused_in_one_line(tmp_path, example):
    """Item 4: a 40 KB seed is refused before any prompt reaches the real model (it grew to 11 GB before)."""
    example["seeds"].append("word " * 8200)
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(example))
    proc = run_cli("run", "domain_file=d.yaml", "model=embedded", "progress=false", "iterations=1", "batch_size=2",
                   cwd=tmp_path)
    assert_one_line_error(proc, "does not fit the model's context of 8192 tokens, so it was not sent")
    assert not list((tmp_path / "runs").glob("*/*/config.yaml"))
