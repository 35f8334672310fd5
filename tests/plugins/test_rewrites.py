"""The rewrites domain: data, config, scoring, operators, a fake-LM run and the tta command.

Everything but the last two tests uses fakes (the scripted fake LM, the keyword fake LM
and a bag-of-words fake embedder below); none is a model. The last two tests use the
embedded model and the offline MiniLM embedder: one scores a faithful and a
label-flipping rewrite, one runs the domain through the CLI.
"""

import csv
import json
from collections import Counter

import numpy as np
import pytest

from qdaif.archive import make_archive
from qdaif.domain import domain_from_config
from qdaif.errors import ConfigError
from qdaif.lm import LM
from qdaif.lm._fake import ScriptedFakeLM
from qdaif.operators import Proposal
from qdaif.plugins.rewrites import Plugin, load_texts
from qdaif.plugins.rewrites.classifier import LMClassifier
from qdaif.plugins.rewrites.scoring import (EvidenceLexicon, added_evidence, chrf_distance, embedding_meaning, length_ratio,
                                            rewrite_quality)
from qdaif.plugins.rewrites.tta import aggregate_predictions, generation_budgets
from qdaif.run_dir import CHECKPOINT, CONFIG, ELITES, HISTORY, METRICS
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def cfg():
    from qdaif.cli import compose_config

    return compose_config(["domain=rewrites", "model=scripted_fake"])


@pytest.fixture(scope="module")
def domain(cfg):
    return domain_from_config(cfg.domain)


class BagOfWordsEmbedder:
    """A fake sentence embedder (not a model): unit-norm counts of hashed lower-case words."""

    def embed(self, texts):
        out = np.zeros((len(texts), 64))
        for k, t in enumerate(texts):
            for w in t.lower().split():
                out[k, sum(map(ord, w)) % 64] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@pytest.fixture(scope="module")
def plugin(domain):
    p = Plugin(domain=domain)
    p.embedder = BagOfWordsEmbedder()
    return p


def node_with(cfg, **settings):
    """The domain node (a plain dict) with some settings changed."""
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(cfg.domain, resolve=True)
    node["settings"].update(settings)
    return node


# ------------------------------------------------------------------ data
def test_texts_are_balanced_over_tasks_styles_and_labels():
    texts = load_texts()
    assert len(texts) >= 60
    assert len({t.id for t in texts}) == len(texts)
    by = Counter((t.task, t.style) for t in texts)
    assert set(by) == {(task, style) for task in ("sentiment", "topic", "toxicity") for style in ("id", "ood")}
    for task in ("sentiment", "topic", "toxicity"):
        assert by[(task, "id")] == by[(task, "ood")] >= 10
        for style in ("id", "ood"):
            labels = Counter(t.label for t in texts if t.task == task and t.style == style)
            assert len(labels) >= 2 and max(labels.values()) == min(labels.values()), (task, style, labels)
    assert sum(t.style == "ood" for t in texts) == len(texts) // 2


# ---------------------------------------------------------------- config
def test_domain_loads_and_judge_prompts_render(domain, plugin):
    assert domain.plugin == "rewrites" and domain.dims == (32, 10, 10)
    assert [t.style for t in plugin.inputs] == ["ood"] * 32
    text, original = "a rewrite here", "the original text"
    for name, spec in domain.judges.items():
        rendered = spec.shots + spec.query.format(text=text, original=original)
        assert text in rendered and "{" not in rendered, name
    meaning = domain.judges["meaning"]
    assert original in meaning.query.format(text=text, original=original)
    reqs = plugin.classifier.requests([text] * 3, ["sentiment", "topic", "toxicity"])
    assert [r.continuations for r in reqs] == [(" positive", " negative"), (" world", " sports", " business", " science"),
                                               (" insulting", " polite")]
    assert all(f"Text: {text}\n" in r.suffix for r in reqs)


def test_input_categories_must_match_the_selected_inputs(cfg):
    node = node_with(cfg, limit=3)
    with pytest.raises(ConfigError, match=r"categories must list .* \[sent-ood-01, sent-ood-02, sent-ood-03\]"):
        Plugin(domain=domain_from_config(node))
    node["measures"][0]["categories"] = ["sent-ood-01", "sent-ood-02", "sent-ood-03"]
    assert [t.id for t in Plugin(domain=domain_from_config(node)).inputs] == node["measures"][0]["categories"]


@pytest.mark.parametrize("settings, message", [
    ({"target": "oracle"}, "target must be gold or confidence"),
    ({"inputs": ["nope"]}, "unknown id"),
    ({"colour": 1}, "unknown key"),
    ({"classifier": "json.JSONDecoder"}, "Classifier subclass"),
    ({"meaning": "bert"}, "meaning must be one of embedding, lm, mix"),
    ({"evidence_free": -1}, "evidence_free must be an integer >= 0"),
    ({"evidence": {"sentiment": {"happy": ["glad"]}}}, r"evidence.sentiment: unknown label\(s\) happy"),
])
def test_bad_settings_name_the_field(cfg, settings, message):
    with pytest.raises(ConfigError, match=message):
        Plugin(domain=domain_from_config(node_with(cfg, **settings)))


# --------------------------------------------------------------- scoring
def test_chrf_distance_and_length_ratio():
    text = "the central bank raised interest rates again"
    assert chrf_distance(text, text) == 0.0
    assert chrf_distance("zzqx vvkj", text) > 0.95
    near, far = chrf_distance("the central bank raised rates again", text), chrf_distance("rates went up", text)
    assert 0 < near < far < 1
    assert length_ratio("a b", "a b c d") == -1.0 and length_ratio("a " * 100, "a") == 1.5


def test_added_evidence_ignores_the_originals_own_words():
    lex = EvidenceLexicon(entries={"sentiment": ["love*", "amazing", "bad"]})
    original = "i loved the tacos"
    assert added_evidence("I love the tacos", original, "sentiment", lex) == []  # same stem as 'loved'
    assert added_evidence("amazing tacos, I loved them, amazing", original, "sentiment", lex) == ["amazing"]
    assert added_evidence("bad tacos", original, "topic", lex) == []


def test_rewrite_quality_floor_and_penalty():
    q = rewrite_quality(np.array([0.9, 0.4, 0.9, np.nan]), np.array([0.8, 0.8, 0.8, 0.8]), np.array([0, 0, 2, 0]),
                        floor=0.5, penalty=0.5)
    assert q[:3] == pytest.approx([0.72, 0.0, 0.18]) and np.isnan(q[3])


def test_evidence_counts_only_words_for_another_label_and_piling_on():
    lex = EvidenceLexicon(entries={"sentiment": {"positive": ["superb", "great", "love*"], "negative": ["awful", "worst"]},
                                   "toxicity": ["idiot*"]})
    original = "the new album slaps, no skips"
    assert added_evidence("The new album is superb, with no weak tracks.", original, "sentiment", lex,
                          target="positive", free=2) == []  # a synonym that agrees with the label
    assert added_evidence("The new album is awful, every track is weak.", original, "sentiment", lex,
                          target="positive") == ["awful"]
    assert added_evidence("superb great album, love it, no skips", original, "sentiment", lex, target="positive",
                          free=2) == ["love"]  # the third agreeing word is piling on
    assert added_evidence("superb album, worst ending", original, "sentiment", lex) == ["superb", "worst"]  # no target
    assert added_evidence("what an idiot", "what a person", "toxicity", lex, target="polite") == ["idiot"]
    assert added_evidence("what an idiot", "what a person", "toxicity", lex, target="insulting") == ["idiot"]  # plain list
    assert lex.labels_of("sentiment", "loved") == {"positive"} and lex.labels_of("sentiment", "album") == set()


def test_embedding_meaning_credits_the_distance_a_rewrite_survives():
    m = embedding_meaning(np.array([1.0, 0.85, 0.85, -0.5, 1.0]), np.array([0.0, 0.15, 0.6, 0.9, 1.0]), overlap=0.4)
    assert m[0] == pytest.approx(1 / 1.4)  # a copy
    assert m[1] < m[2]  # same cosine: the near-copy changed something that matters, the rewording did not
    assert m[3] == 0.0 and m[4] == 1.0  # clipped to [0, 1]
    assert embedding_meaning(np.array([0.7]), np.array([0.5]), overlap=0.0)[0] == pytest.approx(0.7)


class KeywordFakeLM(LM):
    """A keyword fake LM (not a model): the meaning judge always says 'same'; sentiment follows cue words.

    P(positive) rises with each of 'amazing', 'love', 'best' and 'obsessed' in the text
    after the last 'Text:'.
    """

    backend = "keyword_fake"

    def generate(self, prompts, **kw):
        raise AssertionError("not used")

    def score(self, requests):
        out = []
        for r in requests:
            text = r.prompt.rsplit("Text:", 1)[-1].lower()
            if r.continuations == (" positive", " negative"):
                cues = sum(text.count(w) for w in ("amazing", "love", "best", "obsessed"))
                out.append([0.0, -1.0 - 2.0 * cues])
            elif r.continuations == (" faithful", " wrong"):
                out.append([0.0, -3.0])
            else:
                out.append([0.0] * len(r.continuations))
        return out


def test_injected_label_evidence_scores_below_a_faithful_paraphrase(plugin):
    inp = plugin.by_id["sent-ood-01"]  # a positive tweet: "... im obsessed ..."
    faithful = "I just tried the new taco place downtown and I am obsessed, going back tomorrow"
    injected = "I just tried the new taco place downtown, amazing, I love it, best tacos, obsessed, going back tomorrow"
    props = [Proposal("p", "paraphrase", (), meta={"input": inp.id})] * 2
    ev = plugin.evaluate([faithful, injected], props, lm=KeywordFakeLM(), judge_lm=KeywordFakeLM(), seed=0)
    p_target = [ev.details[k]["classes"]["positive"] for k in (0, 1)]
    assert p_target[1] > p_target[0]  # the classifier alone would prefer the injected rewrite
    # three added words that agree with the label: two are free (evidence_free), the third is piling on
    assert ev.details[0]["evidence_added"] == [] and ev.details[1]["evidence_added"] == ["best"]
    assert ev.quality[1] < ev.quality[0]
    assert ev.quality[0] == pytest.approx(ev.details[0]["meaning"] * p_target[0])
    assert ev.measures[0, 0] == 0 and 0 < ev.measures[0, 1] < ev.measures[1, 1]


def test_evaluate_makes_one_score_call_and_fills_measures(plugin):
    lm = ScriptedFakeLM()
    ids = ["sent-ood-02", "topi-ood-05", "toxi-ood-03"]
    texts = ["some rewrite", "another rewrite", "third one"]
    ev = plugin.evaluate(texts, [Proposal("p", "icr", (), meta={"input": i}) for i in ids], lm=lm, judge_lm=lm, seed=0)
    assert len(lm.score_calls) == 1 and lm.score_calls[0] == 3 + 3 + 3  # classifier x2, formality (meaning: embedding)
    assert ev.measures[:, 0].tolist() == [plugin.index[i] for i in ids]
    assert np.all((ev.measures[:, 1:] >= 0) & (ev.measures[:, 1:] <= 1)) and np.all(ev.finite)
    assert [d["target"] for d in ev.details] == [plugin.by_id[i].label for i in ids]


def test_meaning_setting_picks_the_measure(cfg, plugin):
    ids, texts = ["sent-ood-02", "toxi-ood-03"], ["finished my first 10k run, best feeling", "the ref is a moron"]
    props = [Proposal("p", "icr", (), meta={"input": i}) for i in ids]
    by_mode = {}
    for mode in ("embedding", "lm", "mix"):
        p = Plugin(domain=domain_from_config(node_with(cfg, meaning=mode)))
        p.embedder = BagOfWordsEmbedder()
        lm = ScriptedFakeLM()
        by_mode[mode] = ev = p.evaluate(texts, props, lm=lm, judge_lm=lm, seed=0)
        assert lm.score_calls[0] == 2 + 2 + 2 + (0 if mode == "embedding" else 2)  # the LM judge only when used
        assert [d["meaning"] for d in ev.details] == pytest.approx(ev.label_probs["meaning"][:, 0], abs=1e-6)
    emb, lmj = by_mode["embedding"].details, by_mode["lm"].details
    assert "meaning_lm" not in emb[0] and "cosine" not in lmj[0]
    for d, e, j in zip(by_mode["mix"].details, emb, lmj):
        assert d["meaning"] == pytest.approx((e["meaning"] + j["meaning"]) / 2, abs=1e-5)


# ------------------------------------------------------------- operators
def test_init_and_mutation_proposals_carry_their_input(plugin, domain):
    rng = np.random.default_rng(0)
    init = plugin.init_proposals(None, rng, 40)
    assert {p.meta["input"] for p in init} == {t.id for t in plugin.inputs}  # 40 >= 32: every input
    for p in init:
        inp = plugin.by_id[p.meta["input"]]
        assert p.operator in ("paraphrase", "icr") and p.prompt.rstrip().endswith(f"Text: {inp.text}\nRewrite:")
        if p.operator == "icr":
            ex = [plugin.by_id[e] for e in p.meta["exemplars"]]
            assert len(ex) == 4 and all(e.task == inp.task and e.style == "id" and e.id != inp.id for e in ex)
            assert all(e.text in p.prompt for e in ex)
    archive = make_archive([m.edges for m in domain.measures], seed=0)
    k = plugin.index["topi-ood-04"]
    archive.add(solution=np.array(["we won the final 3-1", "two late goals won the final"], dtype=object),
                objective=np.array([0.5, 0.6]), measures=np.array([[k, 0.35, 0.15], [k, 0.55, 0.85]]),
                id=np.array([7, 8]), iteration=np.array([1, 1], dtype=np.int32))
    muts = plugin.mutate(archive, np.random.default_rng(1), 300)
    ops = Counter(p.operator for p in muts)
    assert {"paraphrase", "icr", "edit_more_formal", "edit_less_formal"} <= set(ops)
    for p in muts:
        if p.meta["input"] == "topi-ood-04" and p.operator.startswith("edit_") and p.operator != "edit_paraphrase":
            assert p.parents and p.parents[0] in (7, 8) and len(p.meta["target"]) == 2
            parent_formality = 1 if p.parents[0] == 7 else 8
            assert (p.meta["target"][1] > parent_formality) == (p.operator == "edit_more_formal")
            assert "Formal:" in p.prompt if p.operator == "edit_more_formal" else "Casual:" in p.prompt
        elif p.meta["input"] != "topi-ood-04":
            assert p.operator in ("paraphrase", "icr") and p.meta["source"] == "original"  # empty slice: from the original


def test_parse_cuts_labels_quotes_and_overlong_rewrites(plugin):
    prop = Proposal("p", "paraphrase", (), meta={"input": "sent-ood-01"})
    assert plugin.parse(prop, ' "Rewrite: great tacos downtown"\nText: more') == "great tacos downtown"
    assert plugin.parse(prop, "   ") is None
    assert plugin.parse(prop, "x" * 1000) is None


# ------------------------------------------------------------- tta helpers
def test_generation_budgets_add_up_to_the_total():
    history = [{"meta": {"input": "a"}}] * 6 + [{"meta": {"input": "b"}}] * 2
    assert generation_budgets(history, 10, ["a", "b", "c"]) == {"a": 8, "b": 2, "c": 0}
    assert sum(generation_budgets([], 7, ["a", "b", "c"]).values()) == 7


def test_aggregate_predictions_mean_prob_and_logprob():
    probs = [np.array([0.2, 0.8])] * 3 + [np.array([0.99, 0.01])]
    assert aggregate_predictions(probs) == 1  # mean probs 0.3975 vs 0.6025
    assert aggregate_predictions(probs, aggregate="logprob") == 0  # mean log-probs -1.21 vs -1.32


# --------------------------------------------------- run + tta (fake LM)
SUBSET = ["domain.settings.limit=null", "domain.settings.inputs=[sent-ood-01,topi-ood-02,toxi-ood-03,sent-id-01]",
          "domain.measures.0.categories=[sent-ood-01,topi-ood-02,toxi-ood-03,sent-id-01]"]


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_fake_run_and_tta_accuracies(tmp_path, domain):
    run_cli("run", "domain=rewrites", "model=scripted_fake", "iterations=2", "batch_size=8", "init_evaluations=8",
            "hydra.run.dir=out", "progress=false", *SUBSET, cwd=tmp_path, check=True)
    out = tmp_path / "out"
    for name in (CONFIG, METRICS, HISTORY, ELITES, "heatmap.png", CHECKPOINT):
        assert (out / name).is_file(), name
    history, metrics, elites = rows(out / HISTORY), rows(out / METRICS), rows(out / ELITES)
    assert len(metrics) == 2 and metrics[-1]["evaluations"] == 16
    assert history and all(h["meta"]["input"] in ("sent-ood-01", "topi-ood-02", "toxi-ood-03", "sent-id-01")
                           for h in history)
    assert all(h["cell"][0] == ["sent-ood-01", "topi-ood-02", "toxi-ood-03", "sent-id-01"].index(h["meta"]["input"])
               for h in history)
    assert metrics[-1]["qd_score"] == pytest.approx(sum(e["quality"] for e in elites))

    proc = run_cli("tta", "out", "--out", "tta", "--m", "2", cwd=tmp_path, check=True)
    assert "qd_top_m" in proc.stdout
    table = {r["method"]: r for r in csv.DictReader(open(tmp_path / "tta" / "tta.csv"))}
    items = rows(tmp_path / "tta" / "tta_items.jsonl")
    assert {i["input"] for i in items} == {"sent-ood-01", "topi-ood-02", "toxi-ood-03"}  # OOD only
    # Recompute every accuracy here with the same fake LM as the classifier.
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(OmegaConf.load(out / CONFIG).domain, resolve=True)
    classifier = LMClassifier(domain=domain_from_config(node))
    lm = ScriptedFakeLM()
    texts = load_texts()
    by_id = {t.id: t for t in texts}
    good = {}
    for e in elites:
        key = ["sent-ood-01", "topi-ood-02", "toxi-ood-03", "sent-id-01"][e["cell"][0]]
        if e["quality"] > 0:
            good.setdefault(key, []).append(e)
    for method in ("original", "paraphrase_first_m", "paraphrase_all", "qd_top_m", "qd_all"):
        mine = [i for i in items if i["method"] == method]
        correct = 0
        for i in mine:
            t = by_id[i["input"]]
            if method == "qd_top_m":
                expect = [e["text"] for e in sorted(good.get(t.id, []), key=lambda e: (-e["quality"], e["id"]))[:2]]
                assert i["augmentations"] == expect
            if method == "original":
                assert i["augmentations"] == []
            if method == "paraphrase_first_m":
                assert len(i["augmentations"]) <= 2
            all_texts = [t.text] + i["augmentations"]
            probs = np.mean(classifier.predict_proba(all_texts, [t.task] * len(all_texts), lm=lm), axis=0)
            correct += classifier.classes(t.task)[int(np.argmax(probs))] == t.label
        assert int(table[method]["correct"]) == correct and int(table[method]["n"]) == 3
        assert float(table[method]["accuracy"]) == pytest.approx(correct / 3)
    budgets = generation_budgets(history, 16, ["sent-ood-01", "topi-ood-02", "toxi-ood-03", "sent-id-01"])
    spent = sum(v for k, v in budgets.items() if k != "sent-id-01")
    assert int(table["paraphrase_all"]["generations"]) == int(table["qd_all"]["generations"]) == spent
    assert table["original"]["generations"] == "0"


def test_tta_rejects_a_run_of_another_domain(tmp_path):
    run_cli("run", "model=scripted_fake", "iterations=1", "batch_size=4", "init_evaluations=4", "hydra.run.dir=op",
            "progress=false", cwd=tmp_path, check=True)
    proc = run_cli("tta", "op", cwd=tmp_path)
    assert proc.returncode == 2 and "tta needs a run of the rewrites domain" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------ the real model
@pytest.mark.embedded
def test_faithful_rewrite_outscores_a_label_flip_on_the_real_model(domain, embedded_lm):
    plugin = Plugin(domain=domain)  # the real MiniLM embedder, built at the first evaluation
    pairs = {  # input id -> (faithful rewrite, one that keeps most words and flips the label)
        "sent-ood-07": ("My phone shut down again at 40% battery; this device is rubbish, honestly.",
                        "my phone lasted all day AGAIN at 40% battery... this thing is a gem ngl"),
        "toxi-ood-09": ("That is a fair point; I had not considered it from that angle before.",
                        "what a dumb point, i hadnt thought about it that way bc its stupid"),
    }
    ids = [i for i in pairs for _ in range(2)]
    texts = [t for pair in pairs.values() for t in pair]
    ev = plugin.evaluate(texts, [Proposal("p", "paraphrase", (), meta={"input": i}) for i in ids],
                         lm=embedded_lm, judge_lm=embedded_lm, seed=0)
    for k in range(0, len(texts), 2):
        faithful, flipped = ev.details[k], ev.details[k + 1]
        assert ev.quality[k] > ev.quality[k + 1] and ev.quality[k] > 0, (faithful, flipped)
        assert faithful["meaning"] >= plugin.meaning_floor and faithful["evidence_added"] == []


@pytest.mark.embedded
def test_rewrites_run_and_tta_on_the_embedded_model(tmp_path):
    run_cli("run", "domain=rewrites", "iterations=2", "batch_size=4", "init_evaluations=4", "hydra.run.dir=out",
            "progress=false", "model.threads=1", "domain.settings.limit=2",
            "domain.measures.0.categories=[sent-ood-01,sent-ood-02]", cwd=tmp_path, check=True)
    history = rows(tmp_path / "out" / HISTORY)
    assert history and all(h["text"].strip() and h["meta"]["input"] in ("sent-ood-01", "sent-ood-02") for h in history)
    assert all(0 <= h["quality"] <= 1 and 0 <= h["details"]["meaning"] <= 1 for h in history)
    proc = run_cli("tta", "out", "--m", "2", "model.threads=1", cwd=tmp_path, check=True)
    table = {r["method"]: r for r in csv.DictReader(open(tmp_path / "out" / "tta.csv"))}
    assert set(table) == {"original", "paraphrase_first_m", "paraphrase_all", "qd_top_m", "qd_all"}
    assert all(r["n"] == "2" and 0 <= float(r["accuracy"]) <= 1 for r in table.values())
    assert "| original |" in proc.stdout
