"""Dequantised copies of GGUF files, for llama.cpp servers on CPUs.

llama.cpp's CPU matrix kernels process a prompt 2-3 times as fast from F16 weights as
from Q4_1 weights, and BF16 weights faster still on CPUs with AVX512-BF16 (measured in
docs/serving.md). A small model's 16-bit copy costs little memory (the embedded 135M
model: 87 MB as Q4_1, 271 MB as F16 or BF16) and holds the same weights: each quantised
value is dequantised and rounded to 16 bits (relative error at most 2^-11 for F16,
2^-8 for BF16, the precision the in-process backend computes in).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DTYPES", "dequantize_gguf", "fast_cpu_dtype"]

DTYPES = ("f16", "bf16")


def fast_cpu_dtype() -> str:
    """The 16-bit type llama.cpp computes fastest on this CPU: ``bf16`` with AVX512-BF16, else ``f16``."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: F16 has hardware support on ARM and with F16C on x86
        return "f16"
    return "bf16" if "avx512_bf16" in flags else "f16"


def dequantize_gguf(*, src: str | Path, dst: str | Path, dtype: str = "f16") -> Path:
    """Writes a copy of a GGUF file whose quantised matrices are stored as 16-bit floats.

    Metadata (architecture, tokenizer, hyper-parameters) is copied key by key; 1-D tensors
    and F32 tensors stay F32, every other tensor is dequantised to ``dtype``. The file
    appears at ``dst`` only when complete (written to a temporary file, then renamed).

    Args:
        src: The GGUF file to read.
        dst: Where to write the copy (its folder is created).
        dtype: ``"f16"`` or ``"bf16"``.

    Returns:
        ``dst`` as a Path.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError: ``src`` is not a GGUF file, or ``dtype`` is not one of :data:`DTYPES`.
    """
    from gguf import GGUFReader, GGUFWriter

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"no GGUF file at {src}")
    try:
        reader = GGUFReader(src)
    except ValueError as err:
        raise ValueError(f"{src} is not a GGUF file ({err})") from None
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".tmp-", suffix=".gguf")
    os.close(fd)
    try:
        writer = GGUFWriter(tmp, reader.fields["general.architecture"].contents())
        _copy_metadata(reader, writer, dtype)
        for tensor in reader.tensors:
            _add_16bit(writer, tensor, dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def _copy_metadata(reader: Any, writer: Any, dtype: str) -> None:
    """Copies every key of ``reader`` to ``writer``, except those the writer sets; sets the file type."""
    from gguf import GGUFValueType
    from gguf.constants import LlamaFileType

    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.file_type"):
            continue  # the writer adds these itself; the file type is set below
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    writer.add_file_type(LlamaFileType.MOSTLY_F16 if dtype == "f16" else LlamaFileType.MOSTLY_BF16)


def _add_16bit(writer: Any, tensor: Any, dtype: str) -> None:
    """Adds ``tensor`` dequantised: F32 if it is F32 or 1-D, else ``dtype``."""
    from gguf.constants import GGMLQuantizationType as Q
    from gguf.quants import dequantize, quantize

    shape = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists dimensions innermost first
    values = dequantize(tensor.data, tensor.tensor_type).reshape(shape)
    if tensor.tensor_type == Q.F32 or values.ndim == 1:
        writer.add_tensor(tensor.name, values.astype(np.float32))
    elif dtype == "f16":
        writer.add_tensor(tensor.name, values.astype(np.float16))
    else:
        raw = quantize(values.astype(np.float32), Q.BF16)
        writer.add_tensor(tensor.name, raw, raw_shape=raw.shape, raw_dtype=Q.BF16)
