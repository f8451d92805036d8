"""What the study tests share: tiny configs that run in about a second, a pinned code
version, and a byte-for-byte comparison of two study folders."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.studies import cache as cache_mod

TINY = """\
name: {name}
system: {system}
cluster:
  unique: {{nodes: 1, chip: {chip}, price_per_hour: 4.0}}
  shared: {{nodes: 1, chip: {chip}, price_per_hour: 6.0}}
  fabric: {{topology: switch, link: {{bandwidth_GBps: 450, latency_ns: 1000}}}}
workload:
  arrivals: {{kind: poisson, rate_per_s: 20}}
  unique_tokens: 512
  output_tokens: 16
  shared: {{tokens: 64Ki, chunk_tokens: 2048, keep_fraction: 0.25}}
batching: {{max_batch: 64}}
run: {{requests: {requests}, seed: {seed}, granularity: step}}
"""
CONFIGS = {
    "tiny-moska": ("moska", "moska-unique", 3),
    "tiny-h100": ("moska", "h100-sxm", 4),
    "tiny-prefix": ("prefix_cache", "moska-unique", 5),
    "tiny-gemm": ("shared_gemm", "moska-unique", 6),
}
PINNED_SOURCE_HASH = "5" * 64

# Files of a study folder that must be the same bytes however the study was run (run_info.json
# holds wall times, so it is not among them).
RUN_FILES = ("summary.json", "requests.csv", "timeseries.csv", "config.yaml", "report.md",
             "report.html")


def write_configs(folder: Path, names: list[str] | None = None, requests: int = 24) -> list[Path]:
    """The tiny configs named (default: all), as YAML files in ``folder``."""
    paths = []
    for name in names or list(CONFIGS):
        system, chip, seed = CONFIGS[name]
        path = folder / f"{name}.yaml"
        path.write_text(TINY.format(name=name, system=system, chip=chip, requests=requests,
                                    seed=seed))
        paths.append(path)
    return paths


@contextlib.contextmanager
def pinned_code_version(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Pin the hash of the source files: other people may edit the checkout while a test
    runs, and a study and its resumption must agree on the code version. (The hash itself
    is tested on a folder of its own in test_studies_resume.py.)"""
    monkeypatch.setattr(cache_mod, "source_hash", lambda root=None: PINNED_SOURCE_HASH)
    cache_mod.code_version.cache_clear()
    try:
        yield cache_mod.code_version()
    finally:
        cache_mod.code_version.cache_clear()


# the same pin for a study run in a subprocess (python -c PINNED_MAIN compare ...)
PINNED_MAIN = (
    "import sys\n"
    "import sim.studies.cache as c\n"
    f"c.source_hash = lambda root=None: {PINNED_SOURCE_HASH!r}\n"
    "from sim.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def report_files(study: Path) -> list[str]:
    """Every file of a study folder but cache/ and run_info.json, relative, sorted."""
    out = []
    for p in sorted(study.rglob("*")):
        rel = p.relative_to(study)
        if p.is_file() and rel.parts[0] != "cache" and p.name != "run_info.json":
            out.append(rel.as_posix())
    return out


def assert_same_study(a: Path, b: Path) -> None:
    """Two study folders hold the same report, byte for byte (cache/ and wall times aside)."""
    files = report_files(a)
    assert files == report_files(b)
    assert "compare.json" in files and "compare.html" in files
    differ = [f for f in files if (a / f).read_bytes() != (b / f).read_bytes()]
    assert not differ, f"differ: {differ}"
