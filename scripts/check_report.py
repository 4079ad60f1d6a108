"""Check that a dials.factored_integrate HTML report renders: every plot drawn, no JS error.

    .venv/bin/python scripts/check_report.py dials.factored_integrate.html [--screenshot p.png]

Opens the page in headless Chromium (``--chromium``, default ``/usr/bin/chromium``),
lets its scripts run, and reads back the rendered DOM: each plot ``<div>`` of the page
must have become a plotly graph with an SVG and at least one drawn trace, and the browser
console must show no uncaught JavaScript error.  With ``--screenshot`` the page is also
saved as a PNG, which must not be blank.  Exit 0 when every plot rendered, 1 otherwise
(the failing plots are named).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
#: Milliseconds of page time the browser gives the scripts before the DOM is read.
VIRTUAL_TIME_MS = 20000


def _chromium(chromium: str, page: Path, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="check_report_") as profile:
        return subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             f"--virtual-time-budget={VIRTUAL_TIME_MS}", *args, page.resolve().as_uri()],
            capture_output=True, text=True, timeout=180)


def plot_ids(page_html: str) -> list[str]:
    """The ids of the plot containers the report writes."""
    return re.findall(r'<div id="([^"]+)" class="plot"></div>', page_html)


def rendered_plots(dom: str, ids: list[str]) -> dict[str, bool]:
    """Per plot id: did plotly draw it (an SVG with at least one trace)?"""
    starts = {i: dom.find(f'<div id="{i}" class="plot js-plotly-plot"') for i in ids}
    edges = sorted(s for s in starts.values() if s >= 0) + [len(dom)]
    drawn = {}
    for i, s in starts.items():
        if s < 0:
            drawn[i] = False
            continue
        part = dom[s:edges[edges.index(s) + 1]]
        drawn[i] = "main-svg" in part and 'class="trace' in part
    return drawn


def js_errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "CONSOLE" in ln and "Uncaught" in ln]


def blank(png: Path) -> bool:
    from PIL import Image

    with Image.open(png) as im:
        lo, hi = im.convert("L").getextrema()
    return lo == hi


def check(page: Path, chromium: str = CHROMIUM, screenshot: Path | None = None) -> list[str]:
    """The problems found (empty when every plot rendered)."""
    ids = plot_ids(page.read_text(encoding="utf-8"))
    if not ids:
        return [f"{page} has no plot containers"]
    run = _chromium(chromium, page, "--dump-dom")
    if run.returncode != 0:
        return [f"chromium failed ({run.returncode}): {run.stderr.strip()[-500:]}"]
    problems = [f"plot {i!r} was not drawn" for i, ok in
                rendered_plots(run.stdout, ids).items() if not ok]
    problems += [f"JavaScript error: {e}" for e in js_errors(run.stderr)]
    if screenshot is not None:
        _chromium(chromium, page, f"--screenshot={screenshot.resolve()}",
                  "--window-size=1280,3600", "--hide-scrollbars")
        if not screenshot.is_file() or blank(screenshot):
            problems.append(f"the screenshot {screenshot} is missing or blank")
    if not problems:
        print(f"{page}: {len(ids)} plots rendered ({', '.join(ids)})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args(argv)
    problems = check(args.page, args.chromium, args.screenshot)
    for p in problems:
        print(f"{args.page}: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
