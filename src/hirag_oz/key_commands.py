"""`hirag-oz keys create|list|revoke`: the API keys of the data directory's key file.

A running server reads the file again within a second of a change: no restart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click

from hirag_oz.config import Settings
from hirag_oz.kernel.scope import DEFAULT_TENANT, ROLES, check_tenant

SettingsOf = Callable[[click.Context, Path | None], Settings]


def add_key_commands(cli: click.Group, settings_of: SettingsOf) -> None:
    from hirag_oz.keys import key_store

    data_dir = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The data directory whose key file is meant (default: ./data).",
    )

    @cli.group("keys")
    def keys() -> None:
        """API keys: each with a role (read, write, admin) and optionally some agents."""

    @keys.command("create")
    @data_dir
    @click.option("--role", type=click.Choice(ROLES), required=True)
    @click.option("--agent", "agents", multiple=True, help="Limit the key to this agent (repeat).")
    @click.option("--name", default="", help="What the key is for (shown in lists).")
    @click.option(
        "--tenant",
        default=DEFAULT_TENANT,
        show_default=True,
        help="The tenant the key belongs to (a new name makes a new tenant).",
    )
    @click.pass_context
    def create(
        ctx: click.Context,
        data_dir: Path | None,
        role: str,
        agents: tuple[str, ...],
        name: str,
        tenant: str,
    ) -> None:
        """Make a key and print it, once: only its hash is kept."""
        store = key_store(settings_of(ctx, data_dir))
        made, secret = store.create(
            role,  # type: ignore[arg-type]
            list(agents) or None,
            name,
            tenant=check_tenant(tenant),
        )
        click.echo(json.dumps({"key": secret, **made.public()}, indent=2))

    @keys.command("list")
    @data_dir
    @click.pass_context
    def listed(ctx: click.Context, data_dir: Path | None) -> None:
        """Every key made (revoked ones with the time), never the key itself."""
        store = key_store(settings_of(ctx, data_dir))
        click.echo(json.dumps([k.public() for k in store.listed()], indent=2))

    @keys.command("revoke")
    @click.argument("key_id")
    @data_dir
    @click.pass_context
    def revoke(ctx: click.Context, key_id: str, data_dir: Path | None) -> None:
        """Revoke the key KEY_ID: it is refused from then on."""
        store = key_store(settings_of(ctx, data_dir))
        click.echo(json.dumps(store.revoke(key_id).public(), indent=2))
