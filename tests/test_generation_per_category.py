"""Generation settings per category (``generation.per_category``): config, the rewrite
operator's choice of settings, and one generate call per setting that keeps candidate order.
Engine logic only, so the scripted fake LM stands in for the model."""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import numpy as np
import pytest
from omegaconf import OmegaConf

from qdaif.algorithms import QDAIF
from qdaif.cli import compose_config
from qdaif.domain import domain_from_config
from qdaif.errors import ConfigError
from qdaif.lm._fake import ScriptedFakeLM
from qdaif.operators import LMXRewrite, Proposal
from qdaif.run_dir import HISTORY, RunDir
from qdaif.search import Search, SearchState

PER_CATEGORY = {
    "measure": "genre",
    "settings": {
        "sonnet": {"max_tokens": 200, "stop": ["###"]},
        "haiku": {"max_tokens": 30},
    },
}


def poetry_node(per_category=PER_CATEGORY) -> dict:
    node = OmegaConf.to_container(compose_config(["domain=poetry", "model=scripted_fake"]).domain, resolve=False)
    node = copy.deepcopy(node)
    node["generation"] = {"max_tokens": 80, "temperature": 0.8, "top_p": 0.95, "stop": ["###", "\n\n"]}
    if per_category is not None:
        node["generation"]["per_category"] = per_category
    return node


def test_a_target_cell_gets_its_categorys_settings_and_others_the_default():
    d = domain_from_config(poetry_node())
    sonnet = d.generation_for({"genre": "sonnet", "tone": "dark"})
    assert (sonnet.max_tokens, sonnet.stop) == (200, ("###",))
    assert sonnet.temperature == d.generation.temperature == 0.8  # fields not given are the default's
    haiku = d.generation_for({"genre": "haiku", "tone": "happy"})
    assert (haiku.max_tokens, haiku.stop) == (30, ("###", "\n\n"))
    assert d.generation_for({"genre": "ballad", "tone": "happy"}) == d.generation  # no entry: the default
    assert d.generation_for(None) == d.generation  # no target (seeded init, random search)
    assert domain_from_config(poetry_node(None)).generation_for({"genre": "sonnet"}) == d.generation


@pytest.mark.parametrize("per_category, message", [
    ({"measure": "form", "settings": {}}, "generation.per_category.measure must name a categorical measure (genre, tone), got 'form'"),
    ({"measure": "genre", "settings": {"ode": {"max_tokens": 9}}}, "generation.per_category.settings: unknown categor(ies) ode"),
    ({"measure": "genre", "settings": {"sonnet": {"max_tokens": 0}}}, "generation.per_category.settings.sonnet.max_tokens must be an integer >= 1, got 0"),
    ({"measure": "genre", "settings": {"sonnet": {"tokens": 9}}}, "generation.per_category.settings.sonnet: unknown field(s) tokens"),
    ({"measure": "genre", "settings": {"sonnet": 200}}, "generation.per_category.settings.sonnet must be a mapping"),
    ({"measure": "genre", "by": "x", "settings": {}}, "generation.per_category: unknown field(s) by"),
    ({"settings": {}}, "generation.per_category: missing required field 'measure'"),
])
def test_bad_per_category_settings_give_one_line_errors(per_category, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        domain_from_config(poetry_node(per_category))
    assert "\n" not in str(e.value)


def test_unknown_generation_field_names_per_category_as_allowed():
    node = poetry_node()
    node["generation"]["per_categroy"] = {}
    with pytest.raises(ConfigError, match=r"unknown field\(s\) per_categroy; allowed: max_lines, max_tokens, per_category, stop"):
        domain_from_config(node)


def _archive_with_elites(domain):
    state = SearchState.new(domain, 0)
    state.archive.add(solution=np.array(["a poem", "another poem"], dtype=object), objective=np.array([5.0, 6.0]),
                      measures=np.array([[0.5, 0.5], [1.5, 2.5]]), id=np.array([0, 1]), iteration=np.array([1, 1]))
    return state.archive


def test_rewrite_toward_a_sonnet_cell_asks_for_the_sonnet_settings():
    d = domain_from_config(poetry_node())
    proposals = LMXRewrite(domain=d).propose(_archive_with_elites(d), np.random.default_rng(0), 60)
    seen = set()
    for p in proposals:
        genre = re.search(r"A \w+ (\w+):\n$", p.prompt).group(1)
        seen.add(genre)
        if genre == "sonnet":
            assert p.generation["max_tokens"] == 200 and tuple(p.generation["stop"]) == ("###",)
        elif genre == "haiku":
            assert p.generation["max_tokens"] == 30
        else:
            assert p.generation == {}  # the domain's default
    assert {"sonnet", "haiku", "ballad"} <= seen


class RecordingLM(ScriptedFakeLM):
    """The scripted fake LM, recording each generate call's settings and answering with
    the target header of each prompt and the call's max_tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, tuple[str, ...], list[str]]] = []

    def generate(self, prompts, *, max_tokens, temperature=1.0, top_p=1.0, stop=(), seed=None):
        self.generate_calls.append(len(prompts))
        self.calls.append((max_tokens, tuple(stop), list(prompts)))
        return [f" {p.rsplit(chr(10), 2)[-2]} {max_tokens}" for p in prompts]


def test_search_makes_one_call_per_setting_and_keeps_candidate_order(tmp_path):
    d = domain_from_config(poetry_node())
    genres = ["sonnet", "ballad", "haiku", "sonnet", "hymn", "haiku", "sonnet", "limerick"]
    expected_tokens = {"sonnet": 200, "haiku": 30}

    class Fixed(QDAIF):
        """Proposes one rewrite per genre of ``genres``, in that order, with its settings."""

        def propose(self, archive, evaluations, rng, n):
            return [Proposal(f"A dark {g}:\nold\n###\nA dark {g}:\n", "lmx_rewrite", (k,),
                             generation={} if g not in expected_tokens else dataclasses.asdict(d.generation_for({"genre": g})))
                    for k, g in enumerate(genres)]

    lm = RecordingLM()
    state = SearchState.new(d, 0, Fixed(domain=d, init_evaluations=0, min_init_cells=1))
    state.archive = _archive_with_elites(d)
    Search(domain=d, lm=lm, judge_lm=lm, run_dir=RunDir(tmp_path), state=state, batch_size=len(genres), seed=0).step()
    # one call per distinct setting: sonnet, default (ballad, hymn, limerick), haiku
    assert sorted(lm.generate_calls) == [2, 3, 3]
    by_tokens = {tokens: (stop, prompts) for tokens, stop, prompts in lm.calls}
    assert by_tokens[200][0] == ("###",) and all("sonnet" in p for p in by_tokens[200][1])
    assert by_tokens[80][0] == ("###", "\n\n") and all("sonnet" not in p and "haiku" not in p for p in by_tokens[80][1])
    history = [json.loads(x) for x in (tmp_path / HISTORY).read_text().splitlines()]
    assert [h["parents"] for h in history] == [[k] for k in range(len(genres))]  # candidate order kept
    assert [h["text"] for h in history] == [f"A dark {g}: {expected_tokens.get(g, 80)}" for g in genres]


def test_max_lines_cuts_after_the_nth_non_blank_line_keeping_stanza_breaks():
    from qdaif.domain import Generation

    text = "a\nb\n\nc\nd\n\ne"
    assert Generation(max_lines=3).cut(text) == "a\nb\n\nc"
    assert Generation(max_lines=9).cut(text) == text and Generation().cut(text) == text


def test_poetry_gives_each_form_room_for_its_lines():
    d = domain_from_config(compose_config(["domain=poetry", "model=scripted_fake"]).domain)
    sonnet, haiku = d.generation_for({"genre": "sonnet"}), d.generation_for({"genre": "haiku"})
    assert sonnet.max_lines == 14 and sonnet.max_tokens >= 150 and "\n\n" not in sonnet.stop  # 14 lines
    assert "\n\n" not in d.generation_for({"genre": "ballad"}).stop  # several stanzas
    assert haiku.max_lines == 3 and haiku.max_tokens < sonnet.max_tokens
    assert d.generation_for(None) == d.generation


def test_rewrite_proposals_record_their_target_cell():
    d = domain_from_config(poetry_node())
    for p in LMXRewrite(domain=d).propose(_archive_with_elites(d), np.random.default_rng(1), 10):
        assert p.prompt.endswith(d.rewrite.header.format(**p.meta["target"]) + "\n")
