"""`sgproject report`: re-render the forensic reports of a detection run from its results.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sgproject.app import app, err, fail, handle_errors, out


@app.command(rich_help_panel="Forensics")
@handle_errors
def report(
    results: Path = typer.Argument(..., help="results.jsonl from `sgproject detect` (run.json beside it is read too)."),
    formats: str = typer.Option("html,json,csv", "--format", "-f", help="Comma-separated: html, json, csv."),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Folder for the reports (default: the results file's folder)."
    ),
) -> None:
    """Re-render report.html, report.json and report.csv from a results file (e.g. after a resumed or merged run).

    Examples:

      sgproject report out/detect/results.jsonl

      sgproject report out/detect/results.jsonl --format html --out shared/
    """
    from detectors.report import FORMATS, render_from_results, summarize  # local: keeps --help fast
    from detectors.results import read_results

    wanted = [f.strip().lower() for f in formats.split(",") if f.strip()]
    bad = [f for f in wanted if f not in FORMATS]
    if bad or not wanted:
        fail(f"--format: unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(FORMATS)}")
    written = render_from_results(results, formats=tuple(dict.fromkeys(wanted)), out_dir=out_dir)
    err.print(summarize(read_results(results), {})["conclusion"], highlight=False)
    for path in written.values():
        out.print(str(path), highlight=False)
