"""``labctl keys``: CURVE key pairs for bench servers that listen beyond this machine."""

from __future__ import annotations

from pathlib import Path

import click

from labctl.server.security import generate_keys, list_keys


@click.group(help="Create and list CURVE keys for remote bench access (see docs/protocol.md, Security).")
def keys() -> None:
    pass


@keys.command(help="Create the server key pair (if missing) and client key pairs in DIR; authorize the clients.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--client", "clients", multiple=True, default=("client",), show_default=True,
              help="Name of a client key pair to create (repeat for several).")
def generate(directory: Path, clients: tuple[str, ...]) -> None:
    created = generate_keys(directory, tuple(clients))
    for p in created:
        click.echo(f"wrote {p}")
    click.echo(f"server: labctl serve --bind tcp://0.0.0.0:5555 --keys {directory}")
    click.echo(f"client: copy {directory}/server/server.key and {directory}/clients/<name>.key* to the client "
               "machine (same layout) and pass --keys there")


@keys.command("list", help="Show the public keys in DIR (never the secret ones).")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
def list_(directory: Path) -> None:
    info = list_keys(directory)
    click.echo(f"server      {info['server'] or '(none)'}")
    for kind in ("clients", "authorized"):
        entries = info[kind]
        if not entries:
            click.echo(f"{kind:<11} (none)")
        for e in entries:  # type: ignore[union-attr]
            click.echo(f"{kind:<11} {e['name']:<16} {e['public']}")
