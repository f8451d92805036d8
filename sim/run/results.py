"""A run's results folder, written atomically.

Everything is written into ``<parent>/.tmp-<name>-p<pid>-XXXX/`` beside the target and
moved into place with one ``os.replace`` at the end, so a folder under its final name is
always complete; on any error (a signal included) the temporary folder is removed, and the
staging folders of runs killed outright are removed by the next run writing beside them
(``sim.atomic``). A full disk or a write refused fails the run (the report too: a results
folder is never left without the report it should have). Contents:

- ``config.yaml``: the resolved config, headed by the package version and seed;
- ``summary.json``: deterministic metrics (same config + seed -> same bytes);
- ``requests.csv``: one row per arrived request;
- ``timeseries.csv``: throughput, running, queue lengths over simulated time;
- ``run_info.json``: wall time, events, events/s (the non-deterministic part);
- ``timeline.json``: a Chrome trace / Perfetto timeline, when one was recorded
  (``--timeline``; see docs/timeline.md);
- ``report.md`` / ``report.html`` / plots, when ``sim.report`` is installed.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.atomic import staged_folder

if TYPE_CHECKING:
    from sim.run import RunResult


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("moska-sim")
    except Exception:  # noqa: BLE001 - not installed: run from a checkout
        return "unknown"


def default_out_dir(name: str, root: Path = Path("results")) -> Path:
    """``results/<name>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``... if that exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / f"{name}-{stamp}"
    path, i = base, 2
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


def config_yaml(config: Any, seed: int) -> str:
    """The resolved config as YAML, with the version and seed on top (as comments, so the
    file loads back as the same config)."""
    head = f"# moska-sim {package_version()}\n# seed: {seed}\n"
    if hasattr(config, "to_yaml"):
        return head + config.to_yaml()
    import yaml

    data = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
    return head + yaml.safe_dump(data, sort_keys=False)


def summary_json(summary: dict) -> str:
    return json.dumps(summary, indent=2, allow_nan=False) + "\n"


def _csv_text(header: list[str], rows: Any) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def timeseries_csv(header: list[str], rows: np.ndarray) -> str:
    def fmt(v: float) -> str:
        return "" if not np.isfinite(v) else f"{v:.9g}"

    return _csv_text(header, ([fmt(v) for v in row] for row in rows.tolist()))


def write_results(result: RunResult, out_dir: Path | str | None = None) -> Path:
    """Write the results folder of ``result``; returns its final path."""
    name = str(result.summary.get("name", "run"))
    target = Path(out_dir) if out_dir is not None else default_out_dir(name)
    if target.is_file():
        raise ValueError(f"results folder {target}: exists and is a file; expected an absent "
                         "or empty folder")
    if target.is_dir() and any(target.iterdir()):
        raise ValueError(f"results folder {target}: exists and is not empty; expected an "
                         "absent or empty folder")
    try:
        with staged_folder(target) as tmp:
            _write_folder(result, tmp)
    except OSError as exc:  # name the file as it would have been, not the staging folder
        raise OSError(exc.errno, exc.strerror or str(exc),
                      _final_name(exc.filename, target)) from None
    return target


def _final_name(filename: Any, target: Path) -> str:
    """Where a failed write was headed: ``target/<file>`` for a file in the staging
    folder, the file itself otherwise, ``target`` when the error named none."""
    if filename is None:
        return str(target)
    path = Path(str(filename))
    parent = path.parent
    if parent.parent == target.parent and parent.name.startswith(".tmp-"):
        return str(target / path.name)
    return str(path)


def _write_folder(result: RunResult, tmp: Path) -> None:
    """The files of a results folder, into the (staging) folder ``tmp``."""
    seed = int(result.summary.get("seed", 0))
    if result.config is not None:
        _write(tmp / "config.yaml", config_yaml(result.config, seed))
    _write(tmp / "summary.json", summary_json(result.summary))
    _write_chunks(tmp / "requests.csv", result.requests.csv_chunks())
    _write(tmp / "timeseries.csv",
           timeseries_csv(result.timeseries_header, result.timeseries_rows))
    tl = getattr(result, "timeline", None)
    if tl is not None:
        _write(tmp / "timeline.json", tl.to_json())
    info = dict(result.run_info)
    info["report"] = _write_report(tmp, result.summary)
    info["moska_sim_version"] = package_version()
    info["python"] = sys.version.split()[0]
    info["numpy"] = np.__version__
    _write(tmp / "run_info.json", json.dumps(info, indent=2, default=str) + "\n")


def _write(path: Path, text: str) -> None:
    """``path.write_text`` in UTF-8; an OSError that names no file (a full disk while
    writing) is raised again naming ``path``."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def _write_chunks(path: Path, chunks: Iterable[str]) -> None:
    """:func:`_write` of text made a chunk at a time (never all in memory at once)."""
    try:
        with path.open("w", encoding="utf-8") as fh:
            fh.writelines(chunks)
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def _write_report(folder: Path, summary: dict) -> str:
    """Plots and report.{md,html} via ``sim.report`` if present; says what happened."""
    try:
        from sim.report import write_run_report
    except ImportError as exc:
        print(f"warning: no report written ({exc})", file=sys.stderr)
        return f"skipped: {exc}"
    try:
        write_run_report(folder, summary, folder / "requests.csv", folder / "timeseries.csv")
    except OSError:
        raise  # a full disk or a refused write fails the run: nothing half-written is kept
    except Exception as exc:  # noqa: BLE001 - the data files are complete without it
        print(f"warning: report failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return f"failed: {type(exc).__name__}: {exc}"
    return "written"


__all__ = ["config_yaml", "default_out_dir", "package_version", "summary_json", "write_results"]
