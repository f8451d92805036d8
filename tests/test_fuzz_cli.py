"""Fuzz the command line with bad configs, YAML text, ``--set`` values and options (issue 14).

Every generated input is bad by construction; each goes through the real entry point
``sim.cli.main(argv)`` in this process (fast: no interpreter start-up per case) and must end
in a clean error: exit status 2, exactly one line on stderr naming the file and the field
(or option), no traceback (any exception escaping ``main`` fails the test), no results
folder and no staging folder left, and no hang (each call runs under an alarm). Hypothesis
runs derandomized, so a CI run sees the same cases every time. The helpers here are shared
by ``tests/test_fuzz_traces.py`` and ``tests/test_fuzz_out.py``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import signal
import string
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.cli import main as cli_main
from sim.config import fields as F
from sim.config.loader import MAX_SET_VALUE
from sim.config.yaml_source import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES
from sim.units import UnitError, parse_number
from tests.small_config import small_config

#: every fuzz test: derandomized (same cases every CI run), no deadline, no database
FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])
CALL_TIMEOUT_S = 20  #: a call taking longer is a hang


def fuzz(examples: int) -> settings:
    """FUZZ with ``examples`` generated cases."""
    return settings(FUZZ, max_examples=examples)


# ----------------------------------------------------------------------------- harness


@dataclass
class Outcome:
    """What one call of the command line did."""

    argv: list[str]
    code: int | None
    out: str
    err: str
    crash: str | None = None  # the traceback of an exception that escaped main()

    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


class _Hang(Exception):
    pass


@contextlib.contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    def fire(signum: int, frame: Any) -> None:
        raise _Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def call(argv: list[str], cwd: Path) -> Outcome:
    """``moska-sim ARGV`` in this process, from folder ``cwd``; never raises."""
    out, err = io.StringIO(), io.StringIO()
    code: int | None = None
    crash = None
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            with _alarm(CALL_TIMEOUT_S):
                code = cli_main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException:  # noqa: BLE001 - an escaped exception is what we look for
            crash = traceback.format_exc()
    return Outcome(list(argv), code, out.getvalue(), err.getvalue(), crash)


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    """Entries of ``folder`` a failed command must not leave: results folders, staging
    folders, temp files (everything but the inputs named in ``keep``)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def assert_clean_error(outcome: Outcome, names: list[str], workdir: Path,
                       keep: set[str]) -> None:
    """Exit 2, one stderr line holding every string of ``names``, no traceback, nothing
    written."""
    where = f"argv={[a[:80] for a in outcome.argv]}"
    assert outcome.crash is None, f"{where}: exception escaped:\n{outcome.crash}"
    assert "Traceback" not in outcome.err, f"{where}: traceback on stderr:\n{outcome.err}"
    assert outcome.code == 2, f"{where}: exit {outcome.code}, stderr {outcome.err!r}"
    lines = outcome.lines()
    assert len(lines) == 1, f"{where}: expected one error line, got {lines!r}"
    for name in names:
        assert name in lines[0], f"{where}: {name!r} not named in {lines[0]!r}"
    assert not leftovers(workdir, keep), f"{where}: left {leftovers(workdir, keep)}"


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A fresh folder per generated case (hypothesis runs many cases per test)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        yield Path(tmp)


def write_config(folder: Path, data: dict, name: str = "exp.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def base_config(**over: Any) -> dict:
    """The small MoSKA config (valid; 20 requests) the mutations start from."""
    return small_config("fuzz", **{"run.requests": 20, **over})


def set_path(data: dict, dotted: str, value: Any) -> dict:
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


def run_bad(folder: Path, argv: list[str], names: list[str],
            keep: set[str] | None = None) -> None:
    """Run ``argv`` from ``folder`` with ``--out`` inside it and assert a clean error."""
    outcome = call(argv, folder)
    keep = keep if keep is not None else {p.name for p in folder.iterdir()}
    assert_clean_error(outcome, names, folder, keep)


def _is_number(text: str) -> bool:
    try:
        parse_number(text)
    except (UnitError, ValueError):
        return False
    return True


# ----------------------------------------------------------------------------- strategies

# (dotted field, kind, floor, ceiling): kind 'int' (floor and ceiling included), 'num'
# (>= floor), 'num_gt' (> floor); the floors here are those of the base config's context
# (a moska run needs a shared node; chunk_tokens must fit the 256Ki-token corpus).
NUMERIC_FIELDS: list[tuple[str, str, float, float]] = [
    ("cluster.unique.nodes", "int", 1, F.MAX_NODES),
    ("cluster.shared.nodes", "int", 1, F.MAX_NODES),
    ("cluster.unique.price_per_hour", "num", 0, F.MAX_PRICE_PER_HOUR),
    ("cluster.fabric.link.bandwidth_GBps", "num", F.MIN_BANDWIDTH_GBPS, F.MAX_BANDWIDTH_GBPS),
    ("cluster.fabric.link.latency_ns", "num", 0, F.MAX_LATENCY_NS),
    ("cluster.fabric.switch_latency_ns", "num", 0, F.MAX_LATENCY_NS),
    ("workload.arrivals.rate_per_s", "num", F.MIN_RATE_PER_S, F.MAX_RATE_PER_S),
    ("workload.unique_tokens", "int", 1, F.MAX_CONTEXT_TOKENS),
    ("workload.output_tokens", "int", 1, F.MAX_CONTEXT_TOKENS),
    ("workload.shared.tokens", "int", 0, F.MAX_SHARED_TOKENS),
    ("workload.shared.chunk_tokens", "int", 1, 256 * 1024),
    ("workload.shared.keep_fraction", "num_gt", 0, 1),
    ("workload.shared.corpora", "int", 1, F.MAX_CORPORA),
    ("workload.shared.popularity.zipf", "num", 0, F.MAX_ZIPF),
    ("batching.max_batch", "int", 1, F.MAX_BATCH),
    ("batching.window_us", "num", 0, F.MAX_WINDOW_US),
    ("batching.max_running", "int", 1, F.MAX_BATCH),
    ("run.requests", "int", 1, F.MAX_REQUESTS),
    ("run.seed", "int", 0, F.MAX_SEED),
    ("run.warmup_s", "num", 0, F.MAX_DURATION_S),
    ("analysis.batch", "int", 1, F.MAX_BATCH),
]

garbage_text = st.text(alphabet=string.printable.strip() + "é€", min_size=1,
                       max_size=24).filter(lambda t: not _is_number(t))


def bad_values(kind: str, floor: float, ceiling: float) -> st.SearchStrategy[Any]:
    """Values a field of ``kind`` within [floor, ceiling] must refuse."""
    choices: list[st.SearchStrategy[Any]] = [
        st.booleans(), garbage_text, st.just(math.nan), st.just(math.inf), st.just(-math.inf),
        st.lists(st.integers(0, 9), min_size=1, max_size=3),
        st.integers(min_value=int(ceiling) + 1, max_value=10**40),
        st.floats(min_value=float(ceiling), exclude_min=True, allow_infinity=False,
                  allow_nan=False),
        st.sampled_from(["1e30", "1e400", "-1e400", "9" * 120, "64Zi", "1K"]),
    ]
    if kind == "int":
        choices += [st.integers(min_value=-10**30, max_value=int(floor) - 1),
                    st.floats(min_value=max(floor, 0.5), max_value=min(ceiling, 1e6))
                    .filter(lambda x: not float(x).is_integer())]
    elif kind == "num":
        if floor > 0 or floor == 0:
            choices.append(st.floats(max_value=float(floor), exclude_max=True,
                                     allow_infinity=False, allow_nan=False, min_value=-1e300))
    else:  # num_gt
        choices.append(st.floats(max_value=float(floor), allow_infinity=False, allow_nan=False,
                                 min_value=-1e300))
    return st.one_of(choices)


@st.composite
def bad_field(draw: st.DrawFn) -> tuple[str, Any]:
    dotted, kind, floor, ceiling = draw(st.sampled_from(NUMERIC_FIELDS))
    return dotted, draw(bad_values(kind, floor, ceiling))


SECTIONS = ["", "cluster", "cluster.unique", "cluster.fabric", "cluster.fabric.link", "workload",
            "workload.arrivals", "workload.shared", "batching", "run", "analysis"]
REQUIRED = ["name", "cluster", "workload", "run", "cluster.unique", "cluster.shared",
            "cluster.fabric", "cluster.unique.nodes", "cluster.unique.chip",
            "cluster.fabric.link", "workload.arrivals", "workload.unique_tokens",
            "workload.output_tokens", "workload.shared", "workload.shared.tokens",
            "workload.arrivals.kind", "workload.arrivals.rate_per_s"]
VALID_NAMES = {"fp8", "bf16", "moska", "vanilla", "prefix_cache", "shared_gemm", "layer",
               "step", "deterministic", "exponential", "switch", "ring", "fat_tree",
               "llama-3.1-8b", "llama-3.1-70b", "h100-sxm", "h200", "b200", "moska-unique",
               "moska-shared"}
NON_MAPPING = st.one_of(st.integers(-5, 5), garbage_text, st.lists(st.integers(), max_size=2))


def _get(data: dict, dotted: str) -> Any:
    node: Any = data
    for part in [p for p in dotted.split(".") if p]:
        node = node[part]
    return node


@st.composite
def structural(draw: st.DrawFn) -> tuple[dict, str]:
    """(config, dotted field the error must name): an unknown key, a missing required key,
    a section that is not a mapping, a string where a choice or name is expected."""
    data = base_config()
    data.setdefault("analysis", {"batch": 8})
    how = draw(st.sampled_from(["unknown", "missing", "not-mapping", "bad-choice"]))
    if how == "unknown":
        section = draw(st.sampled_from(SECTIONS))
        node = _get(data, section)
        key = draw(st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12)
                   .filter(lambda k: k not in node and k not in {"preset", "hosts_per_leaf",
                                                                  "spines", "topology", "tp",
                                                                  "price_per_hour", "seed",
                                                                  "duration_s", "warmup_s",
                                                                  "granularity", "service",
                                                                  "corpora", "popularity",
                                                                  "switch_latency_ns",
                                                                  "batch", "batch_sweep",
                                                                  "shared_tokens_sweep",
                                                                  "model", "precision",
                                                                  "system", "batching",
                                                                  "analysis", "max_running",
                                                                  "keep_fraction",
                                                                  "chunk_tokens"}))
        node[key] = draw(st.integers(0, 9))
        return data, f"{section}.{key}" if section else key
    if how == "missing":
        dotted = draw(st.sampled_from(REQUIRED))
        parent, _, last = dotted.rpartition(".")
        del _get(data, parent)[last]
        if dotted == "workload.arrivals.kind":  # then the error is about the union's key
            return data, "workload.arrivals"
        return data, dotted
    if how == "not-mapping":
        section = draw(st.sampled_from([s for s in SECTIONS if s]))
        parent, _, last = section.rpartition(".")
        _get(data, parent)[last] = draw(NON_MAPPING)
        return data, section
    dotted = draw(st.sampled_from(["precision", "system", "model", "run.granularity",
                                   "run.service", "cluster.fabric.topology",
                                   "cluster.unique.chip", "name"]))
    value = draw(st.one_of(garbage_text.filter(lambda t: t not in VALID_NAMES),
                           st.integers(), st.booleans()))
    if dotted == "name" and isinstance(value, str):
        value = value + " /"  # a name holds no spaces or slashes
    set_path(data, dotted, value)
    return data, dotted


# ----------------------------------------------------------------------------- configs


@fuzz(180)
@given(bad_field())
def test_bad_field_values_are_clean_errors(case: tuple[str, Any]) -> None:
    """180 configs with one numeric field out of its bounds or of the wrong type."""
    dotted, value = case
    with workdir() as tmp:
        cfg = write_config(tmp, set_path(base_config(), dotted, value))
        run_bad(tmp, ["run", str(cfg), "--no-progress", "--out", str(tmp / "out")],
                [str(cfg), dotted])


@fuzz(80)
@given(structural())
def test_structural_mistakes_are_clean_errors(case: tuple[dict, str]) -> None:
    """80 configs with an unknown key, a missing key, a non-mapping section or a bad name."""
    data, dotted = case
    with workdir() as tmp:
        cfg = write_config(tmp, data)
        run_bad(tmp, ["run", str(cfg), "--no-progress", "--out", str(tmp / "out")],
                [str(cfg), dotted])


CONTROL = [chr(c) for c in [*range(9), 11, 12, *range(14, 32), 127, 0x85 - 1, 0x9F]]


@st.composite
def bad_yaml_text(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """(file bytes, strings the error must hold): control characters anywhere (comments
    too), brackets nested too deep, an alias bomb, text too long, bytes that are not
    UTF-8, duplicate keys, tabs for indentation."""
    text = yaml.safe_dump(base_config(), sort_keys=False) + "# the end\n"
    how = draw(st.sampled_from(["control", "deep", "deep-block", "bomb", "long", "utf8",
                                "duplicate", "tab"]))
    if how == "control":
        at = draw(st.integers(0, len(text)))
        char = draw(st.sampled_from(CONTROL))
        return (text[:at] + char + text[at:]).encode("utf-8"), ["control character", "line"]
    if how == "deep":
        depth = draw(st.integers(MAX_YAML_DEPTH + 1, 20_000))
        opener = draw(st.sampled_from(["[", "{a: "]))
        return (text + "extra: " + opener * depth + "\n").encode(), ["nesting deeper"]
    if how == "deep-block":
        depth = draw(st.integers(MAX_YAML_DEPTH + 1, 400))
        nest = "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v: 1\n"
        return (text + nest).encode(), ["nesting deeper"]
    if how == "bomb":
        width = draw(st.integers(8, 12))
        levels = draw(st.integers(5, 9))
        if width ** levels <= MAX_YAML_NODES:
            levels = 6
        lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
        return (text + "\n".join(lines) + "\n").encode(), ["aliases"]
    if how == "long":
        pad = draw(st.integers(1, 1000))
        return (text + "#" + "x" * (MAX_YAML_BYTES + pad) + "\n").encode(), ["at most"]
    if how == "utf8":
        at = draw(st.integers(0, len(text)))
        raw = text.encode()
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xe9", b"\x80", b"\xed\xa0\x80"]))
        return raw[:at] + bad + raw[at:], ["UTF-8"]
    if how == "duplicate":
        key = draw(st.sampled_from(["name", "run", "workload", "cluster", "system"]))
        value = "moska" if key == "system" else "{}" if key != "name" else "again"
        return (text + f"{key}: {value}\n").encode(), ["duplicate key", key]
    lines = text.splitlines()
    index = draw(st.sampled_from([i for i, ln in enumerate(lines) if ln.startswith("  ")]))
    lines[index] = "\t" + lines[index].lstrip()
    return ("\n".join(lines) + "\n").encode(), ["line"]


@fuzz(80)
@given(bad_yaml_text())
def test_hostile_yaml_is_refused_quickly(case: tuple[bytes, list[str]]) -> None:
    """80 YAML files that are hostile or malformed: refused with one line naming the file."""
    data, names = case
    with workdir() as tmp:
        cfg = tmp / "exp.yaml"
        cfg.write_bytes(data)
        run_bad(tmp, ["run", str(cfg), "--no-progress", "--out", str(tmp / "out")],
                [str(cfg), *names])


@st.composite
def bad_assignment(draw: st.DrawFn) -> tuple[str, list[str]]:
    """(a --set argument, strings the error must hold)."""
    how = draw(st.sampled_from(["value", "deep", "bomb", "control", "long", "no-equals",
                                "not-mapping"]))
    if how == "value":
        dotted, value = draw(bad_field())
        text = yaml.safe_dump(value, default_flow_style=True).strip()
        return f"{dotted}={text.removesuffix('...').strip()}", [dotted]
    if how == "deep":
        depth = draw(st.integers(MAX_YAML_DEPTH + 1, 5000))
        return "run.seed=" + "[" * depth + "]" * depth, ["nesting deeper"]
    if how == "bomb":
        return ("run.seed={a: &a [x,x,x,x,x,x,x,x,x,x], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
                "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c],"
                " e: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]}"), ["aliases"]
    if how == "control":
        return "run.seed=1" + draw(st.sampled_from(CONTROL[1:])), ["control character"]
    if how == "long":
        return "name=" + "n" * (MAX_SET_VALUE + draw(st.integers(1, 100))), ["at most"]
    if how == "no-equals":
        return draw(st.text(alphabet=string.ascii_letters + ".", min_size=0, max_size=20)), \
            ["--set"]
    parent = draw(st.sampled_from(["name", "run.seed", "system", "precision"]))
    return f"{parent}.x=1", [parent]


@fuzz(60)
@given(bad_assignment())
def test_bad_set_values_are_clean_errors(case: tuple[str, list[str]]) -> None:
    """60 bad ``--set`` arguments to run and validate."""
    assignment, names = case
    with workdir() as tmp:
        cfg = write_config(tmp, base_config())
        run_bad(tmp, ["run", str(cfg), "--no-progress", "--out", str(tmp / "out"),
                      "--set", assignment], names)


# ----------------------------------------------------------------------------- options

RUN_OPTIONS = ["--out", "--set", "--no-progress", "--timeline", "--timeline-window",
               "--timeline-max-events", "--help", "--config", "--arrivals", "--json",
               "--no-write", "--op", "--chip", "--dtype", "--m", "--n", "--k", "--batch",
               "--kv-tokens", "--bytes", "--q-heads", "--kv-heads", "--head-dim",
               "--partials", "--link"]


def _unknown_option(name: str) -> bool:
    return not any(opt.startswith("--" + name) for opt in RUN_OPTIONS)


@st.composite
def bad_argv(draw: st.DrawFn, cfg: str) -> tuple[list[str], list[str]]:
    """(argv, strings the error must hold) of command lines that must be refused."""
    how = draw(st.sampled_from(["unknown-option", "window", "max-events", "cost-size",
                                "cost-link", "cost-heads", "missing", "command",
                                "cost-op"]))
    if how == "unknown-option":
        cmd = draw(st.sampled_from(["run", "validate", "analyze"]))
        name = draw(st.text(alphabet=string.ascii_lowercase + "-", min_size=1, max_size=10)
                    .filter(lambda n: not n.startswith("-") and _unknown_option(n)))
        return [cmd, cfg, f"--{name}"], ["unrecognized arguments", f"--{name}"]
    if how == "window":
        window = draw(st.one_of(
            garbage_text.filter(lambda t: ":" not in t),
            st.tuples(st.floats(allow_nan=False), st.floats(allow_nan=False)).filter(
                lambda ab: not (0 <= ab[0] < ab[1] <= F.MAX_DURATION_S)).map(
                lambda ab: f"{ab[0]!r}:{ab[1]!r}"),
            st.sampled_from(["nan:1", "0:nan", "inf:", ":inf", "1e400:", "a:b", "5:1"])))
        return ["run", cfg, "--no-progress", f"--timeline-window={window}"], \
            ["--timeline-window"]
    if how == "max-events":
        value = draw(st.one_of(st.integers(max_value=0), st.integers(min_value=10**9 + 1),
                               garbage_text))
        return ["run", cfg, "--no-progress", f"--timeline-max-events={value}"], \
            ["--timeline-max-events"]
    if how == "cost-size":
        value = draw(st.one_of(garbage_text, st.integers(max_value=-1),
                               st.integers(min_value=2**40 + 1, max_value=10**30),
                               st.sampled_from(["1e400", "1.5", "-1Ki"])))
        opt = draw(st.sampled_from(["--m", "--n", "--k"]))
        args = {"--m": "64", "--n": "64", "--k": "64", opt: str(value)}
        return ["cost", "--op", "gemm", *[f"{k}={v}" for k, v in args.items()]], [opt]
    if how == "cost-link":
        bw = draw(st.one_of(st.floats(max_value=F.MIN_BANDWIDTH_GBPS, exclude_max=True),
                            st.floats(min_value=F.MAX_BANDWIDTH_GBPS, exclude_min=True),
                            garbage_text.filter(lambda t: ":" not in t)))
        lat = draw(st.one_of(st.floats(min_value=0, max_value=1e4), st.just(-1.0)))
        return ["cost", "--op", "transfer", "--bytes", "1Mi", f"--link={bw}:{lat}"], ["--link"]
    if how == "cost-heads":
        opt = draw(st.sampled_from(["--q-heads", "--kv-heads", "--head-dim", "--partials"]))
        value = draw(st.one_of(st.integers(max_value=0), st.integers(min_value=4097),
                               garbage_text))
        return ["cost", "--op", "decode-attention", "--batch", "8", "--kv-tokens", "1Ki",
                f"{opt}={value}"], [opt]
    if how == "missing":
        argv = draw(st.sampled_from([["run"], ["validate"], ["analyze"], ["replay", cfg],
                                     ["cost"], ["run", cfg, "--out"], ["run", cfg, "--set"]]))
        return argv, ["error"]
    if how == "cost-op":
        op = draw(garbage_text)
        return ["cost", f"--op={op}"], ["--op"]
    name = draw(st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=12).filter(
        lambda n: n not in ("run", "validate", "analyze", "cost", "capture", "replay",
                            "calibrate", "compare", "sweep", "probe")))
    return [name, cfg], ["unknown command"]


@fuzz(120)
@given(st.data())
def test_bad_command_lines_are_clean_errors(data: st.DataObject) -> None:
    """120 command lines with unknown options, bad option values, missing arguments or an
    unknown command."""
    with workdir() as tmp:
        cfg = str(write_config(tmp, base_config()))
        argv, names = data.draw(bad_argv(cfg))
        run_bad(tmp, argv, names)


# ----------------------------------------------------------------------------- by hand


def test_alias_bomb_and_deep_nesting_are_refused_fast(tmp_path: Path) -> None:
    """The issue's cases: a 10^9-value alias bomb and 5000 nested brackets, each refused in
    well under a second (they took 30-46 s and a RecursionError before)."""
    import time

    bomb = "a: &a [" + ",".join(["x"] * 10) + "]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n"
        for i in range(8))
    for text, what in ((bomb, "aliases"), ("x: " + "[" * 5000 + "]" * 5000, "nesting")):
        path = tmp_path / "x.yaml"
        path.write_text(text)
        start = time.perf_counter()
        outcome = call(["validate", str(path)], tmp_path)
        assert time.perf_counter() - start < 2.0
        assert outcome.code == 2 and what in outcome.err and "Traceback" not in outcome.err


def test_named_pipe_config_is_refused_at_once(tmp_path: Path) -> None:
    """A named pipe as the config: refused without waiting for a writer."""
    fifo = tmp_path / "exp.yaml"
    os.mkfifo(fifo)
    run_bad(tmp_path, ["run", str(fifo), "--no-progress", "--out", str(tmp_path / "o")],
            [str(fifo), "named pipe"])
    run_bad(tmp_path, ["run", str(tmp_path), "--no-progress"], [str(tmp_path), "folder"])


@pytest.mark.parametrize("argv, names", [
    (["cost", "--op", "transfer", "--bytes", "1Mi", "--link", "0:0"], ["--link"]),
    (["cost", "--op", "transfer", "--bytes", "1Mi", "--link=-1:5"], ["--link"]),
    (["cost", "--op", "transfer", "--bytes", "1Mi", "--link=5:-1"], ["--link"]),
])
def test_cost_link_zero_or_negative_is_an_error(tmp_path: Path, argv: list[str],
                                                names: list[str]) -> None:
    run_bad(tmp_path, argv, names)


def test_nodes_as_64k_is_refused(tmp_path: Path) -> None:
    """``nodes: "64k"`` (64000 nodes) is beyond the plausible cluster: refused at once."""
    for group in ("unique", "shared"):
        cfg = write_config(tmp_path, set_path(base_config(), f"cluster.{group}.nodes", "64k"))
        run_bad(tmp_path, ["run", str(cfg), "--no-progress", "--out", str(tmp_path / "o")],
                [f"cluster.{group}.nodes", "<= 4096"])
        cfg.unlink()


def test_implausible_rates_and_scales_are_refused(tmp_path: Path) -> None:
    """Values that used to pass validate and run into t = 0 or an OverflowError."""
    cases: list[tuple[str, Any]] = [
        ("workload.arrivals.rate_per_s", 1e-10), ("workload.arrivals.rate_per_s", 1e300),
        ("workload.unique_tokens", "1e30"), ("batching.window_us", "1e15"),
        ("cluster.fabric.link.bandwidth_GBps", 1e-300),
        ("cluster.fabric.link.latency_ns", 1e300)]
    for dotted, value in cases:
        cfg = write_config(tmp_path, set_path(base_config(), dotted, value))
        outcome = call(["validate", str(cfg)], tmp_path)
        assert outcome.code == 2 and dotted in outcome.err, (dotted, outcome.err)
        cfg.unlink()
    plan = base_config()
    plan["workload"]["arrivals"] = {"kind": "trace", "format": "azure", "path": "x.csv",
                                    "time_scale": 1e300}
    (tmp_path / "x.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                    "2023-11-16 18:15:46,5,5\n")
    cfg = write_config(tmp_path, plan)
    outcome = call(["validate", str(cfg)], tmp_path)
    assert outcome.code == 2 and "workload.arrivals.time_scale" in outcome.err


def test_duration_only_run_planning_too_many_arrivals_is_refused(tmp_path: Path) -> None:
    """rate x duration beyond MAX_REQUESTS arrivals: refused, naming the rate and why."""
    data = base_config()
    data["run"] = {"duration_s": 1e6, "seed": 1}
    data["workload"]["arrivals"]["rate_per_s"] = 1e6
    cfg = write_config(tmp_path, data)
    outcome = call(["validate", str(cfg)], tmp_path)
    assert outcome.code == 2
    assert "workload.arrivals.rate_per_s" in outcome.err and "arrivals" in outcome.err


def test_bounds_accept_every_shipped_workload() -> None:
    """The bounds reject no value the shipped workloads and studies use."""
    from sim.config import load_config
    from sim.studies.variants import load_inputs

    root = Path(__file__).resolve().parents[1] / "workloads"
    for path in sorted(root.glob("*.yaml")):
        load_config(path)
    for path in sorted((root / "studies").glob("*.yaml")):
        load_inputs([path], {})
