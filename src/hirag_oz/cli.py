"""The `hirag-oz` command line: serve, ingest, search, stats."""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from hirag_oz.config import Settings, load_settings
from hirag_oz.errors import ConfigurationError, HiragError
from hirag_oz.memory.models import NewContext

if TYPE_CHECKING:
    from hirag_oz.factory import Components


def _settings(ctx: click.Context, **server: Any) -> Settings:
    overrides = {"server": {k: v for k, v in server.items() if v is not None}}
    return load_settings(ctx.obj.get("config"), **overrides)


_F = TypeVar("_F", bound=Callable[..., Any])


def _config_option(help_text: str) -> Callable[[_F], _F]:
    return click.option(
        "--config",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=help_text,
    )


@click.group()
@_config_option("TOML config file (default: $HIRAG_CONFIG).")
@click.version_option(package_name="hirag-oz")
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """hirag-oz: context and memory for LLM agents."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


def _data_dir_option(fn: Any) -> Any:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where the embedded store keeps its data (default: ./data).",
    )(fn)


@cli.command()
@_data_dir_option
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8081).")
@_config_option("TOML config file (overrides the global --config).")
@click.pass_context
def serve(
    ctx: click.Context,
    data_dir: Path | None,
    host: str | None,
    port: int | None,
    config: Path | None,
) -> None:
    """Run the HTTP service."""
    if config is not None:
        ctx.obj["config"] = config
    settings = _settings(ctx, data_dir=data_dir, host=host, port=port)
    from hirag_oz.observability.logging import configure_logging

    configure_logging(settings.logging.level, settings.logging.format)
    check_exposure(settings)
    run_server(settings)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Without API keys the service only listens on loopback; anywhere else it refuses."""
    if settings.server.api_keys:
        return
    host = settings.server.host
    if not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve on {host} without API keys: set HIRAG_API_KEYS or "
            "[server] api_keys, or bind to 127.0.0.1"
        )
    logging.getLogger("hirag_oz").warning(
        "no API keys configured: /api/ is open to anyone who can reach %s", host
    )


def run_server(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT; then stop accepting, let in-flight requests finish (up
    to `server.shutdown_timeout_secs`), stop background tasks, close the store, return."""
    import contextlib
    import signal

    import uvicorn

    from hirag_oz.api.app import create_app, server_config

    app = create_app(settings)
    server = uvicorn.Server(server_config(app, settings.server.host, settings.server.port))

    def stop(signum: int, _frame: object) -> None:
        server.should_exit = True

    # uvicorn re-raises the signal after its own graceful shutdown, which makes the process
    # die by SIGTERM; handling it here lets a clean shutdown exit with status 0.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.run()
    if not server.started:
        raise click.ClickException("the service did not start (see the log above)")


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise click.ClickException(f"{path}:{number}: not JSON ({exc.msg})") from None


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_data_dir_option
@click.option("--level", default="ShortTerm", show_default=True, help="Level when a line has none.")
@click.option(
    "--agent-id", default="default", show_default=True, help="Agent when a line has none."
)
@click.option("--batch-size", type=click.IntRange(1, 1000), default=128, show_default=True)
@click.pass_context
def ingest(
    ctx: click.Context,
    file: Path,
    data_dir: Path | None,
    level: str,
    agent_id: str,
    batch_size: int,
) -> None:
    """Store every line of a JSONL FILE: {"text", "level"?, "agent_id"?, "session_id"?,
    "user_id"?, "metadata"?, "timestamp"?}."""
    from rich.progress import Progress

    from hirag_oz.factory import build_memory

    rows = list(_read_jsonl(file))
    items: list[NewContext] = []
    for number, row in rows:
        if not isinstance(row, dict) or "text" not in row:
            raise click.ClickException(f"{file}:{number}: a line needs a 'text' field")
        items.append(
            NewContext(
                text=row["text"],
                level=row.get("level", level),
                agent_id=row.get("agent_id", agent_id),
                session_id=row.get("session_id"),
                user_id=row.get("user_id"),
                metadata=row.get("metadata") or {},
                timestamp=row.get("timestamp"),
            )
        )
    memory = build_memory(_settings(ctx, data_dir=data_dir))
    stored = 0
    try:
        with Progress(transient=False) as progress:
            task = progress.add_task(f"ingesting {file.name}", total=len(items))
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                try:
                    memory.store_many(chunk)
                except HiragError as exc:
                    line = rows[start][0]
                    raise click.ClickException(
                        f"batch starting at line {line}: {exc.message}"
                    ) from None
                stored += len(chunk)
                progress.update(task, advance=len(chunk))
    finally:
        memory.close()
    click.echo(f"stored {stored} contexts")


@cli.command()
@click.argument("query")
@_data_dir_option
@click.option("--max-tokens", type=int, default=1000, show_default=True)
@click.option("--level", "levels", multiple=True, help="Level to search (repeatable).")
@click.option("--agent-id", default="default", show_default=True)
@click.option("--session-id", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.pass_context
def search(
    ctx: click.Context,
    query: str,
    data_dir: Path | None,
    max_tokens: int,
    levels: tuple[str, ...],
    agent_id: str,
    session_id: str | None,
    as_json: bool,
) -> None:
    """Search stored contexts for QUERY within a token budget."""
    from hirag_oz.factory import build_memory

    memory = build_memory(_settings(ctx, data_dir=data_dir))
    try:
        result = memory.search(
            query,
            max_tokens,
            levels=list(levels) or None,
            agent_id=agent_id,
            session_id=session_id,
        )
    finally:
        memory.close()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    for c in result.contexts:
        click.echo(f"{c.relevance_score:.3f}  {c.level.value:<9}  {c.id}  {c.text}")
    click.echo(f"{len(result.contexts)} contexts, {result.total_tokens} tokens")


@cli.command()
@_data_dir_option
@click.pass_context
def stats(ctx: click.Context, data_dir: Path | None) -> None:
    """Counts per level and the models in use."""
    from hirag_oz.factory import build_memory

    memory = build_memory(_settings(ctx, data_dir=data_dir))
    try:
        click.echo(json.dumps(memory.stats(), indent=2))
    finally:
        memory.close()


@cli.group()
def facts() -> None:
    """Add and query provenance-tracked facts."""


def _components(ctx: click.Context, data_dir: Path | None) -> Components:
    from hirag_oz.factory import build_components

    # Index jobs left unfinished by a server are the next server's to resume, not a CLI's.
    return build_components(_settings(ctx, data_dir=data_dir), start_jobs=False)


@facts.command("add")
@click.argument("subject")
@click.argument("predicate")
@click.argument("obj", metavar="OBJECT")
@_data_dir_option
@click.option("--confidence", type=float, required=True)
@click.option("--agent-id", default="default", show_default=True)
@click.option("--source-doc", default=None)
@click.option("--page", type=int, default=None, help="Anchor: page of the source.")
@click.option("--datatype", default=None)
@click.option("--valid-from", default=None, help="ISO 8601 or epoch seconds.")
@click.option("--exclusive", is_flag=True, help="End this subject's other current objects.")
@click.pass_context
def facts_add(
    ctx: click.Context,
    subject: str,
    predicate: str,
    obj: str,
    data_dir: Path | None,
    confidence: float,
    agent_id: str,
    source_doc: str | None,
    page: int | None,
    datatype: str | None,
    valid_from: str | None,
    exclusive: bool,
) -> None:
    """Store the fact SUBJECT PREDICATE OBJECT once; prints its id and whether it was new."""
    from hirag_oz.facts import Anchor, NewFact

    parts = _components(ctx, data_dir)
    try:
        done = parts.facts.insert(
            NewFact(
                subject,
                predicate,
                obj,
                confidence,
                agent_id=agent_id,
                datatype=datatype,
                source_doc=source_doc,
                source_anchor=Anchor(doc_id=source_doc, page=page) if source_doc else Anchor(),
                valid_from=_epoch_or_text(valid_from),
                exclusive=exclusive,
            )
        )
    finally:
        parts.close()
    state = "duplicate" if done.duplicate else "new"
    click.echo(f"{done.fact_id}  {state}" + (f"  closed {len(done.closed)}" if done.closed else ""))


@facts.command("query")
@_data_dir_option
@click.option("--subject", default=None)
@click.option("--predicate", default=None)
@click.option("--object", "obj", default=None)
@click.option("--source-doc", default=None)
@click.option("--min-confidence", type=float, default=None)
@click.option("--agent-id", default="default", show_default=True)
@click.option("--valid-at", default=None, help="ISO 8601 or epoch seconds.")
@click.option("--text", default=None, help="Rank by meaning.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--offset", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@click.pass_context
def facts_query(
    ctx: click.Context,
    data_dir: Path | None,
    subject: str | None,
    predicate: str | None,
    obj: str | None,
    source_doc: str | None,
    min_confidence: float | None,
    agent_id: str,
    valid_at: str | None,
    text: str | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """Facts matching every given filter."""
    import dataclasses

    from hirag_oz.facts import FactQuery

    parts = _components(ctx, data_dir)
    try:
        page = parts.facts.query(
            FactQuery(
                subject=subject,
                predicate=predicate,
                object=obj,
                source_doc=source_doc,
                min_confidence=min_confidence,
                agent_id=agent_id,
                valid_at=_epoch_or_text(valid_at),
                text=text,
                limit=limit,
                offset=offset,
            )
        )
    finally:
        parts.close()
    if as_json:
        rows = [dataclasses.asdict(f) for f in page.facts]
        click.echo(json.dumps({"facts": rows, "total": page.total}, indent=2, ensure_ascii=False))
        return
    for f in page.facts:
        click.echo(f"{f.confidence:.2f}  {f.subject} | {f.predicate} | {f.object}  {f.id}")
    click.echo(f"{len(page.facts)} of {page.total} facts")


@cli.group()
def vision() -> None:
    """Index documents into OCR regions, search them, decode them at a fidelity."""


@vision.command("index")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_data_dir_option
@click.option("--agent-id", default="default", show_default=True)
@click.option("--metadata", default=None, help="A JSON object kept on every region.")
@click.option("--force", is_flag=True, help="Index again content already indexed.")
@click.pass_context
def vision_index(
    ctx: click.Context,
    path: Path,
    data_dir: Path | None,
    agent_id: str,
    metadata: str | None,
    force: bool,
) -> None:
    """Index the PDF or image at PATH now, with a progress bar; prints the job."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    try:
        meta = json.loads(metadata) if metadata else None
    except ValueError:
        raise click.BadParameter("must be a JSON object", param_hint="--metadata") from None
    if meta is not None and not isinstance(meta, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--metadata")
    parts = _components(ctx, data_dir)
    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task(f"indexing {path.name}", total=None)

            def progress(job: Any) -> None:
                bar.update(task, total=job.pages_total, completed=job.pages_done)

            job = parts.vision.index_bytes(
                path.read_bytes(),
                path.name,
                agent_id=agent_id,
                metadata=meta,
                force_reindex=force,
                progress=progress,
            )
    finally:
        parts.close()
    click.echo(
        f"{job.job_id}  {job.status}  doc {job.doc_id}  pages {job.pages_done}/{job.pages_total}"
        f"  regions {job.regions}" + ("  (already indexed)" if job.reused else "")
    )
    for error in job.page_errors:
        click.echo(f"  page {error['page']}: {error['message']}", err=True)
    if job.status == "failed" and job.error is not None:
        click.echo(f"error: {job.error['message']}", err=True)
        sys.exit(1)


@vision.command("search")
@click.argument("query")
@_data_dir_option
@click.option("--top-k", type=click.IntRange(1, 50), default=12, show_default=True)
@click.option("--agent-id", default="default", show_default=True)
@click.option("--doc-id", default=None)
@click.option(
    "--type", "types", multiple=True, type=click.Choice(["text", "table", "figure", "code"])
)
@click.option("--json", "as_json", is_flag=True, help="Print the regions as JSON.")
@click.pass_context
def vision_search(
    ctx: click.Context,
    query: str,
    data_dir: Path | None,
    top_k: int,
    agent_id: str,
    doc_id: str | None,
    types: tuple[str, ...],
    as_json: bool,
) -> None:
    """Regions most relevant to QUERY."""
    from hirag_oz.vision import RegionFilters

    parts = _components(ctx, data_dir)
    try:
        hits = parts.vision.search(
            query,
            top_k,
            agent_id=agent_id,
            filters=RegionFilters(doc_id=doc_id, types=types),  # type: ignore[arg-type]
        )
    finally:
        parts.close()
    if as_json:
        rows = [
            {**h.region.to_dict(), "score": h.score, "why_relevant": h.why_relevant} for h in hits
        ]
        click.echo(json.dumps({"regions": rows}, indent=2, ensure_ascii=False))
        return
    for h in hits:
        r = h.region
        b = r.bbox
        click.echo(f"{h.score:.3f}  {r.type:<6} p{r.page} [{b.x},{b.y} {b.w}x{b.h}]  {r.region_id}")
        click.echo(f"       {h.why_relevant}")


@vision.command("decode")
@click.argument("region_ids", nargs=-1, required=True)
@_data_dir_option
@click.option(
    "--fidelity",
    type=click.Choice(["1x", "5x", "10x", "20x"]),
    default=None,
    help="Default: vision.default_fidelity.",
)
@click.option("--agent-id", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def vision_decode(
    ctx: click.Context,
    region_ids: tuple[str, ...],
    data_dir: Path | None,
    fidelity: str | None,
    agent_id: str,
    as_json: bool,
) -> None:
    """The text of each of REGION_IDS at a fidelity."""
    import dataclasses

    parts = _components(ctx, data_dir)
    try:
        results = parts.vision.decode(list(region_ids), fidelity, agent_id=agent_id)  # type: ignore[arg-type]
    finally:
        parts.close()
    if as_json:
        rows = [dataclasses.asdict(r) for r in results]
        click.echo(json.dumps({"results": rows}, indent=2, ensure_ascii=False))
        return
    for r in results:
        click.echo(
            f"# {r.region_id}  {r.fidelity}  confidence {r.confidence:.2f}  {r.tokens} tokens"
        )
        click.echo(r.text)


@cli.command("mcp")
@_data_dir_option
@click.option(
    "--transport",
    type=click.Choice(["stdio", "http"]),
    default="stdio",
    show_default=True,
    help="stdio: an MCP client starts this command; http: streamable HTTP at /mcp.",
)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Bind address for http (loopback)."
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8765, show_default=True, help="Port for http."
)
@_config_option("TOML config file (overrides the global --config).")
@click.pass_context
def mcp_command(
    ctx: click.Context,
    data_dir: Path | None,
    transport: str,
    host: str,
    port: int,
    config: Path | None,
) -> None:
    """Serve memory, prompt building, facts and documents as MCP tools. Logs go to stderr;
    on stdio, stdout carries only the protocol."""
    if config is not None:
        ctx.obj["config"] = config
    if transport == "http" and not is_loopback(host):
        # The MCP endpoint has no authentication (and index_document reads local files).
        raise ConfigurationError(
            f"refusing to serve MCP on {host}: it has no authentication; bind to 127.0.0.1"
        )
    from hirag_oz.mcp_server import serve_mcp

    serve_mcp(
        _settings(ctx, data_dir=data_dir),
        "http" if transport == "http" else "stdio",
        host,
        port,
    )


def _epoch_or_text(value: str | None) -> float | str | None:
    """Epoch seconds as a number, anything else (ISO 8601) for the store to check."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def main() -> None:
    try:
        cli(standalone_mode=True)
    except HiragError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
