"""``labctl devices``: what hardware this machine can see."""

from __future__ import annotations

import json

import click

from drivers.camera import list_cameras
from drivers.hdmi import list_monitors
from drivers.serial_io import list_serial_ports


@click.command(help="List monitors (HDMI SLMs), cameras and serial ports found on this machine.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def devices(as_json: bool) -> None:
    monitors = list_monitors()
    cameras = list_cameras()
    ports = list_serial_ports()
    if as_json:
        click.echo(json.dumps({
            "monitors": [m.__dict__ for m in monitors],
            "cameras": cameras,
            "serial_ports": [p.__dict__ for p in ports],
        }, indent=2))
        return
    click.echo("Monitors (HDMI SLMs, `monitor = <index or name>`):")
    if not monitors:
        click.echo("  no monitors found (no display, or none connected)")
    for m in monitors:
        primary = "  primary" if m.is_primary else ""
        click.echo(f"  [{m.index}] {m.name}  {m.width}x{m.height} at ({m.x}, {m.y}){primary}")
    click.echo("Cameras (OpenCV, `device = <index>`):")
    if not cameras:
        click.echo("  no cameras found")
    for i in cameras:
        click.echo(f"  [{i}] OpenCV index {i}")
    click.echo("Serial ports (laser, shutter, `port = <device>`):")
    if not ports:
        click.echo("  no serial ports found")
    for p in ports:
        click.echo(f"  {p.device}  {p.description}  {p.hwid}")
