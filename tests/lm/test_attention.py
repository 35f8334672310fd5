"""The grouped-query attention kernel and the allocator setting of the CPU backend."""

import sys

import pytest

torch = pytest.importorskip("torch")

from qdaif.lm._attention import gqa_attention_forward  # noqa: E402
from qdaif.lm._malloc import keep_freed_memory  # noqa: E402


def reference_attention(query, key, value, mask, scaling):
    """transformers' eager attention: expand the key-value heads, then attend."""
    rep = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
    w = query @ key.transpose(2, 3) * scaling
    if mask is not None:
        w = w + mask
    return (torch.softmax(w, dim=-1) @ value).transpose(1, 2)


@pytest.mark.parametrize("q_len", [1, 7])
def test_gqa_attention_equals_expanded_heads(q_len):
    g = torch.Generator().manual_seed(0)
    b, h, kvh, k, d = 3, 9, 3, 11, 16
    query = torch.randn(b, h, q_len, d, generator=g)
    key, value = torch.randn(b, kvh, k, d, generator=g), torch.randn(b, kvh, k, d, generator=g)
    mask = torch.zeros(b, 1, q_len, k)
    mask[0, :, :, :4] = torch.finfo(torch.float32).min  # row 0 is left-padded by 4
    out, weights = gqa_attention_forward(None, query, key, value, mask, scaling=d**-0.5)
    assert out.shape == (b, q_len, h, d) and weights.shape == (b, h, q_len, k)
    torch.testing.assert_close(out, reference_attention(query, key, value, mask, d**-0.5))
    assert float(weights[0, :, :, :4].abs().max()) == 0.0


def test_gqa_attention_rejects_heads_that_do_not_divide():
    q, kv = torch.zeros(1, 4, 1, 8), torch.zeros(1, 3, 2, 8)
    with pytest.raises(ValueError, match="cannot share"):
        gqa_attention_forward(None, q, kv, kv, None, scaling=1.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_keep_freed_memory_takes_effect_on_linux():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent


def test_auto_picks_gqa_only_for_families_it_reproduces():
    from qdaif.lm._attention import cpu_attention

    assert cpu_attention("llama") == "qdaif_gqa"  # SmolLM2, the embedded model
    assert cpu_attention("gemma2") == "eager"  # soft-capped attention logits: not ours to reproduce
