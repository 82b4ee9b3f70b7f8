"""``labctl status``: what a bench server is doing — devices, lease, jobs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from labctl.client import BenchClient
from labctl.options import endpoint_option
from labctl.server.security import load_client_keys


def client_keys_options(f):
    f = click.option("--key-name", "key_name", default="client", show_default=True,
                     help="Which client key pair in --keys to use.")(f)
    return click.option("--keys", "keys_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="CURVE key directory (for a server started with --keys).")(f)


@click.command(help="Show a bench server's devices, lease and jobs.")
@endpoint_option()
@client_keys_options
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.05), default=3.0, show_default=True,
              help="Seconds to wait for the server.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status(endpoint: str, keys_dir: Path | None, key_name: str, timeout_s: float, as_json: bool) -> None:
    keys = load_client_keys(keys_dir, key_name) if keys_dir is not None else None
    with BenchClient(endpoint, timeout_s=timeout_s, retries=0, keys=keys) as client:
        hello = client.hello()
        st = client.status()
    if as_json:
        click.echo(json.dumps({"hello": hello, "status": st}, indent=2))
        return
    for line in format_status(endpoint, hello, st):
        click.echo(line)


def _age(unix: float | None) -> str:
    return "never" if not unix else f"{time.time() - unix:.1f} s ago"


def format_status(endpoint: str, hello: dict[str, Any], st: dict[str, Any]) -> list[str]:
    srv = st["server"]
    lines = [
        f"server   {endpoint}  bench {srv['bench']!r}  labctl {srv['version']}  protocol v{hello['protocol']}",
        f"         id {srv['id']}  host {hello.get('host', '?')}  up {srv['uptime_s']:.0f} s",
    ]
    lease = st.get("lease")
    lines.append("lease    free" if lease is None else
                 f"lease    held by {lease['holder']} (expires in {lease['expires_in_s']:.1f} s)")
    dep = st.get("deployed")
    if dep:
        lines.append(f"deployed {dep['name']} (sha256 {dep['model_sha256'][:12]}…) on {', '.join(dep['layers'])}")
    busy = st.get("device_thread")
    if busy:
        lines.append(f"devices  busy: {busy['what']} for {busy['for_s']:.1f} s")
    desc = hello.get("devices", {})
    devs = st.get("devices", {})
    lines.append(f"devices  (read {_age(st.get('devices_read_unix'))})")
    for name, info in desc.get("slms", {}).items():
        s = devs.get("slms", {}).get(name, {})
        shown = s.get("maps_shown", "?")
        lines.append(f"  SLM {name:<8} {info['role']:<6} ROI {info['shape'][0]}x{info['shape'][1]}  maps shown {shown}")
    cam = devs.get("camera") or {}
    lines.append(f"  camera       exposure {cam.get('exposure_s', '?')} s  gain {cam.get('gain_db', '?')} dB")
    laser = devs.get("laser") or {}
    lines.append(f"  laser        {_onoff(laser, ('is_on', 'on'), 'on', 'off')}")
    shutter = devs.get("shutter")
    lines.append("  shutter      none" if shutter is None else
                 f"  shutter      {_onoff(shutter, ('is_open', 'open'), 'open', 'closed')}")
    jobs = st.get("jobs", [])
    lines.append(f"jobs     {len(jobs)}" + ("" if jobs else " (none)"))
    for j in jobs[-10:]:
        err = f"  error: {j['error']['message']}" if j.get("error") else ""
        lines.append(f"  {j['job']}  {j['kind']:<6} {j['state']:<9} {j['done']}/{j['total']}  by {j['owner']}{err}")
    return lines


def _onoff(status: dict[str, Any], keys: tuple[str, ...], yes: str, no: str) -> str:
    for k in keys:
        if isinstance(status.get(k), bool):
            return yes if status[k] else no
    return "?"
