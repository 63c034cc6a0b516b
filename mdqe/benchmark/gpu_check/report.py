"""The GPU check's table: every row of `TABLE`, with the reason in each row a failed step did not give."""

from __future__ import annotations

from typing import NamedTuple

from .steps import TABLE, Rows

__all__ = ["StepResult", "render_table"]


class StepResult(NamedTuple):
    """A step's rows (those it finished, also when it failed), '' or why it failed, and the wall seconds
    of its process (0 where none ran)."""

    rows: Rows
    error: str
    seconds: float = 0.0


def render_table(results: dict[str, StepResult], dry_run: bool) -> str:
    """Markdown table `| step | item | value |` of every row of TABLE, in its order: a row its step did not
    give says "FAILED: <the step's error>" ("missing" if the step ended without an error)."""
    title = "GPU check (dry run: CPU, tiny sizes; no figure is a GPU figure)" if dry_run else "GPU check"
    lines = [f"### {title}", "", "| step | item | value |", "| --- | --- | --- |"]
    for step, label in TABLE:
        result = results.get(step, StepResult([], "not run"))
        value = dict(result.rows).get(label, f"FAILED: {result.error}" if result.error else "missing")
        value = " ".join(value.split()).replace("|", "/")  # one table cell: no newlines, no pipes
        lines.append(f"| {step} | {label} | {value} |")
    return "\n".join(lines) + "\n"
