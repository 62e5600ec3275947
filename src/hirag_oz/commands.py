"""The CLI commands of the catalogued operations, generated from their request models.

`hirag-oz search-contexts "which theme?" --max-tokens 500 --json` runs `search_contexts` on
the data directory, in-process, as `hirag_oz.open(...).search_contexts(...)` would. Each
field of the request model is an option named after it (the fields the catalogue lists as
`arguments` are positional); objects and lists of objects are given as JSON. `--json`
prints exactly the HTTP response body; without it, a line per result where that reads
better, else the same JSON indented.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from hirag_oz.errors import ValidationError
from hirag_oz_client import models as m
from hirag_oz_client._client import build_request
from hirag_oz_client.catalogue import OPERATIONS, Operation

Kind = Literal["flag", "json", "many", "choice", "text"]

# What a command line means by default where the wire default does not fit it: a command
# indexes the document before it returns (it would otherwise wait for it at exit anyway).
CLI_DEFAULTS: dict[str, dict[str, Any]] = {"index_document": {"wait": True}}
# Fields that name a document: on a command line a relative path is the working directory's.
LOCAL_PATHS = frozenset({"doc_url"})


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """A bar on stderr, gone when done; yields `update(advance=, total=, completed=)`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda **change: bar.update(task, **change)


def _kind(annotation: Any) -> tuple[Kind, tuple[str, ...]]:
    """How a field is typed on the command line, and its choices when it has a few."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if len(args) == 1:
            return _kind(args[0])
        return ("json", ()) if any(_is_structured(a) for a in args) else ("text", ())
    if annotation is bool:
        return "flag", ()
    if origin is Literal:
        return "choice", tuple(str(a) for a in typing.get_args(annotation))
    if origin is list:
        inner = typing.get_args(annotation)[0]
        kind, _ = _kind(inner)
        return ("many", ()) if kind in ("text", "choice") else ("json", ())
    if _is_structured(annotation):
        return "json", ()
    return "text", ()


def _is_structured(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (dict, list) or annotation in (dict, list, Any):
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _list_item(annotation: Any) -> Any:
    """X of a `list[X]`, alone or in a union."""
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0]
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is list:
            return typing.get_args(arg)[0]
    return str


def _param(name: str, info: FieldInfo, positional: bool, default: Any) -> click.Parameter:
    kind, choices = _kind(info.annotation)
    flag = "--" + name.replace("_", "-")
    help_text = info.description or ""
    if kind == "json":
        help_text = f"{help_text} (JSON)".strip()
    if positional:
        nargs = -1 if kind == "many" else 1
        return click.Argument([name], nargs=nargs, required=info.is_required())
    if kind == "flag":
        return click.Option(
            [f"{flag}/--no-{flag[2:]}", name],
            default=bool(default) if default is not None else False,
            show_default=True,
            help=help_text,
        )
    if kind == "many":
        _, options = _kind(_list_item(info.annotation))
        return click.Option(
            [flag, name],
            multiple=True,
            type=click.Choice(options) if options else None,
            help=f"{help_text} (repeatable)".strip(),
        )
    return click.Option(
        [flag, name],
        type=click.Choice(choices) if kind == "choice" else None,
        required=info.is_required(),
        default=None,
        help=help_text,
    )


def _value(name: str, info: FieldInfo, given: Any) -> Any:
    """The command line's value of a field as the request model reads it; None: not given."""
    kind, _ = _kind(info.annotation)
    if name in LOCAL_PATHS and isinstance(given, str) and "://" not in given:
        return str(Path(given).expanduser().resolve())
    if kind == "many":
        return list(given) if given else None
    if kind == "json" and given is not None:
        try:
            return json.loads(given)
        except ValueError:
            raise ValidationError(
                f"--{name.replace('_', '-')} must be JSON", {"field": name}
            ) from None
    return given


def _command(op: Operation[Any, Any, Any], run: Runner) -> click.Command:
    fields = op.request.model_fields
    defaults = CLI_DEFAULTS.get(op.name, {})
    params = [
        _param(name, info, name in op.arguments, defaults.get(name, info.default))
        for name, info in sorted(fields.items(), key=lambda kv: _order(op, kv[0]))
    ]
    params.append(
        click.Option(
            ["--data-dir"],
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Where the embedded store keeps its data (default: ./data).",
        )
    )
    params.append(
        click.Option(["--json", "as_json"], is_flag=True, help="Print the HTTP response body.")
    )

    @click.pass_context
    def callback(ctx: click.Context, /, data_dir: Path | None, as_json: bool, **given: Any) -> None:
        values = {
            name: value
            for name, info in fields.items()
            if (value := _value(name, info, given.get(name))) is not None
        }
        result = run(ctx, data_dir, op, build_request(op, **values))
        if as_json:
            click.echo(result.model_dump_json())
            return
        show = FORMATS.get(op.name)
        click.echo(show(result) if show else result.model_dump_json(indent=2))

    return click.Command(op.name.replace("_", "-"), callback=callback, params=params, help=op.doc)


def _order(op: Operation[Any, Any, Any], name: str) -> tuple[int, int]:
    """Positional arguments first, in the catalogue's order; options after."""
    if name in op.arguments:
        return 0, op.arguments.index(name)
    return 1, 0


Runner = Callable[[click.Context, Path | None, Operation[Any, Any, Any], BaseModel], BaseModel]


def add_operation_commands(group: click.Group, run: Runner) -> None:
    """A command under `group` for every catalogued operation, run by `run`."""
    for op in OPERATIONS:
        group.add_command(_command(op, run))


# ---- the human formats -------------------------------------------------------------------


def _search_contexts(result: m.SearchContextsResponse) -> str:
    lines = [
        f"{c.relevance_score or 0.0:.3f}  {c.level:<9}  {c.id}  {c.text}" for c in result.contexts
    ]
    lines.append(f"{len(result.contexts)} contexts, {result.total_tokens} tokens")
    return "\n".join(lines)


def _add_fact(result: m.AddFactResponse) -> str:
    state = "duplicate" if result.duplicate else "new"
    closed = f"  closed {len(result.closed)}" if result.closed else ""
    return f"{result.fact_id}  {state}{closed}"


def _query_facts(result: m.QueryFactsResponse) -> str:
    lines = [
        f"{f.confidence:.2f}  {f.subject} | {f.predicate} | {f.object}  {f.id}"
        for f in result.facts
    ]
    lines.append(f"{len(result.facts)} of {result.total} facts")
    return "\n".join(lines)


def _job(job: m.JobOut) -> str:
    pages = f"{job.progress.pages_done}/{job.progress.pages_total}"
    line = f"{job.job_id}  {job.status}  doc {job.doc_id}  pages {pages}  regions {job.regions}"
    lines = [line + ("  (already indexed)" if job.reused else "")]
    lines += [f"  page {e.get('page')}: {e.get('message')}" for e in job.page_errors]
    if job.error is not None:
        lines.append(f"error: {job.error.message}")
    return "\n".join(lines)


def _search_regions(result: m.SearchRegionsResponse) -> str:
    lines = []
    for r in result.regions:
        b = r.bbox
        lines.append(
            f"{r.score:.3f}  {r.type:<6} p{r.page} [{b.x},{b.y} {b.w}x{b.h}]  {r.region_id}"
        )
        lines.append(f"       {r.why_relevant}")
    return "\n".join(lines)


def _decode_regions(result: m.DecodeRegionsResponse) -> str:
    lines = []
    for r in result.results:
        lines.append(
            f"# {r.region_id}  {r.fidelity}  confidence {r.confidence:.2f}  {r.tokens} tokens"
        )
        lines.append(r.text)
    return "\n".join(lines)


FORMATS: dict[str, Callable[[Any], str]] = {
    "search_contexts": _search_contexts,
    "add_fact": _add_fact,
    "query_facts": _query_facts,
    "index_document": _job,
    "get_job": _job,
    "search_regions": _search_regions,
    "decode_regions": _decode_regions,
}
