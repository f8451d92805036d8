"""Open real report.html and compare.html files in headless Chromium and check what a
reader would see: every image loads, nothing is wider than the page (wide tables scroll
inside their own box), the console stays free of errors, and a screenshot shows a
rendered page.

How: a copy of each report gets a small script at the top of <head> that records console
errors, uncaught exceptions and failed resource loads from the first moment, and after the
load event writes its findings as JSON into the page; ``chromium --headless --dump-dom``
prints the DOM, and the test reads the JSON back. No browser driver or Python package is
needed, only the ``chromium`` binary (Debian package ``chromium``; ``.ci/run`` installs
it). Without one the tests skip and say why. ``MOSKA_SIM_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from small_config import small_config

from sim.config import ExperimentConfig
from sim.report import write_compare_report
from sim.run import run_simulation

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTHS = (1280, 820)  # a laptop window and a narrow one
TIMEOUT_S = 120

PROBE = r"""<script>
(function () {
  var errors = [];
  var origError = console.error;
  console.error = function () {
    errors.push("console.error: " + Array.prototype.map.call(arguments, String).join(" "));
    return origError.apply(console, arguments);
  };
  window.addEventListener("error", function (e) {
    if (e.target && e.target !== window && (e.target.src || e.target.href)) {
      errors.push("failed to load " + e.target.tagName + " " +
                  String(e.target.src || e.target.href).slice(0, 80));
    } else {
      errors.push("uncaught: " + (e.message || String(e)));
    }
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    errors.push("unhandled rejection: " + String(e.reason));
  });
  function scrollsSideways(el) {
    for (var p = el.parentElement; p; p = p.parentElement) {
      var ox = getComputedStyle(p).overflowX;
      if (ox === "auto" || ox === "scroll" || ox === "hidden") { return true; }
    }
    return false;
  }
  window.addEventListener("load", function () {
    var doc = document.documentElement;
    var width = doc.clientWidth;
    var images = Array.prototype.map.call(document.images, function (img) {
      return {alt: img.alt, complete: img.complete, naturalWidth: img.naturalWidth,
              shownWidth: img.getBoundingClientRect().width,
              right: img.getBoundingClientRect().right};
    });
    var overflowing = [];
    document.querySelectorAll("body *").forEach(function (el) {
      var r = el.getBoundingClientRect();
      if (r.width > 0 && r.right > width + 1 && !scrollsSideways(el)) {
        overflowing.push(el.tagName + (el.className ? "." + el.className : "") +
                         " right=" + Math.round(r.right));
      }
    });
    var out = document.createElement("pre");
    out.id = "moska-probe";
    out.textContent = JSON.stringify({
      viewport: width, scrollWidth: doc.scrollWidth, images: images,
      overflowing: overflowing.slice(0, 20), errors: errors,
      links: Array.prototype.map.call(document.links, function (a) {
        return a.getAttribute("href"); })
    });
    document.body.appendChild(out);
  });
})();
</script>
"""


def find_browser() -> str | None:
    """The Chromium binary: $MOSKA_SIM_CHROMIUM, else the first of BROWSER_NAMES on PATH."""
    env = os.environ.get("MOSKA_SIM_CHROMIUM", "").strip()
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> str:
    path = find_browser()
    if path is None:
        reason = ("no Chromium found (looked for $MOSKA_SIM_CHROMIUM and "
                  f"{', '.join(BROWSER_NAMES)} on PATH); install the Debian package "
                  "chromium to run the browser checks")
        # a warning reaches pytest's summary even under -q, where skip reasons do not
        warnings.warn(f"report browser checks skipped: {reason}", UserWarning, stacklevel=1)
        pytest.skip(reason)
    return path


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium with a throw-away profile; fails the test on a timeout."""
    cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu",
           "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
           "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
           f"--user-data-dir={profile}", "--virtual-time-budget=10000",
           "--enable-logging=stderr", "--v=0", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                               check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within {TIMEOUT_S} s: {' '.join(cmd)}")


def probe(browser: str, page: Path, width: int, tmp: Path) -> dict:
    """Open a probed copy of ``page`` (same folder, so relative links resolve) at
    ``width`` px and return the probe's findings."""
    text = page.read_text(encoding="utf-8")
    assert "<head>" in text, f"{page}: no <head> to put the probe in"
    probed = page.with_name(f".probe-{width}-{page.name}")
    probed.write_text(text.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    try:
        done = _chromium(browser, tmp / f"profile-{width}-{page.stem}",
                         f"--window-size={width},1000", "--dump-dom", probed.as_uri())
    finally:
        probed.unlink()
    found = re.search(r'<pre id="moska-probe">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, (f"{page.name}: the probe wrote nothing (rc {done.returncode}); "
                   f"stderr: {done.stderr[-2000:]}")
    result = json.loads(html.unescape(found.group(1)))
    result["stderr"] = done.stderr
    return result


def console_lines_in_log(stderr: str) -> list[str]:
    """Console messages Chromium logged (``--enable-logging``: one 'CONSOLE' line per
    message, whatever its level, uncaught exceptions and refused loads included). The
    reports run no script of their own, so any such line is a problem."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln]


def check_page(browser: str, page: Path, tmp: Path, n_images: int) -> list[dict]:
    """Every check of the module docstring on ``page`` at each of WIDTHS."""
    results = []
    for width in WIDTHS:
        r = probe(browser, page, width, tmp)
        where = f"{page.name} at {width} px"
        assert len(r["images"]) == n_images, f"{where}: {len(r['images'])} images"
        for img in r["images"]:
            assert img["complete"] and img["naturalWidth"] > 0, f"{where}: not loaded: {img}"
            assert img["right"] <= r["viewport"] + 1, f"{where}: image wider than the page {img}"
        assert r["scrollWidth"] <= r["viewport"], (
            f"{where}: page scrolls sideways ({r['scrollWidth']} > {r['viewport']} px): "
            f"{r['overflowing']}")
        assert not r["overflowing"], f"{where}: elements past the right edge: {r['overflowing']}"
        assert not r["errors"], f"{where}: console errors: {r['errors']}"
        assert not console_lines_in_log(r["stderr"]), console_lines_in_log(r["stderr"])
        results.append(r)
    return results


def check_screenshot(browser: str, page: Path, tmp: Path) -> Path:
    """A full-width screenshot of ``page``: a PNG of the window size that is not blank
    (a page that failed to render is one flat colour)."""
    import matplotlib.image as mpimg

    shot = tmp / f"{page.stem}.png"
    done = _chromium(browser, tmp / f"profile-shot-{page.stem}", "--window-size=1280,2400",
                     f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), f"no screenshot of {page.name}: {done.stderr[-2000:]}"
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2400, 1280), pixels.shape
    grey = pixels[..., :3].mean(axis=2)
    assert float(np.std(grey)) > 0.05, f"{page.name}: the screenshot is blank"
    # text and figures: many distinct shades, not a single colour block
    assert np.unique((grey * 255).astype(np.uint8)).size > 32
    return shot


# ----------------------------------------------------------------------------- the reports


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real run folder and a real comparison folder (two runs, one failed variant)."""
    base = tmp_path_factory.mktemp("browser")
    run = run_simulation(ExperimentConfig.model_validate(small_config("browser-run")),
                         base / "run", progress=False)
    cmp_dir = base / "compare"
    runs = []
    for label, over in (("moska", {}), ("prefix-cache", {"system": "prefix_cache",
                                                         "cluster.shared.nodes": 0})):
        cfg = ExperimentConfig.model_validate(small_config(label, **over))
        r = run_simulation(cfg, cmp_dir / "runs" / label, progress=False)
        runs.append({"label": label, "summary": r.summary,
                     "requests_csv": r.out_dir / "requests.csv",
                     "cost_per_million_tokens": 2.0 if label == "moska" else 3.0,
                     "price_per_hour": {"unique": 4.5, "shared": 5.5}})
    failed = cmp_dir / "runs" / "too-small"
    failed.mkdir(parents=True)
    (failed / "error.txt").write_text("ValueError: cluster.shared: each of 1 shared node(s) "
                                      "must hold 64.0 GiB of shared KV\n", encoding="utf-8")
    runs.append({"label": "too-small", "summary": {"system": "moska"}})
    sweep = {"moska": {"axis": "rate", "offered_rate_per_s": [10, 20, 40, 80],
                       "throughput_tokens_per_s": [160, 320, 560, 600],
                       "p99_tpot_ms": [5, 6, 20, 90]}}
    write_compare_report(cmp_dir, runs, sweep)
    return {"run": run.out_dir / "report.html", "compare": cmp_dir / "compare.html",
            "base": base}


def test_run_report_renders_in_chromium(browser, reports, tmp_path):
    page = reports["run"]
    n_images = len(re.findall(r"<img ", page.read_text(encoding="utf-8")))
    assert n_images == 4  # latency CDF, time series, utilization, breakdown
    check_page(browser, page, tmp_path, n_images)
    check_screenshot(browser, page, tmp_path)


def test_compare_report_renders_in_chromium_and_links_each_run(browser, reports, tmp_path):
    page = reports["compare"]
    n_images = len(re.findall(r"<img ", page.read_text(encoding="utf-8")))
    assert n_images == 4  # latency CDFs, load sweep, utilization, breakdown
    results = check_page(browser, page, tmp_path, n_images)
    links = results[0]["links"]
    assert "runs/moska/report.html" in links and "runs/prefix-cache/report.html" in links
    assert "runs/too-small/error.txt" in links
    for href in links:  # every link resolves inside the comparison folder
        target = (page.parent / href).resolve()
        assert target.is_file() and target.is_relative_to(page.parent.resolve()), href
    check_screenshot(browser, page, tmp_path)


def test_probe_catches_what_it_checks(browser, tmp_path):
    """The probe is not vacuous: a page with a broken image, a too-wide block and a
    console error fails each check."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
        "<img src='missing.png' alt='gone'>"
        "<div style='width:3000px'>wide</div>"
        "<script>console.error('boom')</script></body></html>", encoding="utf-8")
    r = probe(browser, bad, 1280, tmp_path)
    assert r["images"][0]["naturalWidth"] == 0
    assert r["scrollWidth"] > r["viewport"] and any(o.startswith("DIV") for o in r["overflowing"])
    assert any("boom" in e for e in r["errors"])
    # (whether Chromium also logs the failed image load as a console error depends on its
    # timing; the broken image is caught above by its natural width)
    assert any("boom" in line for line in console_lines_in_log(r["stderr"]))
