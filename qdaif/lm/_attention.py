"""Grouped-query attention for transformers models on CPU, without copying the cache.

transformers' eager attention expands every key and value head to the number of query
heads (``repeat_kv``) before its two matrix products, which copies the whole key-value
cache at every layer of every decoding step. SmolLM2-135M has 9 query heads and 3
key-value heads, and in a batch-16 decoding step on CPU those copies took about a
quarter of the time (docs/performance.md). Here the query heads of each group are
stacked instead, so the products read the cache in place. The result is the same
attention; only the grouping of the arithmetic differs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GQA_ATTENTION", "cpu_attention", "gqa_attention_forward", "register_gqa_attention"]

#: Name under which the attention function is registered with transformers.
GQA_ATTENTION = "qdaif_gqa"


def gqa_attention_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float,
                          dropout: float = 0.0, **kwargs: Any) -> tuple[Any, Any]:
    """Softmax attention with key-value heads shared by groups of query heads.

    Args:
        module: The attention layer (unused; kept for transformers' signature).
        query: Shape ``(batch, heads, q_len, head_dim)``.
        key: Shape ``(batch, kv_heads, kv_len, head_dim)``, ``heads`` a multiple of ``kv_heads``.
        value: Same shape as ``key``.
        attention_mask: Additive mask broadcastable to ``(batch, heads, q_len, kv_len)``, or ``None``.
        scaling: Factor applied to the query-key products.
        dropout: Must be 0 (inference only).

    Returns:
        The output, shape ``(batch, q_len, heads, head_dim)``, and the attention weights,
        shape ``(batch, heads, q_len, kv_len)``.

    Raises:
        ValueError: ``dropout`` is not 0 or the head counts do not divide.
    """
    import torch

    if dropout:
        raise ValueError("the qdaif_gqa attention is for inference; dropout must be 0")
    b, h, q, d = query.shape
    kvh, k = key.shape[1], key.shape[2]
    if h % kvh:
        raise ValueError(f"{h} query heads cannot share {kvh} key-value heads")
    grouped = query.reshape(b, kvh, (h // kvh) * q, d)
    weights = torch.matmul(grouped, key.transpose(2, 3)).view(b, h, q, k) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask[..., :k]
    weights = torch.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights.view(b, kvh, (h // kvh) * q, k), value).view(b, h, q, d)
    return out.transpose(1, 2).contiguous(), weights


#: Model families whose attention layers call the attention function with nothing but
#: query, key, value, mask and scaling (no soft-capping, sinks or other extras).
GQA_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def cpu_attention(model_type: str) -> str:
    """Returns the attention implementation ``model.attention=auto`` picks on CPU.

    Args:
        model_type: The transformers ``config.model_type``, e.g. ``"llama"``.

    Returns:
        ``"qdaif_gqa"`` for the families in :data:`GQA_MODEL_TYPES`, else ``"eager"``.
    """
    return GQA_ATTENTION if model_type in GQA_MODEL_TYPES else "eager"


def register_gqa_attention() -> str:
    """Registers :func:`gqa_attention_forward` (with eager masks) with transformers.

    Returns:
        The name to pass as ``attn_implementation``.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(GQA_ATTENTION, gqa_attention_forward)
    AttentionMaskInterface.register(GQA_ATTENTION, eager_mask)
    return GQA_ATTENTION
