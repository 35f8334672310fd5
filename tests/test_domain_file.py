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
