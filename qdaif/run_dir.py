"""The run directory: plain JSONL/YAML a researcher keeps, plus an exact-resume checkpoint.

A run directory is data. Nothing in it is ever executed or unpickled: the checkpoint is
one JSON file (counters, generator states, each algorithm's state) and one NumPy
``.npz`` file (the arrays, loaded with ``allow_pickle=False``). One process at a time
writes a run: :meth:`RunDir.lock` takes an exclusive ``flock`` on ``.lock`` that the OS
releases when the process ends, however it ends.
"""

from __future__ import annotations

import collections
import errno as errno_codes
import fcntl
import hashlib
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qdaif.errors import RunDirError

__all__ = ["RunDir", "CALIBRATION", "CHECKPOINT", "LEGACY_CHECKPOINT", "LOCK", "CONFIG", "METRICS", "HISTORY", "ELITES", "HEATMAP",
           "atomic_write", "dumps", "disk_error", "read_jsonl"]

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
HISTORY = "history.jsonl"
ELITES = "elites.jsonl"
CHECKPOINT = "checkpoint.json"  # the commit point: names the arrays file of the same checkpoint
LEGACY_CHECKPOINT = "checkpoint.pkl"  # qdaif 0.1.0: a pickle, never opened
HEATMAP = "heatmap.png"
CALIBRATION = "judge_calibration.json"  # content-free label distributions of calibrated judges
LOCK = ".lock"
_ARRAYS = re.compile(r"^checkpoint\.(\d+)\.npz$")
_APPENDED = (METRICS, HISTORY)
_FORMAT = "qdaif-checkpoint"
_VERSION = 2
# Temp files of atomic_write (".<name>.<random>"), also those qdaif 0.1.0 left behind.
_TEMP = re.compile(r"^\.(config\.yaml|elites\.jsonl|heatmap\.png|checkpoint\.json|checkpoint\.\d+\.npz|checkpoint\.pkl)"
                   r"\.\w+$")
_UMASK = os.umask(0)
os.umask(_UMASK)
_HELD: dict[str, int] = {}  # run directory (real path) -> fd of its locked .lock, for this process


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def dumps(row: Mapping[str, Any]) -> str:
    """One JSON line; numpy scalars and arrays become plain numbers and lists."""
    return json.dumps(row, default=_json_default, ensure_ascii=False)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; ``[]`` when it does not exist.

    Raises:
        RunDirError: A line is not JSON (names the file and line).
    """
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise RunDirError(f"{path}:{n}: invalid JSON ({e.msg}); the file is damaged") from None
    return rows


def disk_error(path: Path | str, e: OSError) -> RunDirError:
    """The one-line error of a failed write: the file and what the OS said (e.g. no space left)."""
    name = errno_codes.errorcode.get(e.errno, "") if e.errno else ""
    reason = e.strerror or str(e)
    hint = "; free space, then resume" if e.errno in (errno_codes.ENOSPC, errno_codes.EDQUOT, errno_codes.EFBIG) else ""
    return RunDirError(f"cannot write {path}: {reason}{f' ({name})' if name else ''}{hint}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename is still atomic
    finally:
        os.close(fd)


def atomic_write(path: Path | str, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see the old or the new file, never half.

    Raises:
        RunDirError: The write failed (disk full, permission denied, read-only folder);
            ``path`` is unchanged and no temp file is left.
    """
    path = Path(path)
    tmp = None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
            tmp = f.name
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # NamedTemporaryFile creates 0600 files
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise disk_error(path, e) from None
    finally:
        if tmp is not None:  # failed or interrupted: leave nothing half-written
            try:
                os.unlink(tmp)
            except OSError:
                pass
    _fsync_dir(path.parent)


# ------------------------------------------------------------------ checkpoint encoding
# JSON with a few tags, arrays in a side table. Decoding builds only these types.
def _encode(x: Any, arrays: dict[str, np.ndarray]) -> Any:
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"cannot checkpoint an array of dtype {x.dtype}")
        key = f"a{len(arrays)}"
        arrays[key] = x
        return {"__array__": key}
    if isinstance(x, np.generic):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"cannot checkpoint a scalar of dtype {x.dtype}")
        return {"__scalar__": x.dtype.str, "value": x.item()}
    if isinstance(x, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in x]}
    if isinstance(x, collections.deque):
        return {"__deque__": [_encode(v, arrays) for v in x], "maxlen": x.maxlen}
    if isinstance(x, list):
        return [_encode(v, arrays) for v in x]
    if isinstance(x, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in x):
            return {k: _encode(v, arrays) for k, v in x.items()}
        return {"__items__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in x.items()]}
    raise TypeError(f"cannot checkpoint a {type(x).__name__}")


def _decode(x: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(x, list):
        return [_decode(v, arrays) for v in x]
    if not isinstance(x, dict):
        return x
    if "__array__" in x:
        return arrays[x["__array__"]]
    if "__scalar__" in x:
        dtype = np.dtype(x["__scalar__"])
        if dtype.kind not in "biuf":
            raise ValueError(f"scalar of dtype {dtype}")
        return dtype.type(x["value"])
    if "__tuple__" in x:
        return tuple(_decode(v, arrays) for v in x["__tuple__"])
    if "__deque__" in x:
        return collections.deque((_decode(v, arrays) for v in x["__deque__"]), maxlen=x["maxlen"])
    if "__items__" in x:
        return {_decode(k, arrays): _decode(v, arrays) for k, v in x["__items__"]}
    return {k: _decode(v, arrays) for k, v in x.items()}


def _lock_holder(fd: int, wait: float = 1.0) -> str:
    """The lock holder's pid as written in the lock file; waits up to ``wait`` s for a holder
    that has taken the lock but not yet written its pid (a race of two starts)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        except OSError:
            text = ""
        if text.isdigit():
            return f"pid {text}"
        if time.monotonic() >= deadline:
            return "a process that has not written its pid yet"
        time.sleep(0.02)


class RunDir:
    """Reads and writes the files of one run.

    Appended files (``metrics.jsonl``, ``history.jsonl``) are written before each
    checkpoint, and the checkpoint records their sizes: resuming truncates them back to
    the checkpoint, so an interrupted iteration leaves no trace. Every other file is
    replaced atomically (temp file, fsync, rename).

    Args:
        path: The run directory (created if missing).

    Raises:
        RunDirError: The directory cannot be created.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create run directory {self.path}: {e.strerror}") from None
        self._generation: int | None = None

    @classmethod
    def existing(cls, path: str | Path) -> "RunDir":
        """Opens a run directory for resuming.

        Raises:
            RunDirError: ``path`` is not a qdaif run with a checkpoint.
        """
        p = Path(path)
        if not p.is_dir():
            raise RunDirError(f"resume directory {str(p)!r} does not exist")
        if (p / LEGACY_CHECKPOINT).is_file() and not (p / CHECKPOINT).is_file():
            raise RunDirError(_legacy_message(p))
        missing = [f for f in (CONFIG, CHECKPOINT) if not (p / f).is_file()]
        if missing == [CHECKPOINT] and not any((p / n).is_file() and (p / n).stat().st_size for n in _APPENDED):
            missing = []  # stopped before its first checkpoint: resume starts it from iteration 0
        if missing:
            raise RunDirError(
                f"{str(p)!r} is not a resumable qdaif run (missing {', '.join(missing)}); "
                "pass the folder of a run, e.g. runs/opinions/<date_time>"
            )
        return cls(p)

    def file(self, name: str) -> Path:
        return self.path / name

    def has_checkpoint(self) -> bool:
        """Whether a checkpoint (of this release) has been written."""
        return self.file(CHECKPOINT).is_file()

    def holds_run(self) -> bool:
        """Whether the directory already holds (part of) a run."""
        return any(self.file(n).exists() for n in (CONFIG, CHECKPOINT, LEGACY_CHECKPOINT, METRICS, HISTORY))

    # -------------------------------------------------------------------- lock
    def lock(self) -> None:
        """Takes this process's exclusive lock on the run directory (a no-op if it holds it).

        The lock is an ``flock`` on ``.lock``, held until the process exits; it is the
        first thing written in the directory.

        Raises:
            RunDirError: Another process holds the lock (its pid is named), or the lock
                file cannot be created (read-only folder, permission denied).
        """
        key = os.path.realpath(self.path)
        if key in _HELD:
            return
        lock = self.file(LOCK)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666 & ~_UMASK)
        except OSError as e:
            raise RunDirError(f"cannot lock run directory {self.path} ({lock}: {e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise RunDirError(f"run directory {self.path} is in use by another qdaif process ({holder}); "
                              "wait for it to finish or stop it") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is for the message of a second writer; the lock itself holds
        _HELD[key] = fd

    def unlock(self) -> None:
        """Releases the lock taken by :meth:`lock` (the OS also does when the process ends)."""
        fd = _HELD.pop(os.path.realpath(self.path), None)
        if fd is not None:
            os.close(fd)

    def remove_orphans(self) -> list[str]:
        """Removes temp files of interrupted writes and unreferenced checkpoint arrays.

        Returns:
            The names removed.
        """
        current = self._read_checkpoint_json().get("arrays") if self.file(CHECKPOINT).is_file() else None
        # Arrays files are only orphans next to a checkpoint that names an existing one.
        sure = isinstance(current, str) and bool(_ARRAYS.match(current)) and self.file(current).is_file()
        removed = []
        for p in self.path.iterdir():
            if _TEMP.match(p.name) or (sure and _ARRAYS.match(p.name) and p.name != current):
                try:
                    p.unlink()
                    removed.append(p.name)
                except OSError:
                    pass
        return removed

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
        """Appends JSON lines to ``name`` and flushes them to disk.

        Raises:
            RunDirError: The write failed; the file is cut back to its previous size.
        """
        text = "".join(dumps(r) + "\n" for r in rows).encode("utf-8")
        path = self.file(name)
        size = path.stat().st_size if path.exists() else 0
        try:
            with open(path, "ab") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            try:
                os.truncate(path, size)
            except OSError:
                pass  # resume cuts it back to the checkpoint's size anyway
            raise disk_error(path, e) from None

    def write_jsonl(self, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Replaces ``name`` atomically with the given JSON lines."""
        atomic_write(self.file(name), "".join(dumps(r) + "\n" for r in rows).encode("utf-8"))

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        """The rows of one of the run's JSONL files (see :func:`read_jsonl`)."""
        return read_jsonl(self.file(name))

    # -------------------------------------------------------------- checkpoint
    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Writes ``state`` as one checkpoint, with the current sizes of the appended files.

        ``state`` holds JSON values, tuples, deques, dicts and numeric NumPy arrays. The
        arrays go to ``checkpoint.<generation>.npz``, then ``checkpoint.json`` (which
        names that file and its SHA-256) replaces the previous one: a kill at any moment
        leaves the old checkpoint or the new one.

        Raises:
            RunDirError: A write failed; the previous checkpoint is still the current one.
        """
        arrays: dict[str, np.ndarray] = {}
        encoded = _encode(dict(state), arrays)
        if self._generation is None:
            self._generation = self._current_generation()
        generation = self._generation + 1
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        blob = buf.getvalue()
        name = f"checkpoint.{generation}.npz"
        atomic_write(self.file(name), blob)
        sizes = {n: self.file(n).stat().st_size if self.file(n).exists() else 0 for n in _APPENDED}
        record = {"format": _FORMAT, "version": _VERSION, "generation": generation, "arrays": name,
                  "arrays_sha256": hashlib.sha256(blob).hexdigest(), "sizes": sizes, "state": encoded}
        atomic_write(self.file(CHECKPOINT), json.dumps(record, indent=1).encode("utf-8"))
        self._generation = generation
        for p in self.path.glob("checkpoint.*.npz"):
            if p.name != name and _ARRAYS.match(p.name):
                try:
                    p.unlink()
                except OSError:
                    pass

    def _current_generation(self) -> int:
        try:
            return int(self._read_checkpoint_json().get("generation", 0))
        except (RunDirError, TypeError, ValueError):
            return max((int(m.group(1)) for p in self.path.iterdir() if (m := _ARRAYS.match(p.name))), default=0)

    def _read_checkpoint_json(self) -> dict[str, Any]:
        path = self.file(CHECKPOINT)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if self.file(LEGACY_CHECKPOINT).is_file():
                raise RunDirError(_legacy_message(self.path)) from None
            raise RunDirError(f"{self.path} has no {CHECKPOINT}; it cannot be resumed") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunDirError(f"cannot read {path} ({e}); it is damaged") from None
        if not isinstance(record, dict) or record.get("format") != _FORMAT or record.get("version") != _VERSION:
            raise RunDirError(f"{path} is not a qdaif checkpoint of version {_VERSION}")
        return record

    def load_checkpoint(self) -> dict[str, Any]:
        """Loads the checkpoint and truncates appended files to the sizes it recorded.

        Returns:
            The ``state`` given to :meth:`save_checkpoint` (tuples, deques and arrays restored).

        Raises:
            RunDirError: The checkpoint is missing, damaged or of another format, or an
                appended file is missing or shorter than the checkpoint recorded.
        """
        record = self._read_checkpoint_json()
        path = self.file(CHECKPOINT)
        name = record.get("arrays")
        if not isinstance(name, str) or not _ARRAYS.match(name):
            raise RunDirError(f"{path} names no checkpoint arrays file; it is damaged")
        try:
            blob = self.file(name).read_bytes()
        except OSError as e:
            raise RunDirError(f"cannot read {self.file(name)} ({e.strerror}); the checkpoint is incomplete") from None
        if hashlib.sha256(blob).hexdigest() != record.get("arrays_sha256"):
            raise RunDirError(f"{self.file(name)} does not match {CHECKPOINT} (checksum); the checkpoint is damaged")
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            state = _decode(record["state"], arrays)
        except Exception as e:  # noqa: BLE001 - any decoding error means a damaged file
            raise RunDirError(f"cannot read the checkpoint of {self.path} ({type(e).__name__}: {e}); it is damaged") from None
        sizes = record.get("sizes") or {}
        for n in _APPENDED:
            size, p = int(sizes.get(n, 0)), self.file(n)
            have = p.stat().st_size if p.exists() else None
            if size and (have is None or have < size):
                what = "is missing" if have is None else f"has {have} bytes"
                raise RunDirError(f"{p} {what}, but the checkpoint recorded {size} bytes: the run's records were "
                                  "deleted or cut, so it cannot be resumed exactly; restore the file or start a new run")
        for n in _APPENDED:
            size, p = int(sizes.get(n, 0)), self.file(n)
            if p.exists() and p.stat().st_size > size:
                try:
                    os.truncate(p, size)
                except OSError as e:
                    raise disk_error(p, e) from None
        self._generation = int(record["generation"])
        return state


def _legacy_message(path: Path) -> str:
    return (f"{path / LEGACY_CHECKPOINT} is a checkpoint of qdaif 0.1.0 (a Python pickle, which can run code when "
            "opened, so this release never opens it); to continue the run, resume it with qdaif 0.1.0 "
            "(pip install qdaif==0.1.0) if you trust where it came from, or start a new run")
