"""The traces shipped in data/: their bytes are the recorded ones, each folder carries its
licence, attribution and source, and workloads.datasets finds them (or another copy) with
errors that name the file and the setting."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from workloads.datasets import (
    DATA_ENV,
    DATASETS,
    DatasetError,
    data_root,
    dataset_path,
    file_sha256,
    is_data_reference,
    repository_data_dir,
    resolve_data_reference,
    verify_dataset,
)
from workloads.errors import WorkloadError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
LICENCE_FIRST_LINE = {
    "CC-BY-4.0": "Attribution 4.0 International",
    "Apache-2.0": "Apache License",
}


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without $MOSKA_SIM_DATA, whatever the caller's shell has."""
    monkeypatch.delenv(DATA_ENV, raising=False)


def test_the_repository_data_folder_is_the_one_found_by_default():
    assert repository_data_dir() == DATA
    assert data_root() == (DATA, "the repository's data/ folder")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_shipped_files_have_the_recorded_checksums(name):
    paths = verify_dataset(name)
    for path, entry in zip(paths, DATASETS[name].files):
        assert path == DATA / name / entry.name
        assert path.stat().st_size == entry.size_bytes
        assert file_sha256(path) == entry.sha256


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_shipped_files_have_the_recorded_number_of_records(name):
    for entry in DATASETS[name].files:
        raw = (DATA / name / entry.name).read_bytes()
        lines = [ln for ln in raw.splitlines() if ln.strip()]
        header = 1 if entry.name.endswith(".csv") else 0
        assert len(lines) - header == entry.records, entry.name


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_each_dataset_folder_carries_licence_attribution_source_and_checksums(name):
    ds = DATASETS[name]
    source = (DATA / name / "SOURCE.md").read_text(encoding="utf-8")
    for entry in ds.files:
        # the table row names the file and its checksum on one line
        assert re.search(rf"`{re.escape(entry.name)}`.*`{entry.sha256}`", source), entry.name
    assert ds.source_url.split("/blob/")[0].split("/tree/")[0] in source
    assert "## Licence" in source and "## Attribution" in source
    licence = (DATA / name / "LICENSE").read_text(encoding="utf-8")
    assert licence.lstrip().startswith(LICENCE_FIRST_LINE[ds.licence])
    listed = {p.name for p in (DATA / name).iterdir()}
    assert listed == {"SOURCE.md", "LICENSE", *(f.name for f in ds.files)}


def test_data_readme_lists_every_dataset_and_line_endings_are_kept():
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for name in DATASETS:
        assert f"`{name}/`" in readme and f"{name}/SOURCE.md" in readme
    attributes = (DATA / ".gitattributes").read_text(encoding="utf-8").splitlines()
    assert "* -text" in attributes


def test_root_argument_and_environment_variable_point_at_other_copies(tmp_path, monkeypatch):
    copy = tmp_path / "elsewhere"
    shutil.copytree(DATA / "mooncake-fast25", copy / "mooncake-fast25")
    got = dataset_path("mooncake-fast25", "synthetic_trace.jsonl", root=copy, verify=True)
    assert got == copy / "mooncake-fast25" / "synthetic_trace.jsonl"

    monkeypatch.setenv(DATA_ENV, str(copy))
    assert data_root() == (copy, f"${DATA_ENV}")
    assert dataset_path("mooncake-fast25", "conversation_trace.jsonl").parent == copy / \
        "mooncake-fast25"
    # the argument beats the environment
    assert dataset_path("mooncake-fast25", "conversation_trace.jsonl", root=DATA).parent == \
        DATA / "mooncake-fast25"
    # an explicit root without the dataset is an error, not a silent fall-back
    with pytest.raises(DatasetError, match=r"azure-llm-2023: dataset folder missing.*"
                                            r"MOSKA_SIM_DATA"):
        dataset_path("azure-llm-2023", "AzureLLMInferenceTrace_conv.csv")


def test_empty_environment_variable_means_unset(monkeypatch):
    monkeypatch.setenv(DATA_ENV, "  ")
    assert data_root()[0] == DATA


def test_environment_variable_naming_no_folder_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match=r"nope: no such folder \(named by \$MOSKA_SIM_DATA\)"):
        dataset_path("azure-llm-2023", "AzureLLMInferenceTrace_conv.csv")


def test_altered_or_truncated_copies_fail_verification(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(DATA / "azure-llm-2023", root / "azure-llm-2023")
    target = root / "azure-llm-2023" / "AzureLLMInferenceTrace_code.csv"
    raw = bytearray(target.read_bytes())
    raw[100] = ord("9") if raw[100] != ord("9") else ord("8")  # same size, other bytes
    target.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"AzureLLMInferenceTrace_code\.csv: sha256 .* "
                                            r"expected 54e9a6d2"):
        verify_dataset("azure-llm-2023", root=root)
    # without verify the path is still given (reading it is the caller's business)
    assert dataset_path("azure-llm-2023", "AzureLLMInferenceTrace_code.csv", root=root) == target
    target.write_bytes(bytes(raw).replace(b"\r\n", b"\n"))  # what a CRLF conversion does
    with pytest.raises(DatasetError, match=r"bytes, expected 320,117.*line endings"):
        dataset_path("azure-llm-2023", "AzureLLMInferenceTrace_code.csv", root=root, verify=True)


def test_missing_file_names_the_folder_and_the_source(tmp_path):
    root = tmp_path / "data"
    (root / "mooncake-fast25").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"conversation_trace\.jsonl: file missing .*"
                                            r"github\.com/kvcache-ai/Mooncake"):
        dataset_path("mooncake-fast25", "conversation_trace.jsonl", root=root)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(DatasetError, match=r"data/sharegpt: no such dataset \(shipped: "
                                            r"azure-llm-2023, mooncake-fast25\)"):
        dataset_path("sharegpt", "x.json")
    with pytest.raises(DatasetError, match=r"no such file in dataset 'azure-llm-2023' \(it has: "
                                            r"AzureLLMInferenceTrace_conv\.csv, "):
        dataset_path("azure-llm-2023", "conv.csv")
    assert issubclass(DatasetError, WorkloadError)  # the CLI's one-line error handling


def test_data_references_resolve_to_shipped_files():
    assert is_data_reference("data:azure-llm-2023/AzureLLMInferenceTrace_conv.csv")
    assert not is_data_reference("traces/x.csv")
    want = DATA / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
    assert resolve_data_reference("data:azure-llm-2023/AzureLLMInferenceTrace_conv.csv") == want
    assert resolve_data_reference("azure-llm-2023/AzureLLMInferenceTrace_conv.csv",
                                  verify=True) == want
    for bad in ("data:azure-llm-2023", "data:/x/y/z", "data:"):
        with pytest.raises(DatasetError, match=r"expected data:<dataset>/<file>"):
            resolve_data_reference(bad)
