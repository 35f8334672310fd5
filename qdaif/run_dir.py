"""The run directory: plain JSONL/YAML a researcher keeps, plus an exact-resume checkpoint."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qdaif.errors import RunDirError

__all__ = ["RunDir", "CHECKPOINT", "CONFIG", "METRICS", "HISTORY", "ELITES", "HEATMAP"]

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
HISTORY = "history.jsonl"
ELITES = "elites.jsonl"
CHECKPOINT = "checkpoint.pkl"
HEATMAP = "heatmap.png"
_APPENDED = (METRICS, HISTORY)
_FORMAT = 1
_UMASK = os.umask(0)
os.umask(_UMASK)


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def dumps(row: Mapping[str, Any]) -> str:
    """One JSON line; numpy scalars and arrays become plain numbers and lists."""
    return json.dumps(row, default=_json_default, ensure_ascii=False)


def atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see the old or the new file, never half."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(f.name, 0o666 & ~_UMASK)  # NamedTemporaryFile creates 0600 files
    os.replace(f.name, path)


class RunDir:
    """Reads and writes the files of one run.

    Appended files (``metrics.jsonl``, ``history.jsonl``) are written before each
    checkpoint, and the checkpoint records their sizes: resuming truncates them back to
    the checkpoint, so an interrupted iteration leaves no trace.

    Args:
        path: The run directory (created if missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def existing(cls, path: str | Path) -> "RunDir":
        """Opens a run directory for resuming.

        Raises:
            RunDirError: ``path`` is not a qdaif run with a checkpoint.
        """
        p = Path(path)
        if not p.is_dir():
            raise RunDirError(f"resume directory {str(p)!r} does not exist")
        missing = [f for f in (CONFIG, CHECKPOINT) if not (p / f).is_file()]
        if missing:
            raise RunDirError(
                f"{str(p)!r} is not a resumable qdaif run (missing {', '.join(missing)}); "
                "pass the folder of a run, e.g. runs/opinions/<date_time>"
            )
        return cls(p)

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ config
    def write_config(self, config: Mapping[str, Any]) -> None:
        from omegaconf import OmegaConf

        atomic_write(self.file(CONFIG), OmegaConf.to_yaml(OmegaConf.create(dict(config))).encode())

    def read_config(self) -> dict[str, Any]:
        from omegaconf import OmegaConf

        try:
            return OmegaConf.to_container(OmegaConf.load(self.file(CONFIG)), resolve=False)  # recorded resolved; texts stay literal
        except Exception as e:  # noqa: BLE001 - any parse error means the same thing to the user
            raise RunDirError(f"cannot read {self.file(CONFIG)}: {e}") from None

    # ----------------------------------------------------------------- records
    def append(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Appends JSON lines to ``name`` and flushes them to disk."""
        text = "".join(dumps(r) + "\n" for r in rows)
        with open(self.file(name), "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def write_jsonl(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Replaces ``name`` atomically with the given JSON lines."""
        atomic_write(self.file(name), "".join(dumps(r) + "\n" for r in rows).encode("utf-8"))

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        path = self.file(name)
        if not path.is_file():
            return []
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    # -------------------------------------------------------------- checkpoint
    def save_checkpoint(self, state: Any) -> None:
        """Atomically pickles ``state`` with the current sizes of the appended files."""
        sizes = {n: self.file(n).stat().st_size if self.file(n).exists() else 0 for n in _APPENDED}
        blob = pickle.dumps({"format": _FORMAT, "state": state, "sizes": sizes}, protocol=pickle.HIGHEST_PROTOCOL)
        atomic_write(self.file(CHECKPOINT), blob)

    def load_checkpoint(self) -> Any:
        """Loads the checkpoint and truncates appended files to the sizes it recorded.

        Raises:
            RunDirError: The checkpoint is missing, unreadable or from another format.
        """
        try:
            with open(self.file(CHECKPOINT), "rb") as f:
                ckpt = pickle.load(f)
        except FileNotFoundError:
            raise RunDirError(f"{self.path} has no {CHECKPOINT}; it cannot be resumed") from None
        except Exception as e:  # noqa: BLE001
            raise RunDirError(f"cannot read {self.file(CHECKPOINT)} ({type(e).__name__}: {e}); "
                              "it was written by another qdaif/ribs version or is damaged") from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
            raise RunDirError(f"{self.file(CHECKPOINT)} is not a qdaif checkpoint of format {_FORMAT}")
        for name, size in ckpt["sizes"].items():
            path = self.file(name)
            if path.exists() and path.stat().st_size > size:
                with open(path, "r+b") as f:
                    f.truncate(size)
        return ckpt["state"]
