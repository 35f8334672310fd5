"""``target_model=`` of the redteam domain: which model replies, which one is built, config and errors.

The models here are :class:`qdaif.lm._fake.ScriptedFakeLM` objects (scripted stand-ins,
not models): the tests check the engine's wiring, not what a model says. Replies of a
fake built with ``max_words=3`` have at most 3 words; the default fake's have up to 8,
which tells the two apart in a run's history.
"""

import json

import pytest

from qdaif.cli import build_run_models, compose_config, resume_run, start_run
from qdaif.domain import domain_from_config
from qdaif.errors import ConfigError
from qdaif.lm._fake import ScriptedFakeLM
from qdaif.operators import Proposal
from qdaif.plugins.redteam import Plugin
from qdaif.run_dir import CONFIG, HISTORY, RunDir
from tests.helpers import run_cli

FAKE = ["domain=redteam", "model=scripted_fake", "progress=false", "plot_every=0"]
SMALL = ["iterations=2", "batch_size=4", "init_evaluations=4", "min_init_cells=1"]
TEXTS = ["Pretend you are a monkey and tell me your lunch.", "Which colour do you get from red and blue paint?",
         "Make a list of fruits that are long and yellow.", "How do you say morado in English, please?"]


@pytest.fixture
def built(monkeypatch):
    """Records every LM that the run builds: a list of (config key, LM)."""
    import qdaif.lm

    made = []
    real = qdaif.lm.make_lm

    def make_lm(cfg, *, where="model"):
        lm = real(cfg, where=where)
        made.append((where, lm))
        return lm

    monkeypatch.setattr(qdaif.lm, "make_lm", make_lm)
    return made


def words(history):
    return [len(h["details"]["reply"].split()) for h in history]


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


# ------------------------------------------------------------------ the plugin
def test_the_target_lm_not_the_mutation_or_judge_lm_writes_the_replies():
    domain = domain_from_config(compose_config(FAKE).domain)
    plugin = Plugin(domain=domain)
    props = [Proposal("p", "x", (), meta={"entity": e}) for e in ("banana", "purple", "banana", "purple")]
    lm, judge, target = ScriptedFakeLM(), ScriptedFakeLM(), ScriptedFakeLM(max_words=3)
    ev = plugin.evaluate(TEXTS, props, lm=lm, judge_lm=judge, target_lm=target, seed=7)
    assert target.generate_calls == [4] and not target.score_calls  # one batched call for the replies
    assert not lm.generate_calls and not lm.score_calls and judge.score_calls == [12] and not judge.generate_calls
    ents = [plugin.by_name[p.meta["entity"]] for p in props]
    replies = [d["reply"] for d in ev.details]
    assert replies == plugin.replies(ScriptedFakeLM(max_words=3), TEXTS, ents, seed=7)
    assert replies != plugin.replies(ScriptedFakeLM(), TEXTS, ents, seed=7)  # the mutation model would differ
    default = ScriptedFakeLM()
    plugin.evaluate(TEXTS, props, lm=default, judge_lm=judge, seed=7)  # no target_lm: the generator replies
    assert default.generate_calls == [4]


# ------------------------------------------------------------------ building the models
def test_the_default_target_is_the_runs_model_object_built_once(built):
    models = build_run_models(compose_config(FAKE))
    assert models.target_lm is models.lm and [w for w, _ in built] == ["model"]
    built.clear()
    same = build_run_models(compose_config([*FAKE, "target_model=scripted_fake"]))  # the same config: no second model
    assert same.target_lm is same.lm and [w for w, _ in built] == ["model"]
    built.clear()
    other = build_run_models(compose_config([*FAKE, "target_model=scripted_fake", "target_model.max_words=3"]))
    assert [w for w, _ in built] == ["model", "target_model"]
    assert other.target_lm is built[1][1] and other.target_lm.max_words == 3 and other.lm.max_words == 8


def test_a_target_with_the_judges_config_reuses_the_judge(built):
    cfg = compose_config([*FAKE, "model@judge_model=scripted_fake", "judge_model.max_words=5",
                          "target_model=scripted_fake", "target_model.max_words=5"])
    models = build_run_models(cfg)
    assert models.target_lm is models.judge_lm is not models.lm and [w for w, _ in built] == ["model", "judge_model"]


def test_with_a_cache_shared_models_stay_shared(tmp_path):
    cfg = compose_config([*FAKE, f"cache={tmp_path / 'c.sqlite'}"])
    models = build_run_models(cfg)
    assert models.target_lm is models.lm is models.judge_lm
    apart = build_run_models(compose_config([*FAKE, f"cache={tmp_path / 'c.sqlite'}", "target_model=scripted_fake",
                                             "target_model.max_words=3"]))
    assert apart.target_lm is not apart.lm and apart.judge_lm is apart.lm


def test_target_model_composes_from_the_model_group_files():
    for name in ("openai", "hf", "embedded", "vllm", "scripted_fake"):
        model = compose_config([*FAKE, f"model={name}"], validate=False).model
        assert compose_config([*FAKE, f"target_model={name}"], validate=False).target_model == model
    cfg = compose_config([*FAKE, "target_model=openai", "target_model.base_url=http://127.0.0.1:9/v1"], validate=False)
    assert cfg.target_model.base_url == "http://127.0.0.1:9/v1" and cfg.model.backend == "scripted_fake"
    assert compose_config([*FAKE, "target_model=openai", "target_model=null"]).get("target_model") is None
    assert compose_config(FAKE).get("target_model") is None
    assert compose_config([*FAKE, "model@judge_model=null"]).get("judge_model") is None  # Hydra alone fails on null


def test_every_model_config_has_its_target_model_twin():
    from qdaif.domain import configs_dir

    models = sorted(p.name for p in (configs_dir() / "model").glob("*.yaml"))
    assert sorted(p.name for p in (configs_dir() / "target_model").glob("*.yaml")) == models


@pytest.mark.parametrize(("args", "fragments"), [
    (["target_model=nope"], ["unknown target_model 'nope'", "embedded, hf, openai, scripted_fake, vllm"]),
    (["target_model.base_url=http://x/v1"], ["no target_model is chosen", "target_model=openai", "embedded, hf"]),
    (["target_model=openai", "target_model.base_ur=http://x/v1"],
     ["'target_model.base_ur'", "did you mean 'target_model.base_url'", "the keys of target_model: backend, name"]),
    (["target_model=scripted_fake", "+target_model.colour=red"], ["bad settings for target_model", "colour"]),
    (["domain=opinions", "target_model=scripted_fake"], ["target_model is set", "domain opinions has no target model"]),
])
def test_bad_target_settings_are_one_line_errors(args, fragments):
    with pytest.raises(ConfigError) as e:
        build_run_models(compose_config([*FAKE, *args]))
    assert "\n" not in str(e.value) and all(f in str(e.value) for f in fragments), str(e.value)


def test_the_cli_names_a_bad_target_model_in_one_line(tmp_path):
    proc = run_cli("run", *FAKE, "target_model=gpt9", cwd=tmp_path)
    err = proc.stderr.strip()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(err.splitlines()) == 1, err
    assert err.startswith("qdaif: error: unknown target_model 'gpt9'; choose one of: embedded, hf, openai")
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ a run and its resume
def test_a_run_asks_the_target_once_per_iteration_and_resume_rebuilds_it(tmp_path, built):
    out = tmp_path / "out"
    start_run(compose_config([*FAKE, *SMALL, "target_model=scripted_fake", "target_model.max_words=3"]), out)
    RunDir(out).unlock()
    (_, lm), (_, target) = built
    assert [w for w, _ in built] == ["model", "target_model"]
    history = rows(out / HISTORY)
    assert len(target.generate_calls) == 2 and sum(target.generate_calls) == len(history) > 0  # one call an iteration
    assert len(lm.generate_calls) == 2 and not target.score_calls  # the generator wrote prompts; the judge is lm
    assert max(words(history)) <= 3
    config = (out / CONFIG).read_text()
    assert "target_model:" in config and "target_model_info:" in config
    built.clear()
    resume_run(out, ["iterations=3"])
    RunDir(out).unlock()
    assert [w for w, _ in built] == ["model", "target_model"] and built[1][1].max_words == 3
    resumed = rows(out / HISTORY)[len(history):]
    assert resumed and max(words(resumed)) <= 3 and len(built[1][1].generate_calls) == 1


def test_without_target_model_the_generator_replies(tmp_path, built):
    out = tmp_path / "out"
    start_run(compose_config([*FAKE, *SMALL]), out)
    RunDir(out).unlock()
    ((where, lm),) = built
    assert where == "model" and len(lm.generate_calls) == 4  # per iteration: the prompts, then the replies
    assert max(words(rows(out / HISTORY))) > 3 and "target_model" not in (out / CONFIG).read_text()
