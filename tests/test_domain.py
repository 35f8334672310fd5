import copy

import pytest
from omegaconf import OmegaConf

from qdaif.domain import domain_from_config, domain_names
from qdaif.errors import ConfigError


def test_opinions_domain_loads(opinions_domain):
    d = opinions_domain
    assert d.name == "opinions" and d.dims == (20,)
    assert d.measures[0].edges[:3] == (0.0, 0.005, 0.01) and d.measures[0].edges[-2:] == (0.995, 1.0)
    assert len(d.seeds) >= 3 and d.lmx.num_examples == 3
    prefix, suffix = d.quality.prompt_parts("Kale is great.")
    assert prefix.endswith("\n\n") and "Kale is great." in suffix and "Kale" not in prefix
    assert "opinions" in domain_names()


@pytest.fixture
def node(opinions_cfg):
    return OmegaConf.to_container(opinions_cfg.domain)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda n: n.pop("seeds"), "missing required field 'seeds'"),
        (lambda n: n.update(colour="red"), "unknown field"),
        (lambda n: n["quality"].update(query="Text without placeholder"), r"quality.query must contain the placeholder \{text\}"),
        (lambda n: n["measures"][0].update(edges=[0.0, 0.5, 0.4, 1.0]), r"measures\[0\].edges must be an increasing list"),
        (lambda n: n["measures"][0].update(edges=[0.1, 0.5, 1.0]), r"must span \[0, 1\]"),
        (lambda n: n["quality"].update(labels=[" yes"]), "at least two distinct"),
        (lambda n: n["quality"].update(labels=[" 1", " 10"]), "' 1' is a prefix of ' 10'"),
        (lambda n: n["generation"].update(temprature=0.5), r"generation: unknown field\(s\) temprature"),
        (lambda n: n.update(measures=[]), "at least one measure"),
    ],
)
def test_invalid_domain_names_the_field(node, edit, message):
    node = copy.deepcopy(node)
    edit(node)
    with pytest.raises(ConfigError, match=message):
        domain_from_config(node)
