"""The `hirag-oz` command line: `serve` (HTTP), `mcp`, `ingest`, `stats`, and a command for
every catalogued operation (`hirag-oz store-context`, `search-contexts`, ...; see
`hirag_oz.commands`)."""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import BaseModel

from hirag_oz.archive.commands import add_archive_commands
from hirag_oz.commands import add_operation_commands, progress_bar
from hirag_oz.config import Settings, load_settings
from hirag_oz.errors import ConfigurationError, HiragError
from hirag_oz.key_commands import add_key_commands
from hirag_oz.memory.models import NewContext
from hirag_oz_client.catalogue import Operation


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
    from hirag_oz.keys import key_store

    if key_store(settings).configured():
        return
    host = settings.server.host
    if not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve on {host} without API keys: make one (hirag-oz keys create), "
            "set HIRAG_API_KEYS or [server] api_keys, or bind to 127.0.0.1"
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

    from hirag_oz.service import Hirag

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
    hirag = Hirag(_settings(ctx, data_dir=data_dir))
    memory = hirag.contexts
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
        hirag.close()
    click.echo(f"stored {stored} contexts")


@cli.command()
@_data_dir_option
@click.pass_context
def stats(ctx: click.Context, data_dir: Path | None) -> None:
    """Counts per level and the models in use."""
    from hirag_oz.service import Hirag

    with Hirag(_settings(ctx, data_dir=data_dir)) as hirag:
        click.echo(json.dumps(hirag.contexts.stats(), indent=2))


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
    settings = _settings(ctx, data_dir=data_dir)
    if transport == "http" and not is_loopback(host):
        from hirag_oz.keys import key_store

        if not key_store(settings).configured():
            # Without keys the endpoint has no authentication (and index_document reads
            # local files).
            raise ConfigurationError(
                f"refusing to serve MCP on {host} with no authentication: make a key "
                "(hirag-oz keys create) or set HIRAG_API_KEYS, or bind to 127.0.0.1"
            )
    from hirag_oz.mcp_server import serve_mcp

    serve_mcp(
        settings,
        "http" if transport == "http" else "stdio",
        host,
        port,
    )


def _run_operation(
    ctx: click.Context, data_dir: Path | None, op: Operation[Any, Any, Any], request: BaseModel
) -> BaseModel:
    """Run one operation in-process on the data directory, with a progress bar while a
    document is indexed."""
    from hirag_oz.handlers.documents import PROGRESS
    from hirag_oz.service import Hirag

    with Hirag(_settings(ctx, data_dir=data_dir)) as hirag:
        if op.name != "index_document":
            done: BaseModel = hirag.call(op, request)
            return done
        with progress_bar("indexing", None) as update:

            def progress(job: Any) -> None:
                update(total=job.pages_total, completed=job.pages_done)

            token = PROGRESS.set(progress)
            try:
                indexed: BaseModel = hirag.call(op, request)
                return indexed
            finally:
                PROGRESS.reset(token)


add_operation_commands(cli, _run_operation)
add_archive_commands(cli, lambda ctx, data_dir: _settings(ctx, data_dir=data_dir))
add_key_commands(cli, lambda ctx, data_dir: _settings(ctx, data_dir=data_dir))


def main() -> None:
    try:
        cli(standalone_mode=True)
    except HiragError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
