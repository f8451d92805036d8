"""A long run says how far it is, how long it has taken and about how long is left."""

from __future__ import annotations

import io

from sim.run.simulate import _progress_bar


def test_log_lines_give_elapsed_and_time_left_at_the_pace_so_far() -> None:
    clock = iter([100.0,  # the bar starts
                  103.0,  # 5% after 3 s: too early (under a tenth, under 5 s)
                  110.0,  # 25% after 10 s: a line; 10 s for a quarter leaves 30 s
                  111.0,  # 30% one second later: under 5 s since the last line
                  160.0,  # 50% after 60 s: a line; as long again
                  400.0])  # 100% after 300 s
    out = io.StringIO()
    with _progress_bar(True, 2000, "requests", clock=lambda: next(clock), stream=out) as tick:
        for done in (100, 500, 600, 1000, 2000):
            tick(done)
    assert out.getvalue().splitlines() == [
        "simulating: 500/2,000 requests (25%), 10s elapsed, ~30s left",
        "simulating: 1,000/2,000 requests (50%), 1m00s elapsed, ~1m00s left",
        "simulating: 2,000/2,000 requests (100%), 5m00s elapsed, ~0s left",
    ]


def test_simulated_seconds_keep_two_decimals() -> None:
    clock = iter([0.0, 3600.0])
    out = io.StringIO()
    with _progress_bar(True, 40.0, "s", clock=lambda: next(clock), stream=out) as tick:
        tick(10.0)
    assert out.getvalue() == "simulating: 10.00/40.00 s (25%), 1h00m elapsed, ~3h00m left\n"


def test_disabled_progress_says_nothing(capsys) -> None:
    with _progress_bar(False, 10, "requests") as tick:
        tick(10)
    assert capsys.readouterr() == ("", "")


def test_a_terminal_gets_a_bar_with_the_time_left() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    clock = iter(float(t) for t in range(100))
    with _progress_bar(True, 100, "requests", clock=lambda: next(clock), stream=out) as tick:
        for done in range(0, 101, 10):
            tick(done)
    shown = out.getvalue()
    assert "simulating" in shown and "100/100 requests" in shown
    assert " elapsed, " in shown and " left" in shown
