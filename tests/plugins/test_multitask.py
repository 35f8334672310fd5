"""The multitask domain plugin: genome, repair, checkers, generators, operators, quality modes, runs."""

import json
from collections import Counter

import numpy as np
import pytest

from qdaif.errors import ConfigError
from qdaif.lm import LM
from qdaif.lm._fake import ScriptedFakeLM
from qdaif.operators import Proposal
from qdaif.plugins.multitask import Plugin, SubTask, TYPES, check, extract_answers, load_items, parse_text, references
from qdaif.plugins.multitask import generators as gen
from qdaif.plugins.multitask.checkers import reference_of
from qdaif.plugins.multitask.genome import RawTask, repair
from qdaif.plugins.multitask.plugin import OPERATORS, _genome_of_item
from qdaif.run_dir import CHECKPOINT, CONFIG, ELITES, HISTORY, METRICS, RunDir
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def domain():
    from qdaif.cli import compose_config
    from qdaif.domain import domain_from_config

    return domain_from_config(compose_config(["domain=multitask", "model=scripted_fake"]).domain)


def with_settings(domain, **settings):
    import dataclasses

    return dataclasses.replace(domain, settings={**domain.settings, **settings})


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


# ------------------------------------------------------------------ data and round trip
def test_shipped_items_are_enough_and_varied():
    items = load_items()
    assert len(items) >= 30
    types = Counter(s["type"] for it in items for s in it["subtasks"])
    assert len(types) >= 8 and set(types) <= set(TYPES)
    cells = {(len(it["subtasks"]), _genome_of_item(it).depth) for it in items}
    assert len(cells) == 15  # the seeds cover every feasible (k, depth) cell


@pytest.mark.parametrize("item", load_items(), ids=lambda it: it["id"])
def test_seed_items_round_trip_and_match_their_references(item, domain):
    g = _genome_of_item(item)
    assert g.k == len(item["subtasks"])  # the items are canonical: repair keeps every sub-task
    assert [s.instruction for s in g.subtasks] == [s["instruction"] for s in item["subtasks"]]
    plain = parse_text(g.render())  # the text holds no gold answers; the plugin finds them again
    assert plain.to_dict() == {**g.to_dict(), "subtasks": [{k: v for k, v in s.items() if k != "answer"}
                                                           for s in g.to_dict()["subtasks"]]}
    assert Plugin(domain=domain).genome(g.render()) == g
    for spec, ref in zip(item["subtasks"], references(g)):
        if "answer" in spec:
            assert ref.match == "gold" and ref.value == spec["answer"]
        elif "reference" in spec:
            value = list(ref.value) if isinstance(ref.value, tuple) else ref.value
            if ref.match == "unordered":
                assert sorted(value) == sorted(spec["reference"])
            else:
                assert value == spec["reference"]
        elif "constraints" in spec:
            assert [list(c) for c in ref.constraints] == spec["constraints"]
        else:
            assert ref is None, spec["instruction"]


def test_default_seeds_are_the_rendered_items(domain):
    assert list(domain.seeds) == Plugin.default_seeds({}) and len(domain.seeds) == len(load_items())
    assert all(parse_text(s).render() == s for s in domain.seeds)


# -------------------------------------------------------------------------- repair
def test_repair_renumbers_fixes_tags_drops_empty_and_clips():
    text = "\n".join([
        "Multi-task prompt: Context:   The shop sold  8 cups.",
        "2. [arithmetic] Compute 8 + 5. Put your answer in <task7>.",  # wrong tag number, odd clause
        "4) [] ",  # empty: dropped
        "5. [math; uses 2] Compute x * 2, where x is your answer to task 2. Answer in <task5></task5> tags.",
        "6. [qa; uses 9] Which item sold best",  # dependency on a missing task: dropped, no full stop: added
        "7. [generate] Write a title using your answer to task 8.",  # mentions a later task: dropped
        "8. [rewrite] Say it again.", "9. [classify] Is it good?", "10. [qa] Why?", "11. [qa] Who sold it?",
    ])
    g = parse_text(text)
    assert g.context == "The shop sold 8 cups."
    assert [s.type for s in g.subtasks] == ["arithmetic", "arithmetic", "qa", "transform", "classify"]  # clipped to 5
    assert g.subtasks[1] == SubTask("arithmetic", "Compute x * 2, where x is your answer to task 1.", (1,))
    assert g.subtasks[2] == SubTask("qa", "Which item sold best.", ())
    rendered = g.render()
    assert rendered.count("<task") == 5 and rendered.count("</task") == 5 and "<task7>" not in rendered
    assert all(f"{i}. [" in rendered and f"<task{i}></task{i}>" in rendered for i in range(1, 6))
    assert parse_text(rendered) == g


def test_repair_cascades_drops_and_remaps_dependencies():
    g = repair("A list.", [RawTask(3, "sort", "Sort the numbers 3, 1, 2 from smallest to largest."),
                           RawTask(1, "count", "Count the items in your answer to task 3.", (3,)),  # task 3 is earlier here
                           RawTask(4, "qa", "Which is first in your answer to task 5?"),  # 5 missing: dropped
                           RawTask(6, "generate", "Use your answer to task 4 in a sentence.")])  # 4 dropped: dropped too
    assert g.k == 2 and g.subtasks[1].depends_on == (1,) and "task 1" in g.subtasks[1].instruction
    assert references(g)[1].value == 3
    assert repair("", [RawTask(1, "qa", "Why?")]) is None and repair("Ctx.", [RawTask(1, "qa", " <task1> ")]) is None


# ------------------------------------------------------------------------ checkers
CASES = [  # instruction, context, reply, passes
    ("Compute 3 + 4 * 2.", "", "<task1>11</task1>", True),
    ("Compute 3 + 4 * 2.", "", "<task1> 14 </task1>", False),
    ("Compute 3 + 4 * 2.", "", "The answer is 11.", False),  # missing tags
    ("Compute 3 + 4 * 2.", "", "Sure! < task1 >11.</task1 > Hope this helps.", True),  # extra text, spaced tags
    ("Compute 3 + 4 * 2.", "", "<task1>11<task1/>", True),  # MTI's closing form
    ("Sort the numbers 5, 2, 9 from smallest to largest.", "", "<task1>2, 5, 9</task1>", True),
    ("Sort the numbers 5, 2, 9 from smallest to largest.", "", "<task1>9, 5, 2</task1>", False),
    ("Sort the words pear, fig, kiwi in alphabetical order.", "", "<task1>Fig, Kiwi, Pear</task1>", True),
    ("From the list 4, 7, 10, 3, pick the even numbers.", "", "<task1>10 and 4</task1>", True),
    ("From the list 4, 7, 10, 3, pick the even numbers.", "", "<task1>4</task1>", False),
    ("From the list 4, 7, 10, 3, pick the largest number.", "", "<task1>10</task1>", True),
    ("Count the words in the context.", "One two three four.", "<task1>4</task1>", True),
    ("Count the words in the context.", "One two three four.", "<task1>5</task1>", False),
    ("Count how many times the letter 'r' appears in \"mirror\".", "", "<task1>3</task1>", True),
    ("Describe the sea using only lowercase letters.", "", "<task1>calm and grey</task1>", True),
    ("Describe the sea using only lowercase letters.", "", "<task1>Calm and grey</task1>", False),
    ("Describe the sea in exactly three words.", "", "<task1>calm grey water</task1>", True),
    ("Describe the sea in exactly three words.", "", "<task1>calm grey</task1>", False),
    ("Ask about the sea, ending with a question mark.", "", "<task1>Is it cold?</task1>", True),
    ("Name a colour including the word 'blue', with nothing outside the task tags.", "", "<task1>deep blue</task1>", True),
    ("Name a colour including the word 'blue', with nothing outside the task tags.", "", "Here: <task1>deep blue</task1>", False),
]


@pytest.mark.parametrize("instruction, context, reply, passes", CASES)
def test_checkers_on_hand_made_answers(instruction, context, reply, passes):
    from qdaif.plugins.multitask.checkers import match_type

    st = SubTask(match_type(instruction), instruction)
    ref = reference_of(st, context, [])
    assert ref is not None, instruction
    assert check(ref, extract_answers(reply, 1)[0], reply) is passes


def test_chained_references_use_the_earlier_reference():
    g = parse_text("Context: Crates: 23, 8, 15.\n"
                   "1. [select] From the list 23, 8, 15, pick the numbers greater than 10.\n"
                   "2. [sort; uses 1] Sort the numbers in your answer to task 1 from largest to smallest.\n"
                   "3. [select; uses 2] From your answer to task 2, pick the smallest number.\n"
                   "4. [arithmetic; uses 3] Compute x * 2, where x is your answer to task 3.\n"
                   "5. [qa] What is stored?")
    refs = references(g)
    assert [r.display() if r else None for r in refs] == ["23, 15", "23, 15", "15", "30", None]
    assert g.depth == 3 and g.depths() == [0, 1, 2, 3, 0]
    reply = "<task1>15, 23</task1><task2>23, 15</task2><task3>15</task3><task4>31</task4>"
    answers = extract_answers(reply, 5)
    assert answers[4] is None
    assert [check(r, a, reply) for r, a in zip(refs[:4], answers[:4])] == [True, True, True, False]


def test_instructions_off_template_are_not_checked_by_code():
    for typ, text in [("arithmetic", "Compute the cost and explain it."), ("sort", "Sort the fruit by taste."),
                      ("count", "Count the vowels in the context."), ("format", "Write it nicely."),
                      ("select", "From the list red, tan, pick the longest word.")]:  # a tie: no single answer
        assert reference_of(SubTask(typ, text), "ctx", []) is None, text


# ---------------------------------------------------------------------- generators
@pytest.mark.parametrize("seed", range(40))
def test_generators_references_are_correct(seed):
    rng = np.random.default_rng(seed)
    for make in (gen.arithmetic, gen.sort_list, gen.select_from_list, gen.count_items):
        st, expected = make(rng)
        ref = reference_of(st, "", [])
        assert ref is not None, st.instruction
        got = ref.value
        assert (sorted(got) == sorted(expected)) if ref.match == "unordered" else got == expected, st.instruction
    st, constraints = gen.format_task(rng, context="A calm sea.")
    assert reference_of(st, "A calm sea.", []).constraints == constraints
    # chained: the generator's own arithmetic on the earlier value, and the checkers' reference agree
    first, values = gen.sort_list(rng)
    chained = {"sort": gen.sort_list, "count": gen.count_items}
    for make in chained.values():
        st, expected = make(rng, (1, values))
        assert reference_of(st, "", [reference_of(first, "", [])]).value == expected
    st, expected = gen.arithmetic(rng, (1, 7))
    assert reference_of(st, "", [reference_of(SubTask("arithmetic", "Compute 3 + 4."), "", [])]).value == expected


def test_generator_arithmetic_is_plain_python_arithmetic():
    rng = np.random.default_rng(3)
    for _ in range(30):
        st, expected = gen.arithmetic(rng)
        expr = st.instruction[len("Compute "):-1]
        assert eval(expr, {"__builtins__": {}}) == expected  # noqa: S307 - digits and + - * only


@pytest.mark.parametrize("k, depth", [(k, d) for k in range(1, 6) for d in range(k)])
def test_random_genomes_have_the_asked_cell(k, depth):
    g = gen.random_genome(np.random.default_rng(k * 10 + depth), k, depth)
    assert (g.k, g.depth) == (k, depth) and parse_text(g.render()) == g


# --------------------------------------------------------------------- domain file
def test_domain_yaml_loads_and_mask_has_15_feasible_cells(domain):
    assert domain.plugin == "multitask" and domain.dims == (5, 5)
    assert [m.name for m in domain.measures] == ["num_subtasks", "dependency_depth"]
    mask = Plugin(domain=domain).feasible_cells()
    assert mask.shape == (5, 5) and mask.sum() == 15
    assert all(mask[k - 1, d] == (d <= k - 1) for k in range(1, 6) for d in range(5))


@pytest.mark.parametrize("settings, message", [({"mode": "chaos"}, "mode must be"), ({"colour": 1}, "unknown key"),
                                               ({"answer_prompt": "no slot"}, "must contain")])
def test_bad_settings_are_named(domain, settings, message):
    with pytest.raises(ConfigError, match=message):
        Plugin(domain=with_settings(domain, **settings))


# ------------------------------------------------------------------------ quality
class CannedLM(LM):
    """Replies with a fixed answer; scores the first label with a fixed log-probability (records its calls)."""

    backend = "canned"

    def __init__(self, *, reply: str, first: float) -> None:
        self.reply, self.first = reply, first
        self.generate_calls, self.score_calls = [], []

    def generate(self, prompts, *, max_tokens, temperature=1.0, top_p=1.0, stop=(), seed=None):
        self.generate_calls.append(len(prompts))
        return [self.reply] * len(prompts)

    def score(self, requests):
        self.score_calls.append(len(requests))
        return [[self.first] + [0.0] * (len(r.continuations) - 1) for r in requests]


TEXT = ("Context: Pens: 4, 9, 2.\n1. [arithmetic] Compute 4 + 9 + 2.\n2. [sort] Sort the numbers 4, 9, 2 from smallest to largest.\n"
        "3. [qa] Which pen count is odd?\n4. [generate] Write a slogan for pens.")


@pytest.mark.parametrize("mode", ["data", "stress"])
def test_quality_is_w_times_f_in_data_mode_and_w_times_1_minus_f_in_stress(domain, mode):
    plugin = Plugin(domain=with_settings(domain, mode=mode))
    text = parse_text(TEXT).render()
    # task 1 right (code), task 2 wrong (code), task 3 answered (judged), task 4 missing tags
    lm = CannedLM(reply="<task1>15</task1> <task2>9, 4, 2</task2> <task3>nine</task3>", first=0.0)
    ev = plugin.evaluate([text, text], [Proposal("p", "x", ())] * 2, lm=lm, judge_lm=lm, seed=0)
    ws, fj = domain.judges["well_posed"], domain.judges["followed"]
    w = 1.0 / (1.0 + np.exp(-0.0 * ws.logit_scale))  # equal log-probs: W = 0.5 for two labels
    judged = 0.5
    f = (1.0 + 0.0 + judged + 0.0) / 4
    expected = w * f if mode == "data" else w * (1 - f)
    assert ev.quality == pytest.approx([expected, expected])
    assert ev.measures.tolist() == [[4, 0], [4, 0]]
    assert lm.generate_calls == [2] and lm.score_calls == [2 + 2]  # one batch: 2 W requests + 2 judged sub-tasks
    d = ev.details[0]
    assert d["W"] == pytest.approx(w) and d["F"] == pytest.approx(f) and d["answer"].startswith("<task1>15")
    assert [s["by"] for s in d["subtasks"]] == ["code", "code", "judge", "missing"]
    assert [s["pass"] for s in d["subtasks"]] == [True, False, True, False]
    assert fj.labels[0] == " followed"


def test_stress_mode_prefers_failed_prompts_and_the_w_gate(domain):
    text = parse_text(TEXT).render()
    good = CannedLM(reply="<task1>15</task1><task2>2, 4, 9</task2>", first=0.0)
    q = {m: Plugin(domain=with_settings(domain, mode=m)).evaluate([text], [Proposal("p", "x", ())], lm=good, judge_lm=good,
                                                                     seed=0).quality[0] for m in ("data", "stress")}
    assert q["data"] > 0 and q["stress"] > 0 and q["data"] + q["stress"] == pytest.approx(0.5)  # W (1 - F) + W F = W
    gated = Plugin(domain=with_settings(domain, mode="stress", min_well_posed=0.9))
    assert gated.evaluate([text], [Proposal("p", "x", ())], lm=good, judge_lm=good, seed=0).quality[0] == 0.0


def test_evaluate_of_nothing_makes_no_lm_call(domain):
    lm = CannedLM(reply="", first=0.0)
    ev = Plugin(domain=domain).evaluate([], [], lm=lm, judge_lm=lm, seed=0)
    assert ev.quality.shape == (0,) and ev.measures.shape == (0, 2) and lm.generate_calls == [] == lm.score_calls


# ---------------------------------------------------------------------- operators
def one_per_cell(seeds, n):
    """The first ``n`` seeds that land in distinct cells."""
    out, cells = [], set()
    for s in seeds:
        g = parse_text(s)
        if (g.k, g.depth) not in cells:
            cells.add((g.k, g.depth))
            out.append(s)
    return out[:n]


def archive_with(domain, texts):
    from qdaif.archive import make_archive

    a = make_archive([m.edges for m in domain.measures], seed=0)
    gs = [parse_text(t) for t in texts]
    a.add(solution=np.array([g.render() for g in gs], dtype=object), objective=np.full(len(gs), 0.5),
          measures=np.array([[g.k, g.depth] for g in gs], float), id=np.arange(len(gs)), iteration=np.zeros(len(gs), np.int32))
    return a


def test_mutation_proposals_parse_to_valid_genomes_even_from_garbage(domain):
    plugin = Plugin(domain=domain)
    archive = archive_with(domain, one_per_cell(domain.seeds, 6))
    rng = np.random.default_rng(3)  # a seed whose 60 draws hit every operator (add_subtask dominates)
    proposals = plugin.mutate(archive, rng, 60)
    assert {p.operator for p in proposals} == set(OPERATORS)
    for p in proposals:
        json.dumps(p.meta)  # JSON values only
        for generation in ("", " salad soup.", "\n\n###"):
            text = plugin.parse(p, generation)
            g = parse_text(text)
            assert g is not None and 1 <= g.k <= 5 and parse_text(g.render()).render() == text
            if p.operator != "lmx_crossover":
                parent = parse_text(archive.data("solution")[list(archive.data("id")).index(p.parents[-1])])
                assert abs(g.k - parent.k) <= 1  # one structural step from the parent


def test_operators_move_toward_their_target_cell(domain):
    plugin = Plugin(domain=with_settings(domain, crossover_rate=0.0))
    archive = archive_with(domain, one_per_cell(domain.seeds, 4))
    moved, total = 0, 0
    for p in plugin.mutate(archive, np.random.default_rng(1), 60):
        parent = parse_text(archive.data("solution")[list(archive.data("id")).index(p.parents[-1])])
        child = parse_text(plugin.parse(p, ""))
        kt, dt = p.meta["target"]
        before = abs(parent.k - kt) + abs(parent.depth - dt)
        after = abs(child.k - kt) + abs(child.depth - dt)
        total += 1
        moved += after < before or before == 0
        if p.operator == "add_subtask":
            assert child.k == parent.k + 1
        if p.operator == "drop_subtask":
            assert child.k == parent.k - 1
        if p.operator == "retype_subtask":
            slot = p.meta["slot"]
            assert child.k == parent.k and slot not in {j for s in parent.subtasks for j in s.depends_on}
    assert moved / total > 0.8


def test_a_usable_lm_line_is_kept_and_a_computable_line_must_follow_a_template(domain):
    plugin = Plugin(domain=with_settings(domain, crossover_rate=0.0))
    archive = archive_with(domain, one_per_cell(domain.seeds, 3))
    props = [p for p in plugin.mutate(archive, np.random.default_rng(2), 80) if p.operator in ("add_subtask", "retype_subtask")]
    judged = next(p for p in props if p.meta["type"] == "generate")  # free generation: the only judged type
    line = " Write a riddle about the context. Answer in <task9></task9> tags.\n2. [qa] more"
    child = parse_text(plugin.parse(judged, line))
    slot = judged.meta["slot"]
    assert child.subtasks[slot - 1].instruction == "Write a riddle about the context."
    assert judged.prompt.endswith("]") and judged.prompt.count("Multi-task prompt:") == 4
    # a qa line that no code can answer falls back to a generated lookup that carries a reference
    qa = next(p for p in props if p.meta["type"] in ("qa", "classify", "transform") and not p.meta["depends_on"])
    fell = parse_text(plugin.parse(qa, " Which word of the context is the most beautiful?"))
    assert fell.render() == qa.meta["fallback"] and references(fell)[qa.meta["slot"] - 1] is not None
    computable = next(p for p in props if p.meta["type"] in ("sort", "count", "arithmetic", "select") and not p.meta["depends_on"])
    off_template = parse_text(plugin.parse(computable, " Do some maths with the numbers please."))
    assert off_template.render() == computable.meta["fallback"]
    assert references(off_template)[computable.meta["slot"] - 1] is not None


def test_generic_lmx_without_meta_parses_or_drops(domain):
    plugin = Plugin(domain=domain)
    p = Proposal("prompt", "random_search", ())
    assert plugin.parse(p, "no structure here") is None
    text = plugin.parse(p, " Context: A farm.\n1. [count] Count the words in the context.\n")
    assert parse_text(text).subtasks[0].type == "count"


# ----------------------------------------------------------------------------- runs
def test_two_iterations_with_the_scripted_fake_write_the_run_directory(domain, tmp_path):
    from qdaif.algorithms import QDAIF
    from qdaif.search import Search, SearchState

    lm = ScriptedFakeLM()
    algorithm = QDAIF(domain=domain, init_evaluations=6, min_init_cells=3)
    search = Search(domain=domain, lm=lm, judge_lm=lm, run_dir=RunDir(tmp_path), state=SearchState.new(domain, 0, algorithm),
                    batch_size=6, seed=0)
    search.run(2, progress=False)
    metrics, history, elites = rows(tmp_path / METRICS), rows(tmp_path / HISTORY), rows(tmp_path / ELITES)
    assert len(metrics) == 2 and len(history) == 12  # every proposal repaired into a valid genome
    # per iteration: the proposals (one call per generation setting: whole prompts, one-line
    # edits, drops), then one call for the target's answers
    calls = lm.generate_calls
    assert calls[:2] == [6, 6] and calls[-1] == 6 and sum(calls[2:-1]) == 6 and len(calls[2:-1]) <= 3
    assert len(lm.score_calls) == 2
    assert metrics[0]["operator"] == "seeded_init" and set(metrics[1]["operator"].split(",")) <= set(OPERATORS)
    assert "feasible_coverage" in metrics[-1]
    assert metrics[-1]["feasible_coverage"] == pytest.approx(len({tuple(e["cell"]) for e in elites}) / 15)
    for h in history:
        g = h["genome"]
        assert parse_text(h["text"]).to_dict()["subtasks"][0]["instruction"] == g["subtasks"][0]["instruction"]
        assert h["measures"] == [g["k"], g["depth"]] and g["depth"] <= g["k"] - 1
        assert {"answer", "W", "F", "subtasks", "source"} <= set(h["details"]) and "op" in h["meta"]
    assert all("genome" in e for e in elites)
    assert metrics[-1]["qd_score"] == pytest.approx(sum(e["quality"] for e in elites))


@pytest.mark.embedded
def test_multitask_run_on_the_embedded_model(tmp_path):
    run_cli("run", "domain=multitask", "iterations=2", "batch_size=4", "init_evaluations=4", "hydra.run.dir=out",
            "progress=false", "model.threads=1", cwd=tmp_path, check=True)
    out = tmp_path / "out"
    for name in (CONFIG, METRICS, HISTORY, ELITES, CHECKPOINT):
        assert (out / name).is_file(), name
    metrics, history, elites = rows(out / METRICS), rows(out / HISTORY), rows(out / ELITES)
    assert len(metrics) == 2 and metrics[-1]["evaluations"] == 8 and elites
    assert metrics[-1]["qd_score"] == pytest.approx(sum(e["quality"] for e in elites))
    assert len(history) == 8 - sum(m["dropped_empty"] + m["dropped_nonfinite"] + m["dropped_invalid"] for m in metrics)
    assert all(0.0 <= h["quality"] <= 1.0 and h["genome"]["k"] == len(h["genome"]["subtasks"]) for h in history)
    assert all(e["genome"]["k"] == e["cell"][0] + 1 and e["genome"]["depth"] == e["cell"][1] for e in elites)
    assert metrics[-1]["feasible_coverage"] == pytest.approx(len(elites) / 15)


# ------------------------------------------------------- user-written prompts (issue 11)
from pathlib import Path  # noqa: E402

from qdaif.plugins.multitask.checkers import gold_reference, matches_gold  # noqa: E402
from qdaif.plugins.multitask.parsing import dependencies, parse_prompt  # noqa: E402

DEV = [json.loads(x) for x in (Path(__file__).parent / "data" / "multitask_dev.jsonl").read_text().splitlines() if x.strip()]


@pytest.mark.parametrize("row", DEV, ids=lambda r: r["id"])
def test_dev_prompts_parse_to_their_count_and_depth(row):
    p = parse_prompt(row["prompt"])
    assert (p.k, p.depth) == (row["num_subtasks"], row["depth"]), row["note"]
    assert [list(d) for d in p.depends_on] == [s["depends_on"] for s in row["subtasks"]]


@pytest.mark.parametrize("row", DEV, ids=lambda r: r["id"])
def test_dev_correct_response_passes_and_one_wrong_fails_exactly_that_subtask(row):
    k = row["num_subtasks"]
    refs = [gold_reference(s["answer"], s["instruction"]) for s in row["subtasks"]]
    for reply, want in ((row["correct_response"], [True] * k),
                        (row["one_wrong_response"], [i + 1 != row["wrong_index"] for i in range(k)])):  # 1-based
        got = [check(r, a, reply) for r, a in zip(refs, extract_answers(reply, k))]
        assert got == want, reply


def test_dev_set_covers_what_the_issue_names():
    assert len(DEV) >= 12
    prompts = "\n".join(r["prompt"] for r in DEV)
    for marker in ("\n1. ", "\n1) ", "Step #1:", "Step 1:", "Task 1:", "Instruction 1:", "\n- ", "#1:", "(1) ", "Q1:"):
        assert marker in prompts, marker
    assert any(len(r["prompt"]) > 1500 for r in DEV)
    assert any("<task1/>" in r["correct_response"] for r in DEV) and any("</task1>" in r["correct_response"] for r in DEV)
    assert any(r["correct_response"].count("\n") >= 2 for r in DEV)  # one answer per line


@pytest.mark.parametrize("instruction, index, deps", [
    ("Add 10 to your answer to task 1.", 2, [1]),
    ("Use the output of instruction 2 in a sentence.", 3, [2]),
    ("Divide the result of step #2 by 3.", 3, [2]),
    ("Divide the result of step 2 by 3.", 3, [2]),
    ("Subtract 6 from the answer to 1.", 3, [1]),
    ("Multiply your answer to task 2 by your answer to task 1.", 3, [1, 2]),
    ("Multiply the previous result by 3.", 3, [2]),
    ("Is the previous answer even?", 4, [3]),
    ("Using steps 1 and 2, give the total.", 3, [1, 2]),
    ("Sum the numbers you picked in #1.", 2, [1]),
    ("Subtract the first task's answer from 10.", 3, [1]),
    ("Double the number from (1).", 2, [1]),
    ("Compute 3 + 4 * 2.", 2, []),  # no reference
    ("Which of 0.5 or 2.5 is larger?", 3, []),
    ("What happened in step 4 of the recipe?", 2, []),  # a later step is no dependency
    ("Repeat the previous answer.", 1, []),  # nothing before the first sub-task
])
def test_each_dependency_wording(instruction, index, deps):
    assert dependencies(instruction, index) == deps


@pytest.mark.parametrize("text, k, depth", [
    ("Step #1: Count the apples.\nStep #2: Double the result of step #1.\nStep #3: Add 1 to the answer to step #2.\n\nContext: 3 apples.",
     3, 2),
    ("Task 3: Name a colour.\nTask 4: Spell task 3's colour backwards.", 2, 1),  # numbering need not start at 1
    ("Instruction 1: Pick a word.\nInstruction 2: Count the letters in the answer to instruction 1.", 2, 1),
    ("Do this: (1) count the words, (2) double the number from 1, and (3) say if the previous answer is even.", 3, 2),
    ("## Step 1\nCompute 3 + 4.\n## Step 2\nMultiply the result of step 1 by 2.", 2, 1),
    ("Tasks:\n**Task 1:** Name the city.\n**Task 2:** Spell your answer to task 1 backwards.\n\nContext: I live in Rome.", 2, 1),
    ("Read this:\n1. Tom is 12.\n2. Ann is 15.\n3. Bo is 9.\n\nNow:\n1. Who is the oldest?\n2. How old is the person from your "
     "answer to 1?\n3. Subtract Bo's age from the previous answer.", 3, 2),
])
def test_parser_marker_styles(text, k, depth):
    p = parse_prompt(text)
    assert (p.k, p.depth) == (k, depth)


def test_a_numbered_list_inside_the_context_stays_in_the_context():
    text = ("Context: The club's rules:\n1. Arrive by nine.\n2. Bring a racket.\n3. Pay 4 pounds.\n\n"
            "1. Which rule is about money?\n2. What is the fee in your answer to task 1, in pounds?\n"
            "Put each answer in <taskN></taskN> tags.")
    p = parse_prompt(text)
    assert p.instructions == ("Which rule is about money?", "What is the fee in your answer to task 1, in pounds?")
    assert "1. Arrive by nine." in p.context and "3. Pay 4 pounds." in p.context and p.depth == 1
    g = parse_text(text)
    assert g.k == 2 and "2. Bring a racket." in g.context and parse_text(g.render()) == g


def test_a_long_context_is_kept_and_refused_only_beyond_the_model_context(domain, tmp_path):
    context = " ".join(f"Sentence {i} says that the river is {i} metres wide." for i in range(60))
    assert len(context) > 1500
    g = parse_text(f"Context: {context}\n1. [count] Count the words in the context.")
    assert g is not None and g.context == context and references(g)[0].value == len(context.split())
    items = tmp_path / "items.json"
    items.write_text(json.dumps([{"id": "long", "context": context, "instructions": ["How wide is the river in sentence 3?"],
                                  "answers": ["3 metres"]}]))
    assert Plugin.items({"items": str(items)})[0]["context"] == context
    with pytest.raises(ConfigError, match=r"item 'long' is about \d+ tokens.*max_context_tokens") as e:
        Plugin.items({"items": str(items), "max_context_tokens": 500})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("reply", [
    "<task1>9</task1> <task2>19</task2>",
    "<task1>9<task1/>\n<task2>19<task2/>",
    "<task1>9</task1>\n\n<task2>19</task2>\n",
    "< TASK1 >9</ task1 >\nSome words. <Task2> 19 </TASK2>",
    "<task1>9<task1>\n<task2>19<task2>",
])
def test_both_tag_forms_case_whitespace_and_lines(reply):
    assert extract_answers(reply, 2) == ["9", "19"]


def test_multi_line_answers_and_missing_tags():
    assert extract_answers("<task1>line one\nline two</task1>", 1) == ["line one\nline two"]
    assert extract_answers("no tags at all", 2) == [None, None]


@pytest.mark.parametrize("answer, gold, ordered, passes", [
    ("12", "12.0", True, True), ("12.0", "12", True, True), ("twelve", "12", True, True), ("$1,200", "1200", True, True),
    ("The answer is 12.", "12", True, True), ("12 apples", "12", True, True), ("13", "12", True, False),
    ("12 or 13", "12", True, False), ("120", "12", True, False), ("Paris.", "paris", True, True), ("  PARIS ", "Paris", True, True),
    ("the plant stall", "plant stall", True, True), ("plant", "plant stall", True, False), ("Yes, it is.", "yes", True, True),
    ("no", "yes", True, False), ("yes and no", "yes", True, False), ("B) Paris", "B", True, True), ("C", "B", True, False),
    ("5 7 12 30", "5, 7, 12, 30", True, True), ("5; 7; 12; 30", "5, 7, 12, 30", True, True),
    ("5 > 7 > 12 > 30", "5, 7, 12, 30", True, True), ("[5, 7, 12, 30]", "5, 7, 12, 30", True, True),
    ("5\n7\n12\n30", "5, 7, 12, 30", True, True), ("7, 5, 12, 30", "5, 7, 12, 30", True, False),
    ("11 and 7", "7, 11", False, True), ("7, 11, 9", "7, 11", False, False), ("(3)-(4)-(2)-(1)", "3, 4, 2, 1", True, True),
    ("3 dollars", "3", True, True), ("3", "3 dollars", True, True), ("4", "3 dollars", True, False), ("", "3", True, False),
])
def test_gold_answer_normalisation(answer, gold, ordered, passes):
    assert matches_gold(answer, gold, ordered=ordered) is passes


def test_gold_references_add_the_instructions_constraints():
    ref = gold_reference("twenty-one", "Write the previous answer as a word, in lowercase letters.")
    assert check(ref, "twenty-one") and not check(ref, "Twenty-One") and not check(ref, "twenty")
    free = gold_reference("Summer Fair", "Write a title for the text in at most three words.")
    assert check(free, "Lanterns by Night") and not check(free, "A very long title for the text")
    assert gold_reference("3, 1, 2", "Sort the numbers.").ordered and not gold_reference("7, 11", "Pick the primes.").ordered


@pytest.mark.parametrize("seed", range(30))
def test_every_generated_subtask_but_free_generation_carries_a_reference(seed):
    rng = np.random.default_rng(seed)
    context = "A bakery sold 14 loaves on Monday, 9 on Tuesday and 21 on Wednesday."
    for typ in TYPES:
        if typ == "generate":
            continue
        st = gen.make_subtask(typ, rng, context)
        assert reference_of(st, context, []) is not None, (typ, st.instruction)
    first = gen.make_subtask("arithmetic", rng, context)
    refs = [reference_of(first, context, [])]
    for typ in ("arithmetic", "classify", "format", "qa", "transform", "sort", "count", "select"):
        st = gen.chained_subtask(rng, 1, refs[0], typ) or gen.chained_subtask(rng, 1, refs[0], None)
        assert reference_of(st, context, refs) is not None, (typ, st.instruction)


@pytest.mark.parametrize("instruction, context, answer, passes", [
    ("What is word number 3 of the context?", "The old mill stands here.", "mill", True),
    ("What is the largest number in the context?", "Scores: 4, 19, 7.", "19", True),
    ("Which word comes right after 'old' in the context?", "The old mill stands here.", "Mill.", True),
    ("Does the context contain the word 'mill'? Answer yes or no.", "The old mill stands here.", "Yes", True),
    ("Does the context mention the number 5? Answer yes or no.", "Scores: 4, 19, 7.", "yes", False),
    ("Add up all the numbers in the context.", "Scores: 4, 19, 7.", "30", True),
    ("Write the word 'lantern' backwards.", "", "nretnal", True),
    ("Reverse the order of the items in the list red, tan, blue.", "", "blue, tan, red", True),
    ("Write the first word of the context in capital letters.", "The old mill.", "the", False),
])
def test_context_lookups_facts_and_exact_rewrites(instruction, context, answer, passes):
    ref = reference_of(SubTask("qa", instruction), context, [])
    assert ref is not None and check(ref, answer) is passes


def test_one_answer_per_line_keeps_every_answer_and_gold_needs_no_judge(domain, tmp_path):
    items = tmp_path / "mti.json"
    items.write_text(json.dumps([{"id": "a", "context": "Prices: 12, 7, 30, 5",
                                  "instructions": ["Which price is the largest?", "Halve your answer to task 1.",
                                                   "Write a short slogan for the shop."],
                                  "answers": ["30", "15", "Fresh every day"], "dependent": [False, True, False]}]))
    plugin = Plugin(domain=with_settings(domain, items=str(items)))
    text = Plugin.default_seeds({"items": str(items)})[0]
    assert parse_text(text).depth == 1
    lm = CannedLM(reply="<task1>30</task1>\n<task2>15.0</task2>\n<task3>Fresh bread</task3>", first=0.0)
    stops = []
    orig = lm.generate
    lm.generate = lambda prompts, **kw: stops.append(kw["stop"]) or orig(prompts, **kw)
    ev = plugin.evaluate([text], [Proposal("p", "x", ())], lm=lm, judge_lm=lm, seed=0)
    assert "\n" not in stops[0]  # the reply is never cut at a line break
    d = ev.details[0]
    # every imported sub-task has a gold answer, so no judge is asked: a free slogan too is held to it (MTI's exact match)
    assert [s["by"] for s in d["subtasks"]] == ["gold"] * 3 and [s["pass"] for s in d["subtasks"]] == [True, True, False]
    assert lm.score_calls == [1]  # W only
    assert plugin.record(text)["genome"]["subtasks"][1]["answer"] == "15"


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("[{\"context\": 1,", "not valid JSON \\(line 1"),
    ("{\"a\": 1}", "instance 1 is not a JSON object"),
    ("[{\"context\": \"c\", \"instructions\": [\"x\", \"y\"], \"answers\": [\"1\"]}]", "2 instructions but 1 answers"),
    ("[{\"context\": \"c\", \"answers\": [\"1\"]}]", "missing 'instructions'"),
    ("[{\"context\": \"c\", \"instructions\": [\"x\"], \"answers\": [\"1\"], \"dependent\": \"yes\"}]", "'dependent' must be"),
    ("[]", "non-empty JSON list"),
])
def test_bad_items_files_are_one_line_errors(domain, tmp_path, content, message):
    path = tmp_path / "items.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as e:
        Plugin(domain=with_settings(domain, items=str(path)))
    assert "\n" not in str(e.value) and str(e.value).startswith("domain multitask.settings.items")


def test_items_file_runs_from_the_cli(tmp_path):
    items = tmp_path / "mti.json"
    items.write_text(json.dumps([{"id": f"i{n}", "context": f"Box {n} holds {n + 3} marbles.",
                                  "instructions": [f"How many marbles are in box {n}?", "Add 2 to the previous answer."],
                                  "answers": [str(n + 3), str(n + 5)], "dependent": True} for n in range(4)]))
    run_cli("run", "domain=multitask", "model=scripted_fake", f"domain.settings.items={items}", "iterations=1",
            "batch_size=2", "init_evaluations=2", "hydra.run.dir=out", "progress=false", cwd=tmp_path, check=True)
    history = rows(tmp_path / "out" / HISTORY)
    assert history and all(h["genome"]["k"] >= 1 for h in history)


MTI_DEV = json.loads((Path(__file__).parent / "data" / "mti_dev_items.json").read_text())


@pytest.mark.parametrize("inst", MTI_DEV, ids=lambda i: i["id"])
def test_mti_style_items_import_and_parse_back(inst, tmp_path):
    from qdaif.plugins.multitask.items import mti_prompt, read_items

    path = tmp_path / "one.json"
    path.write_text(json.dumps([inst]))
    item = read_items(path)[0]
    n, dep = len(inst["instructions"]), inst["dependent"]
    want = [[i] if dep and i else [] for i in range(n)] if isinstance(dep, bool) else \
        [[i] if d and i else [] for i, d in enumerate(dep)] if all(isinstance(d, bool) for d in dep) else dep
    assert [s["depends_on"] for s in item["subtasks"]] == want
    assert [s["answer"] for s in item["subtasks"]] == inst["answers"]
    p = parse_prompt(mti_prompt(inst))
    assert p.k == n and [list(d) for d in p.depends_on] == want
