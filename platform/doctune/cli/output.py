"""What the `doctune` command shows: results on stdout, errors and progress on stderr.

Every command module prints through here. ``doctune.cli`` sets the format from
``-o/--output`` (JSON for scripts by default, ``table`` for people) and builds its
root group from :class:`OneLineErrors`, so any :class:`DoctuneError` a command
raises ends as one line, ``error [code] (field: f): message``, and exit status 2.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn, Sequence

import typer
from typer.core import TyperGroup

from doctune.errors import DoctuneError

__all__ = [
    "FORMATS", "OneLineErrors", "bytes_bar", "count_bar", "error_line", "fail", "set_format", "show",
    "steps_bar", "wants_table",
]

FORMATS = ("json", "table")
_state = {"format": "json"}


def set_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise DoctuneError(f"--output must be json or table; got {fmt!r}", "invalid_request", field="output")
    _state["format"] = fmt


def wants_table() -> bool:
    return _state["format"] == "table"


def show(obj: Any, columns: Sequence[str] = ()) -> None:
    """JSON by default; with ``-o table`` a list of records renders as a table of
    ``columns`` (a dotted column such as ``progress.step`` reaches into nested fields)."""
    if wants_table() and isinstance(obj, list) and columns:
        _print_table(obj, columns)
        return
    typer.echo(json.dumps(obj, indent=2, default=str, ensure_ascii=False))


def _print_table(rows: list[Any], columns: Sequence[str]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    cells = [[_cell(_dig(row, c)) for c in columns] for row in rows]
    table = Table(*columns)
    for row in cells:
        table.add_row(*(Text(c) for c in row))  # Text: a '[' in a value is not rich markup
    if sys.stdout.isatty():
        console = Console()
    else:  # piped: as wide as the widest row, so no id is ever cut short or wrapped
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        console = Console(width=max(80, sum(widths) + 3 * len(columns) + 1))
    console.print(table)


def _dig(row: Any, path: str) -> Any:
    for part in path.split("."):
        row = row.get(part) if isinstance(row, dict) else None
    return row


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


# ------------------------------------------------------------------- errors
def error_line(exc: DoctuneError) -> str:
    where = f" (field: {exc.field})" if exc.field else ""
    return f"error [{exc.code}]{where}: {' '.join(str(exc.message).splitlines())}"


def fail(exc: DoctuneError) -> NoReturn:
    """Print ``exc`` as one line on stderr and exit 2."""
    typer.secho(error_line(exc), fg="red", err=True)
    raise typer.Exit(2)


class OneLineErrors(TyperGroup):
    """The root group: a DoctuneError from any command (or a transport error reaching
    the API) becomes one line on stderr and exit status 2, never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        import httpx

        try:
            return super().invoke(ctx)
        except DoctuneError as exc:
            fail(exc)
        except httpx.TransportError as exc:  # the API, or a presigned URL, or an endpoint
            try:
                where = f"{exc.request.url.scheme}://{exc.request.url.netloc.decode()}"
            except RuntimeError:  # raised before its request was made
                where = "the doctune API"
            fail(DoctuneError(f"cannot reach {where}: {str(exc) or type(exc).__name__}. Is it up? `doctune status` "
                              "checks the local stack; DOCTUNE_API_URL names another API", "unavailable"))


# ------------------------------------------------------------------- progress
def bytes_bar(total: int, desc: str):
    """A bar on stderr counting bytes (uploads, downloads)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=desc)


def steps_bar(total: int):
    """A training bar: step n of total, elapsed < remaining, then the postfix (phase, loss, dev metric)."""
    from tqdm import tqdm

    return tqdm(total=total, desc="training", unit="step", dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")


def count_bar(desc: str, unit: str):
    """A bar without a total (trials of a sweep finished so far)."""
    from tqdm import tqdm

    return tqdm(desc=desc, unit=unit)
