"""The commands that take data out and put it back: `export`, `import`, `backup`, `backups`,
`restore` and `move`, each on the data directory (or the configured store) in-process, with a
progress bar on stderr and its report on stdout as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr

from hirag_oz.commands import progress_bar
from hirag_oz.config import Settings
from hirag_oz.kernel.scope import DEFAULT_TENANT, check_tenant

SettingsOf = Callable[[click.Context, Path | None], Settings]


@contextmanager
def _bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    with progress_bar(description, total) as update:
        yield lambda n: update(advance=n)


def _print(report: Any) -> None:
    click.echo(json.dumps(report, indent=2, ensure_ascii=False))


def _data_dir(fn: Any) -> Any:
    """`--data-dir`, and `--tenant`: whose data (the default tenant's unless given)."""
    fn = click.option(
        "--tenant",
        default=DEFAULT_TENANT,
        show_default=True,
        callback=lambda _ctx, _param, value: check_tenant(value),
        help="The tenant whose data is meant.",
    )(fn)
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The data directory (default: ./data).",
    )(fn)


def Hirag(settings: Settings) -> Any:
    from hirag_oz.service import Hirag as Service

    return Service(settings)


def add_archive_commands(cli: click.Group, settings_of: SettingsOf) -> None:
    @cli.command("export")
    @click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
    @_data_dir
    @click.option("--agent-id", default=None, help="Only this agent's data (default: all).")
    @click.option(
        "--vectors/--no-vectors",
        default=True,
        show_default=True,
        help="Include the vectors (else they are embedded again on import).",
    )
    @click.pass_context
    def export_command(
        ctx: click.Context,
        file: Path,
        data_dir: Path | None,
        tenant: str,
        agent_id: str | None,
        vectors: bool,
    ) -> None:
        """Write everything (or one agent's data) to FILE, JSON Lines (gzip when it ends in .gz)."""
        from hirag_oz.archive.export import export, totals

        with Hirag(settings_of(ctx, data_dir)) as service:
            hirag = service.tenant(tenant)
            count = totals(hirag, agent_id)
            with _bar(f"exporting to {file.name}", count) as advance:
                report = export(hirag, file, agent_id=agent_id, vectors=vectors, progress=advance)
        _print(report.to_dict())

    @cli.command("import")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @_data_dir
    @click.pass_context
    def import_command(ctx: click.Context, file: Path, data_dir: Path | None, tenant: str) -> None:
        """Put the dump FILE back (ids kept; run it again to resume one cut short)."""
        from hirag_oz.archive.dump import open_dump
        from hirag_oz.archive.load import import_dump

        with open_dump(file) as stream:
            total = sum(1 for _ in stream) - 1
        with (
            Hirag(settings_of(ctx, data_dir)) as service,
            _bar(f"importing {file.name}", total) as advance,
        ):
            report = import_dump(service.tenant(tenant), file, progress=advance)
        _print(report.to_dict())
        if not report.complete:
            raise click.ClickException("the dump was cut short: what it held was imported")

    @cli.command("backup")
    @_data_dir
    @click.pass_context
    def backup_command(ctx: click.Context, data_dir: Path | None, tenant: str) -> None:
        """Back up the data directory (a running server: POST /api/v1/backups)."""
        from hirag_oz.archive import backup

        with Hirag(settings_of(ctx, data_dir)) as service:
            _print(backup.create(service.tenant(tenant)).to_dict())

    @cli.command("backups")
    @_data_dir
    @click.pass_context
    def backups_command(ctx: click.Context, data_dir: Path | None, tenant: str) -> None:
        """List the backups, newest first."""
        from hirag_oz.archive import backup

        with Hirag(settings_of(ctx, data_dir)) as service:  # reads the backup folder only
            _print([b.to_dict() for b in backup.listed(service.tenant(tenant))])

    @cli.command("restore")
    @click.argument("backup_name")
    @_data_dir
    @click.pass_context
    def restore_command(
        ctx: click.Context, backup_name: str, data_dir: Path | None, tenant: str
    ) -> None:
        """Restore BACKUP_NAME (a name from `backups`, or a backup's folder) into an empty
        data directory; stop the server first."""
        from hirag_oz.archive import backup

        with Hirag(settings_of(ctx, data_dir)) as service:
            hirag = service.tenant(tenant)
            found = backup.find(hirag, backup_name)
            report = backup.restore(hirag, found)
        _print(report.to_dict())

    @cli.command("move")
    @click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The data directory (default: ./data); every tenant's collections move.",
    )
    @click.option("--to", "to_url", default=None, help="Qdrant server URL to copy into.")
    @click.option("--from", "from_url", default=None, help="Qdrant server URL to copy from.")
    @click.option("--api-key", envvar="HIRAG_MOVE_QDRANT_API_KEY", default=None)
    @click.option("--sample", type=click.IntRange(1, 100_000), default=200, show_default=True)
    @click.pass_context
    def move_command(
        ctx: click.Context,
        data_dir: Path | None,
        to_url: str | None,
        from_url: str | None,
        api_key: str | None,
        sample: int,
    ) -> None:
        """Copy the embedded store of the data directory into a Qdrant server (--to) or back
        (--from), vectors and all, then verify counts and a sample; run again to resume."""
        from hirag_oz.archive.move import move, total

        if (to_url is None) == (from_url is None):
            raise click.UsageError("give one of --to URL or --from URL")
        embedded = settings_of(ctx, data_dir)
        db = {"url": to_url or from_url, "api_key": SecretStr(api_key) if api_key else None}
        remote = embedded.model_copy(update={"vector_db": embedded.vector_db.model_copy(update=db)})
        local = embedded.model_copy(
            update={"vector_db": embedded.vector_db.model_copy(update={"url": None})}
        )
        source_settings, target_settings = (local, remote) if to_url else (remote, local)
        with Hirag(source_settings) as source, Hirag(target_settings) as target:
            count = total(source)
            with _bar("moving", count) as advance:
                report = move(source, target, sample=sample, progress=advance)
        _print(report.to_dict())
        if not report.verified:
            raise click.ClickException("the copy differs from its source: see mismatches")
