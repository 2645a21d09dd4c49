"""The report: tables and figures from run records, the summary notebook, HTML/PDF export. Never imports torch."""
