"""Export the executed summary notebook: self-contained HTML (nbconvert) and PDF (headless Chromium).

The HTML uses nbconvert's lab template without its CDN scripts (require.js, MathJax, mermaid), so
it opens offline; :func:`external_references` lists anything that would still be fetched. The PDF
is Chromium printing that HTML (Debian package ``chromium``; ``make report-deps`` installs it).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import jinja2

from vadbench.errors import ReportError

log = logging.getLogger(__name__)

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ENV = "VADBENCH_CHROMIUM"  # a Chromium binary to use instead of the one on PATH
INSTALL_HINT = "install Chromium (Debian: `apt-get install chromium`, or `make report-deps`)"
TEMPLATE_NAME = "vadbench_summary.html.j2"
TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block data_png scoped %}
{%- set alt = output | get_metadata('alt', 'image/png') -%}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
{%- if alt %} alt="{{ alt | escape_html }}"{% endif %}>
</div>
{%- endblock data_png %}
{% block extra_css %}
<style type="text/css">
.jp-RenderedHTMLCommon table { font-size: 11px; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { padding: 0.2em 0.4em; }
.jp-RenderedHTMLCommon table.vadbench-table td { padding: 0.25em 0.5em; min-width: 4em; }
.jp-RenderedHTMLCommon table.vadbench-table th { padding: 0.25em 0.5em; max-width: 14em; }
.jp-OutputArea-output img { max-width: 100%; }
table.vadbench-grid td { vertical-align: top; text-align: center; }
table.vadbench-grid img { width: 100%; max-width: 520px; }
@page { size: A4 landscape; margin: 10mm; }
@media print {
  .jp-OutputArea-output, .jp-RenderedHTMLCommon { overflow: visible !important; }
  .jp-RenderedHTMLCommon table, .jp-RenderedHTMLCommon th, .jp-RenderedHTMLCommon td { font-size: 8px !important; }
  .jp-RenderedHTMLCommon th { overflow-wrap: anywhere; white-space: normal; }
  .jp-RenderedHTMLCommon td { white-space: nowrap; }
  .jp-Cell { break-inside: auto; }
  tr, img { break-inside: avoid; }
  .jp-OutputArea-output img { max-height: 180mm; width: auto; max-width: 100%; object-fit: contain; }
  table.vadbench-grid { width: 100%; }
  table.vadbench-grid img { max-height: 85mm; width: auto; }
}
</style>
{% endblock extra_css %}
"""
_EXTERNAL = re.compile(
    r"""<(?:script|img|iframe|source|embed)\b[^>]*\bsrc\s*=\s*["']?(?:https?:)?//[^"'\s>]+"""
    r"""|<link\b[^>]*\bhref\s*=\s*["']?(?:https?:)?//[^"'\s>]+"""
    r"""|@import\s+(?:url\()?["']?(?:https?:)?//[^"')\s]+"""
    r"""|\bimport\s*(?:[^"';]*\bfrom\s*)?["'](?:https?:)?//[^"']+""",
    re.IGNORECASE,
)


def external_references(html: str) -> list[str]:
    """Scripts, stylesheets, images and module imports the page would fetch from the network."""
    return [m.group(0) for m in _EXTERNAL.finditer(html)]


def export_html(notebook: Path | str, html_path: Path | str) -> Path:
    """Executed notebook -> HTML with outputs only, figures embedded, no network fetches."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="lab", template_file=TEMPLATE_NAME,
        extra_loaders=[jinja2.DictLoader({TEMPLATE_NAME: TEMPLATE})],
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4))
    external = external_references(body)
    if external:
        raise ReportError(f"the HTML export still fetches from the network: {external[:3]}")
    html_path = Path(html_path)
    html_path.write_text(body, encoding="utf-8")
    return html_path


def find_chromium() -> str | None:
    """Path of a headless-capable Chromium: $VADBENCH_CHROMIUM, else the first of CHROMIUM_NAMES
    on PATH; None when there is none."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return shutil.which(configured)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def short_temp_dir() -> str:
    """A temporary folder with a short path: Chromium's profile and its singleton socket live there, and a Unix
    socket path over ~107 bytes makes Chromium abort (a long $TMPDIR, e.g. a test's or a CI job's)."""
    default = tempfile.gettempdir()
    if len(default) <= 40 or not os.access("/tmp", os.W_OK):
        return default
    return "/tmp"


def run_chromium(args: list[str], timeout_s: int) -> subprocess.CompletedProcess:
    """Run headless Chromium with a throw-away profile and no network use of its own."""
    binary = find_chromium()
    if binary is None:
        raise ReportError(f"Chromium not found: {INSTALL_HINT}")
    short = short_temp_dir()
    with tempfile.TemporaryDirectory(prefix="vb-chromium-", dir=short) as profile:
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, "TMPDIR": short})
    if done.returncode != 0:
        raise ReportError(f"Chromium failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return done


def print_pdf(html: Path | str, pdf: Path | str, timeout_s: int = 180) -> Path:
    """Print the HTML to PDF with headless Chromium (A4 landscape, no header/footer)."""
    html, pdf = Path(html).resolve(), Path(pdf).resolve()
    pdf.unlink(missing_ok=True)
    run_chromium(["--no-pdf-header-footer", "--virtual-time-budget=10000", f"--print-to-pdf={pdf}", html.as_uri()],
              timeout_s)
    if not pdf.is_file() or pdf.stat().st_size == 0:
        raise ReportError(f"Chromium wrote no PDF at {pdf}")
    return pdf


def pdf_pages(pdf: Path | str) -> int:
    """Number of pages of a PDF."""
    from pypdf import PdfReader

    return len(PdfReader(str(pdf)).pages)
