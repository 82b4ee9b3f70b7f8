"""``labctl serve``: own the bench's devices and answer the bench protocol until stopped."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from labctl.config import load_bench
from labctl.options import DEFAULT_ENDPOINT, bench_option
from labctl.server.security import check_bind, load_server_keys


@click.command(help="Run the bench server that owns the devices (loopback only unless --keys or --insecure).")
@bench_option()
@click.option("--bind", "bind", metavar="ADDR", default=DEFAULT_ENDPOINT, show_default=True,
              help="Address to listen on. A non-loopback address needs --keys (or --insecure).")
@click.option("--keys", "keys_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="CURVE key directory from `labctl keys generate`: encrypt, and accept only authorized clients.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback bind without keys (prints a warning).")
@click.option("--http", "http", metavar="[HOST:]PORT", default=None,
              help="Also serve the live view (web page) on this port, 127.0.0.1 unless HOST is given; "
                   "a non-loopback HOST needs --insecure (HTTP has no keys).")
@click.option("--artifacts", "artifacts", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Directory whose calibrations/, models/ and runs/ the live view shows.")
def serve(bench: str, bind: str, keys_dir: Path | None, insecure: bool, http: str | None, artifacts: Path) -> None:
    # Every check that can refuse comes before any device is opened or any port bound.
    keys = load_server_keys(keys_dir) if keys_dir is not None else None
    warning = check_bind(bind, keys, insecure)
    if warning:
        click.echo(warning, err=True)
    http_sock = None
    if http is not None:
        from labctl.web.http import bind_socket, check_http_bind, parse_http

        http_addr = parse_http(http)
        http_warning = check_http_bind(http_addr, insecure)
        if http_warning:
            click.echo(http_warning, err=True)
    cfg = load_bench(bench)
    if http is not None:
        http_sock = bind_socket(http_addr)

    from labctl.bench import open_bench
    from labctl.server import BenchServer

    if cfg.camera.driver == "sim":
        # The simulated camera propagates 400x400 FFTs per frame; one torch thread is
        # several times faster than two fighting the client on a small machine
        # (docs/performance.md, Calibration and Drivers).
        import torch

        torch.set_num_threads(1)

    with open_bench(cfg) as devices:
        server = BenchServer(devices, bind=bind, bench_name=cfg.name, keys=keys)
        web = None

        def on_signal(*_: object) -> None:
            if web is not None:
                web.request_stop()  # first, so its last polls still get answers instead of timing out
            server.stop()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            endpoint = server.open()
            secured = "CURVE, authorized keys only" if keys else "no encryption"
            click.echo(f"labctl serve: bench {cfg.name!r} on {endpoint} ({secured}); server {server.server_id}; "
                       "Ctrl-C to stop", err=True)
            if http_sock is not None:
                from labctl.web.app import LOOPBACK_HOSTS
                from labctl.web.service import WebView, artifact_dirs

                hosts = LOOPBACK_HOSTS if http_addr.loopback else ["*"]
                web = WebView(server, http_sock, artifact_dirs(artifacts), allowed_hosts=hosts).start()
                http_sock = None  # the web view owns it now
                click.echo(f"labctl serve: live view on {web.url}", err=True)
            server.serve_forever()
        finally:
            if web is not None:
                web.stop()
            if http_sock is not None:
                http_sock.close()
            outcome = server.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if "error" in outcome:
        click.echo(f"labctl serve: stopped, but: {outcome['error']}", err=True)
    else:
        click.echo("labctl serve: stopped; SLMs blank, shutter closed", err=True)
