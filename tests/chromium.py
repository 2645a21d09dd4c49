"""Headless Chromium checks of a rendered report page (test helpers): screenshot, DOM, what rendered."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from vadbench.errors import ReportError
from vadbench.report import export


def screenshot(html: Path | str, png: Path | str, width: int = 1400, height: int = 1800,
               timeout_s: int = 120) -> Path:
    """A PNG of the top ``width`` × ``height`` pixels of the page as Chromium renders it."""
    html, png = Path(html).resolve(), Path(png).resolve()
    png.unlink(missing_ok=True)
    export.run_chromium([f"--window-size={width},{height}", "--virtual-time-budget=10000", f"--screenshot={png}",
               html.as_uri()], timeout_s)
    if not png.is_file():
        raise ReportError(f"Chromium wrote no screenshot at {png}")
    return png


def rendered_dom(html: Path | str, timeout_s: int = 120) -> str:
    """The page's DOM after Chromium loaded it and ran its scripts (``--dump-dom``)."""
    done = export.run_chromium(["--virtual-time-budget=10000", "--dump-dom", Path(html).resolve().as_uri()], timeout_s)
    return done.stdout


_PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((i) => !i.complete || i.naturalWidth === 0);
  document.body.setAttribute("data-vadbench-images", images.length);
  document.body.setAttribute("data-vadbench-broken", broken.length);
  document.body.setAttribute("data-vadbench-tables", document.querySelectorAll("table").length);
  document.body.setAttribute("data-vadbench-height", document.body.scrollHeight);
});
</script>"""


def check_rendered(html: Path | str, timeout_s: int = 120) -> dict[str, int]:
    """Load a copy of the page in headless Chromium and count what rendered: ``images``,
    ``broken`` (images that failed to load or decode), ``tables`` and the page ``height`` (px)."""
    html = Path(html).resolve()
    with tempfile.TemporaryDirectory(prefix="vadbench-check-") as tmp:
        probe = Path(tmp) / html.name
        probe.write_text(html.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>", 1), encoding="utf-8")
        dom = rendered_dom(probe, timeout_s)
    found = dict(re.findall(r'data-vadbench-(\w+)="(\d+)"', dom))
    if set(found) != {"images", "broken", "tables", "height"}:
        raise ReportError(f"Chromium did not finish loading {html} (no load event seen)")
    return {key: int(value) for key, value in found.items()}
