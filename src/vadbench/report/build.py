"""Build the report: execute notebooks/summary.ipynb on the records with papermill, export HTML and PDF."""
from __future__ import annotations

import logging
from pathlib import Path

from vadbench import quiet
from vadbench.paths import kernel_environ, notebooks_dir
from vadbench.report import export, references
from vadbench.report.tables import TABLE_FILES, load_frame

log = logging.getLogger(__name__)

FIGURE_FILES = ("differences", "metrics", "speed", "deltas")  # out_dir/figures/<name>.png, saved by the notebook
NOTEBOOK_NAME = "summary.ipynb"


def default_notebook() -> Path:
    """The project's notebooks/summary.ipynb (see vadbench.paths.notebooks_dir)."""
    path = notebooks_dir() / NOTEBOOK_NAME
    if not path.is_file():
        raise FileNotFoundError(f"summary notebook not found at {path}; pass notebook=PATH or set $VADBENCH_NOTEBOOKS")
    return path


def build_report(runs_dir: Path | str, out_dir: Path | str, notebook: Path | str | None = None,
                 timeout_s: int = 600, pdf: bool = True, baseline: str | None = None) -> dict[str, Path]:
    """Execute the summary notebook with papermill; export it to self-contained HTML and, with
    Chromium present, to PDF.

    Writes ``out_dir/summary.ipynb`` (executed), ``out_dir/summary.html`` (outputs only, figures
    embedded, nothing fetched from the network), ``out_dir/summary.pdf`` (Chromium's print of
    the HTML; skipped with a warning when Chromium is absent) and ``out_dir/tables/*.csv``.
    Reference numbers come from the files the records' params files name (``references:``),
    resolved against the current directory. Raises ReportError when ``runs_dir`` holds no record.
    """
    runs_dir = Path(runs_dir).resolve()
    out_dir = Path(out_dir).resolve()
    frame = load_frame(runs_dir)  # fails early and clearly when there is nothing to report
    reference_paths = [str(p.resolve()) for p in references.reference_files(frame)]

    import papermill

    notebook = Path(notebook) if notebook is not None else default_notebook()
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / NOTEBOOK_NAME
    log.info("report on %d records from %s -> %s", len(frame), runs_dir, out_dir)
    with kernel_environ():
        papermill.execute_notebook(
            str(notebook), str(executed),
            parameters={"runs_dir": str(runs_dir), "out_dir": str(out_dir), "reference_files": reference_paths,
                        "baseline_experiment": baseline or ""},
            kernel_name="python3", cwd=str(out_dir), progress_bar=False, log_output=False,
            execution_timeout=timeout_s, extra_arguments=quiet.kernel_arguments(),
        )
    html = export.export_html(executed, out_dir / "summary.html")
    paths = {"html": html, "notebook": executed}
    if pdf:
        paths.update(_write_pdf(html, out_dir / "summary.pdf"))
    for name, filename in TABLE_FILES.items():
        path = out_dir / "tables" / filename
        if not path.is_file():
            raise FileNotFoundError(f"the summary notebook did not write {path}")
        paths[name] = path
    for name in FIGURE_FILES:
        path = out_dir / "figures" / f"{name}.png"
        if path.is_file():
            paths[f"{name}_figure"] = path
    log.info("wrote %s", html)
    return paths


def _write_pdf(html: Path, pdf: Path) -> dict[str, Path]:
    """Print the HTML to PDF when Chromium is there; otherwise say so and write none."""
    if export.find_chromium() is None:
        pdf.unlink(missing_ok=True)  # never leave a stale PDF beside a new HTML
        log.warning("no PDF: Chromium not found; %s (the HTML report is complete)", export.INSTALL_HINT)
        return {}
    export.print_pdf(html, pdf)
    log.info("wrote %s (%d pages)", pdf, export.pdf_pages(pdf))
    return {"pdf": pdf}
