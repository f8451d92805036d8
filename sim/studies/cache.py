"""Finished runs of a study, kept in the study folder so that a rerun does only what is
missing.

Every run of a study (a variant's main run or one load-sweep point) is an *entry* of
``<study>/cache/``, named by :func:`run_key`: a hash of the run's resolved config, of what
the run keeps (a results folder, or the summary only), of the contents of every file the
config names by path (a trace, say), and of the code version (:func:`code_version`: the
package version and a hash of the project's source files). Same key, same bytes: a run is
deterministic given its config and seed, so a cached entry stands for the run itself, and a
change to the code or to an input file gives new keys (old entries are then left unused).

An entry is a folder::

    cache/<key>/outcome.json   what the run produced: its summary or its error (a
                               ValueError: a deployment that does not fit...), with the
                               code version, the label that first ran it and its wall time
    cache/<key>/run/           the results folder of a main run (moska-sim run's)

It is built under ``cache/.tmp-<key>-XXXX`` and renamed into place with one ``os.replace``,
so an entry under its final name is always complete; a study killed midway leaves at most
a temporary folder, which the next run removes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_DIR = "cache"
OUTCOME_FILE = "outcome.json"
RUN_DIR = "run"
CODE_PACKAGES = ("sim", "hw", "workloads", "traces")  # the project's importable packages
CODE_SUFFIXES = (".py", ".yaml", ".yml")  # source, and the presets/models it reads
KEY_CHARS = 24  # hex digits of the sha256 kept in an entry's name (96 bits)


def project_root() -> Path:
    """The folder holding the project's packages (the checkout, or site-packages)."""
    import sim

    return Path(sim.__file__).resolve().parents[1]


@functools.lru_cache(maxsize=4)
def source_hash(root: Path | None = None) -> str:
    """sha256 over the project's source files (every ``.py``/``.yaml`` under ``sim``,
    ``hw``, ``workloads`` and ``traces``, by relative path and contents, in sorted order):
    what the results of a run can depend on besides its config and its input files."""
    root = root or project_root()
    h = hashlib.sha256()
    files: list[tuple[str, Path]] = []
    for pkg in CODE_PACKAGES:
        base = root / pkg
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
            for name in filenames:
                if name.endswith(CODE_SUFFIXES):
                    path = Path(dirpath) / name
                    files.append((path.relative_to(root).as_posix(), path))
    for rel, path in sorted(files):
        data = path.read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+<first 12 hex digits of source_hash()>``: two processes with the
    same code version produce the same results for the same config."""
    from sim.run.results import package_version

    return f"{package_version()}+{source_hash()[:12]}"


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of one input file (memoised on its path, size and mtime)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_files(data: Any, key: str = "") -> Iterator[str]:
    """Paths of existing files a dumped config names (any string field called ``path`` or
    ending in ``_path``), depth first in field order."""
    if isinstance(data, Mapping):
        for k, v in data.items():
            yield from input_files(v, str(k))
    elif isinstance(data, (list, tuple)):
        for v in data:
            yield from input_files(v, key)
    elif (isinstance(data, str) and (key == "path" or key.endswith("_path"))
          and os.path.isfile(data)):
        yield data


def config_data(config: Any) -> Any:
    """A config as plain JSON data (pydantic models dumped in JSON mode)."""
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    return config


def run_key(config: Any, keeps_folder: bool, version: str | None = None) -> str:
    """The cache key of one run: sha256 of its resolved config (canonical JSON), whether it
    keeps a results folder, the contents of the files the config names and the code
    version; the first :data:`KEY_CHARS` hex digits."""
    data = config_data(config)
    inputs = {}
    for path in input_files(data):
        st = os.stat(path)
        inputs[path] = _file_digest(path, st.st_size, st.st_mtime_ns)
    record = {"config": data, "folder": bool(keeps_folder), "inputs": inputs,
              "code": version or code_version()}
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_CHARS]


@dataclass(frozen=True)
class Entry:
    """A finished run as the cache holds it."""

    key: str
    summary: dict | None
    error: str | None
    wall_s: float
    folder: Path | None  # the results folder (main runs that succeeded)

    @property
    def ok(self) -> bool:
        return self.error is None


class RunCache:
    """The ``cache/`` folder of one study."""

    def __init__(self, study_dir: Path) -> None:
        self.dir = Path(study_dir) / CACHE_DIR

    def create(self) -> None:
        """Make the folder, and remove what a killed run left half-built."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for p in self.dir.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)

    def path(self, key: str) -> Path:
        return self.dir / key

    def has(self, key: str) -> bool:
        return (self.dir / key / OUTCOME_FILE).is_file()

    def stage(self, key: str) -> Path:
        """A fresh temporary folder for building entry ``key`` (see :meth:`commit`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=self.dir))

    def commit(self, key: str, stage: Path) -> None:
        """Rename a built entry into place. If another process finished the same key first
        (same config, same code, so the same contents), keep that one."""
        final = self.dir / key
        if not (stage / OUTCOME_FILE).is_file():
            shutil.rmtree(stage, ignore_errors=True)
            raise RuntimeError(f"cache entry {key}: {OUTCOME_FILE} missing after the run")
        os.chmod(stage, 0o755)
        try:
            os.replace(stage, final)
        except OSError:
            if not self.has(key):
                raise
            shutil.rmtree(stage, ignore_errors=True)

    def unpack(self, key: str, files: Mapping[str, bytes]) -> None:
        """Write an entry sent back as ``{relative path: bytes}`` (by a remote worker)."""
        stage = self.stage(key)
        try:
            for rel, data in files.items():
                target = (stage / rel).resolve()
                if stage.resolve() not in target.parents:
                    raise RuntimeError(f"cache entry {key}: file {rel!r} outside the entry")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            self.commit(key, stage)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise

    def load(self, key: str) -> Entry:
        """The entry ``key``; raises ``FileNotFoundError`` if it is not there."""
        folder = self.dir / key
        rec = json.loads((folder / OUTCOME_FILE).read_text(encoding="utf-8"))
        run_dir = folder / RUN_DIR
        return Entry(key, rec.get("summary"), rec.get("error"), float(rec.get("wall_s", 0.0)),
                     run_dir if run_dir.is_dir() else None)


def write_outcome(stage: Path, *, key: str, label: str, what: str, summary: dict | None,
                  error: str | None, wall_s: float, version: str) -> None:
    """``outcome.json`` of an entry being built in ``stage``."""
    record = {"key": key, "code_version": version, "label": label, "what": what,
              "wall_s": wall_s, "error": error, "summary": summary}
    (stage / OUTCOME_FILE).write_text(json.dumps(record, indent=2, allow_nan=False) + "\n",
                                      encoding="utf-8")


def pack_folder(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` as ``{relative posix path: bytes}``, sorted."""
    out: dict[str, bytes] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        out[path.relative_to(folder).as_posix()] = path.read_bytes()
    return out


def link_tree(src: Path, dst: Path) -> None:
    """Recreate ``src`` at ``dst`` with hard links (copies where links are not possible):
    a study's ``runs/<label>/`` shares its files with the cache entry."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


__all__ = [
    "CACHE_DIR",
    "Entry",
    "RunCache",
    "code_version",
    "config_data",
    "input_files",
    "link_tree",
    "pack_folder",
    "project_root",
    "run_key",
    "source_hash",
    "write_outcome",
]
