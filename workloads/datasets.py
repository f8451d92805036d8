"""Locate the public traces shipped in the repository's ``data/`` folder, and check them.

Why: workloads and tests read real traces (Azure LLM inference 2023, Mooncake FAST'25).
They ship with the repository (``data/<dataset>/``, each with its licence, attribution,
source URL and sha256 in ``SOURCE.md``) so every command works from a fresh clone, and
this module is the one place that knows where they are:

- :func:`dataset_path` gives the path of one shipped file (optionally verified),
- :func:`resolve_data_reference` turns a config value such as
  ``data:azure-llm-2023/AzureLLMInferenceTrace_conv.csv`` into that path,
- :func:`verify_dataset` checks every file of a dataset against its recorded checksum.

Where the files are looked for, first match wins:

1. the ``root`` argument (a folder laid out like ``data/``: one sub-folder per dataset),
2. the folder named by the ``MOSKA_SIM_DATA`` environment variable (same layout),
3. ``data/`` beside the installed ``workloads`` package, i.e. the repository's own folder
   when installed with ``pip install -e .`` from a clone.

An explicit root (1 or 2) is used as given, without falling back to the next one, so a
wrong setting is reported rather than silently ignored. Every error is a
:class:`DatasetError` (a :class:`~workloads.errors.WorkloadError`) naming the file, the
folder looked in and where that folder came from.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from workloads.errors import WorkloadError

DATA_ENV = "MOSKA_SIM_DATA"
"""Environment variable naming another folder laid out like the repository's ``data/``."""

DATA_PREFIX = "data:"
"""Prefix of a config value that names a shipped file: ``data:<dataset>/<file>``."""


class DatasetError(WorkloadError):
    """A shipped data file is unknown, missing or not the recorded bytes."""


@dataclass(frozen=True)
class DataFile:
    """One shipped file: its name in the dataset folder and what its bytes must be."""

    name: str
    sha256: str
    size_bytes: int
    records: int
    description: str


@dataclass(frozen=True)
class Dataset:
    """A folder under ``data/``: its files, licence and public source."""

    name: str
    title: str
    licence: str
    source_url: str
    files: tuple[DataFile, ...]

    def file(self, name: str) -> DataFile:
        """The registered file ``name``; a :class:`DatasetError` listing the known ones."""
        for f in self.files:
            if f.name == name:
                return f
        known = ", ".join(f.name for f in self.files)
        raise DatasetError(f"data/{self.name}/{name}: no such file in dataset {self.name!r} "
                           f"(it has: {known})")


DATASETS: Mapping[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            name="azure-llm-2023",
            title="Azure LLM inference trace 2023 (conversation and code services)",
            licence="CC-BY-4.0",
            source_url="https://github.com/Azure/AzurePublicDataset/blob/master/"
                       "AzureLLMInferenceDataset2023.md",
            files=(
                DataFile("AzureLLMInferenceTrace_conv.csv",
                         "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8",
                         719_188, 19_366, "conversation service: TIMESTAMP, ContextTokens, "
                         "GeneratedTokens per request"),
                DataFile("AzureLLMInferenceTrace_code.csv",
                         "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6",
                         320_117, 8_819, "code-completion service, same columns"),
            ),
        ),
        Dataset(
            name="mooncake-fast25",
            title="Mooncake FAST'25 traces (arrivals with prefix-block hashes)",
            licence="Apache-2.0",
            source_url="https://github.com/kvcache-ai/Mooncake/tree/main/FAST25-release/traces",
            files=(
                DataFile("conversation_trace.jsonl",
                         "b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df",
                         3_029_533, 12_031, "conversation traffic: timestamp, input_length, "
                         "output_length, hash_ids per request"),
                DataFile("synthetic_trace.jsonl",
                         "bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131",
                         1_136_313, 3_993, "synthetic trace, same format, many corpora"),
            ),
        ),
    )
}


def dataset(name: str) -> Dataset:
    """The registered dataset ``name``; a :class:`DatasetError` listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"data/{name}: no such dataset (shipped: "
                           f"{', '.join(DATASETS)})") from None


def repository_data_dir() -> Path:
    """``data/`` beside the ``workloads`` package: the repository's folder in a clone."""
    return Path(__file__).resolve().parent.parent / "data"


def data_root(root: str | Path | None = None) -> tuple[Path, str]:
    """The folder holding the dataset folders and where it came from (for messages).

    ``root`` wins, then ``$MOSKA_SIM_DATA`` (when set and not empty), then the repository's
    ``data/``. The folder must exist; the error says which setting named it.
    """
    if root is not None:
        path, origin = Path(root).expanduser(), "the root argument"
    elif os.environ.get(DATA_ENV, "").strip():
        path, origin = Path(os.environ[DATA_ENV].strip()).expanduser(), f"${DATA_ENV}"
    else:
        path, origin = repository_data_dir(), "the repository's data/ folder"
    if not path.is_dir():
        hint = (f"; set {DATA_ENV} to a folder with the datasets (one sub-folder each: "
                f"{', '.join(DATASETS)}) or reinstall from a clone with pip install -e ."
                if origin.startswith("the repository") else "")
        raise DatasetError(f"{path}: no such folder (named by {origin}){hint}")
    return path, origin


def dataset_dir(name: str, root: str | Path | None = None) -> Path:
    """The folder of dataset ``name`` under :func:`data_root`; it must exist."""
    dataset(name)
    base, origin = data_root(root)
    path = base / name
    if not path.is_dir():
        raise DatasetError(f"{path}: dataset folder missing (data root {base}, named by "
                           f"{origin}); it must hold the files listed in "
                           f"data/{name}/SOURCE.md of the repository")
    return path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: str | Path, expected: DataFile) -> None:
    """Raise :class:`DatasetError` unless ``path`` has exactly the recorded bytes."""
    path = Path(path)
    size = path.stat().st_size
    if size != expected.size_bytes:
        raise DatasetError(f"{path}: {size:,} bytes, expected {expected.size_bytes:,} "
                           f"(sha256 {expected.sha256}); the copy is truncated or altered "
                           "(line endings converted on checkout?)")
    digest = file_sha256(path)
    if digest != expected.sha256:
        raise DatasetError(f"{path}: sha256 {digest}, expected {expected.sha256}; the copy "
                           "is altered")


def dataset_path(name: str, filename: str, root: str | Path | None = None,
                 verify: bool = False) -> Path:
    """Path of the shipped file ``filename`` of dataset ``name``.

    ``root`` (or ``$MOSKA_SIM_DATA``) points at another copy of the data folder. With
    ``verify`` the file's size and sha256 are checked against the recorded ones.
    """
    entry = dataset(name).file(filename)
    folder = dataset_dir(name, root)
    path = folder / filename
    if not path.is_file():
        raise DatasetError(f"{path}: file missing from the dataset folder {folder} "
                           f"({entry.description}; source: {DATASETS[name].source_url})")
    if verify:
        verify_file(path, entry)
    return path


def verify_dataset(name: str, root: str | Path | None = None) -> list[Path]:
    """Check every file of dataset ``name`` against its recorded size and sha256;
    returns their paths. The first bad or missing file raises :class:`DatasetError`."""
    return [dataset_path(name, f.name, root, verify=True) for f in dataset(name).files]


def is_data_reference(text: str) -> bool:
    """True for a config value of the form ``data:<dataset>/<file>``."""
    return isinstance(text, str) and text.startswith(DATA_PREFIX)


def resolve_data_reference(ref: str, root: str | Path | None = None,
                           verify: bool = False) -> Path:
    """``data:<dataset>/<file>`` (the prefix may be left out) -> :func:`dataset_path`.

    The form config files use to name a shipped trace without any filesystem path, so a
    config works wherever the repository (or ``$MOSKA_SIM_DATA``) is.
    """
    body = ref[len(DATA_PREFIX):] if is_data_reference(ref) else ref
    parts = body.strip().strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        raise DatasetError(f"{ref!r}: expected {DATA_PREFIX}<dataset>/<file>, e.g. "
                           f"{DATA_PREFIX}azure-llm-2023/AzureLLMInferenceTrace_conv.csv")
    return dataset_path(parts[0], parts[1], root, verify)


__all__ = [
    "DATASETS",
    "DATA_ENV",
    "DATA_PREFIX",
    "DataFile",
    "Dataset",
    "DatasetError",
    "data_root",
    "dataset",
    "dataset_dir",
    "dataset_path",
    "file_sha256",
    "is_data_reference",
    "repository_data_dir",
    "resolve_data_reference",
    "verify_dataset",
    "verify_file",
]
