"""The 16-bit copies of a GGUF file that llama-server reads (qdaif.lm._gguf)."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGUFReader
from gguf.constants import GGMLQuantizationType as Q
from gguf.quants import dequantize

from qdaif.lm._embedded import embedded_gguf_16bit, embedded_gguf_path
from qdaif.lm._gguf import dequantize_gguf, fast_cpu_dtype

TYPES = {"f16": (Q.F16, 1), "bf16": (Q.BF16, 32)}  # tensor type, LLAMA_FTYPE_MOSTLY_*


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _round(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values rounded to ``dtype`` (round to nearest even) and back."""
    if dtype == "f16":
        return values.astype(np.float16).astype(np.float32)
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_the_copy_holds_the_same_weights_in_16_bits(cache, dtype):
    src, dst = GGUFReader(embedded_gguf_path()), GGUFReader(embedded_gguf_16bit(dtype=dtype, cache_dir=cache))
    assert [t.name for t in dst.tensors] == [t.name for t in src.tensors]
    assert any(t.tensor_type == Q.Q4_1 for t in src.tensors)
    for a, b in zip(src.tensors, dst.tensors):
        assert list(b.shape) == list(a.shape), a.name
        want = dequantize(a.data, a.tensor_type)
        got = dequantize(b.data, b.tensor_type).reshape(want.shape)
        if a.tensor_type == Q.F32:
            assert b.tensor_type == Q.F32 and np.array_equal(got, want), a.name
        else:
            assert b.tensor_type == TYPES[dtype][0], a.name
            np.testing.assert_array_equal(got, _round(want, dtype), err_msg=a.name)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_the_copy_keeps_every_metadata_field(cache, dtype):
    path = embedded_gguf_16bit(dtype=dtype, cache_dir=cache)
    src, dst = GGUFReader(embedded_gguf_path()), GGUFReader(path)
    skip = {"GGUF.tensor_count", "GGUF.kv_count", "general.file_type"}
    keys = [k for k in src.fields if k not in skip]
    assert keys and all(k in dst.fields for k in keys)
    for k in keys:
        assert dst.fields[k].contents() == src.fields[k].contents(), k
    assert len(dst.fields["tokenizer.ggml.tokens"].contents()) == 49152
    assert src.fields["general.file_type"].contents() == 3  # LLAMA_FTYPE_MOSTLY_Q4_1
    assert dst.fields["general.file_type"].contents() == TYPES[dtype][1]
    assert path.name.endswith(f"-{dtype}.gguf")


def test_the_copy_is_written_once_in_the_type_this_cpu_computes_fastest(cache):
    path = embedded_gguf_16bit(cache_dir=cache)
    assert path.name.endswith(f"-{fast_cpu_dtype()}.gguf")
    stamp = path.stat().st_mtime_ns
    assert embedded_gguf_16bit(cache_dir=cache) == path and path.stat().st_mtime_ns == stamp


def test_bad_input_says_what_is_wrong_and_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no GGUF file at"):
        dequantize_gguf(src=tmp_path / "missing.gguf", dst=tmp_path / "out" / "x.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="is not a GGUF file"):
        dequantize_gguf(src=bad, dst=tmp_path / "out" / "x.gguf")
    with pytest.raises(ValueError, match="dtype 'q8_0' is not one of f16, bf16"):
        dequantize_gguf(src=embedded_gguf_path(), dst=tmp_path / "out" / "x.gguf", dtype="q8_0")
    assert not (tmp_path / "out").exists()
