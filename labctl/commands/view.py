"""``labctl view``: the live view in a local OpenCV window, for benches without a browser."""

from __future__ import annotations

import time
from pathlib import Path

import click

from labctl.commands.status import client_keys_options
from labctl.options import endpoint_option

QUIT_KEYS = (ord("q"), ord("Q"), 27)  # q or Esc


@click.command(help="Watch a bench server's camera, SLM maps and job in an OpenCV window (q or Esc quits).")
@endpoint_option()
@client_keys_options
@click.option("--fps", type=click.FloatRange(min=0.2, max=60), default=10.0, show_default=True,
              help="At most this many frames per second.")
@click.option("--scale", type=click.Choice(["full", "auto"]), default="full", show_default=True,
              help="Display white: the camera's full range, or the frame's 99.9th percentile.")
@click.option("--artifacts", "artifacts", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Directory whose calibrations/ (registration) and models/ (detector regions) "
                                      "give the overlay.")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Close the window after this many seconds (default: until q/Esc).")
@click.option("--snapshot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the last picture shown (with overlays) to this PNG file on exit.")
def view(endpoint: str, keys_dir: Path | None, key_name: str, fps: float, scale: str, artifacts: Path,
         seconds: float | None, snapshot: Path | None) -> None:
    from drivers.errors import DeviceError
    from drivers.hdmi import display_available

    # Before any cv2 GUI call: without a display OpenCV's Qt backend aborts the whole process.
    if not display_available():
        raise DeviceError("no X display (DISPLAY unset or unreachable): `labctl view` needs a desktop; "
                          "use `labctl serve --http PORT` and a browser instead")
    if snapshot is not None and snapshot.suffix.lower() != ".png":
        from labctl.errors import UsageError

        raise UsageError(f"--snapshot {snapshot}: expected a .png file name")
    from labctl.client import BenchClient
    from labctl.server.security import load_client_keys
    from labctl.web.feed import LiveFeed
    from labctl.web.service import artifact_dirs

    keys = load_client_keys(keys_dir, key_name) if keys_dir is not None else None
    feed = LiveFeed(lambda: BenchClient(endpoint, timeout_s=3.0, retries=0, keys=keys), artifact_dirs(artifacts),
                    fps=fps, job_fps=fps, encode=False)
    shown, ever_framed, last_error = _show(feed, endpoint, scale, seconds)
    if snapshot is not None and shown is not None:
        _save_png(snapshot, shown)
        click.echo(f"labctl view: snapshot saved to {snapshot}", err=True)
    if not ever_framed and last_error:
        from labctl.errors import BenchUnreachable

        raise BenchUnreachable(f"no frames from {endpoint}: {last_error}")


def _quiet_qt_fonts() -> None:
    """OpenCV's Qt looks for fonts in a wheel directory that does not exist, and warns; use the system's.

    The cv2 package sets ``QT_QPA_FONTDIR`` itself when imported, so only a directory
    that really exists is left alone.
    """
    import os

    if os.path.isdir(os.environ.get("QT_QPA_FONTDIR", "")):
        return
    for d in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype", "/usr/share/fonts"):
        if os.path.isdir(d):
            os.environ["QT_QPA_FONTDIR"] = d
            return


def _show(feed, endpoint: str, scale: str, seconds: float | None):
    _quiet_qt_fonts()
    import cv2

    from labctl.web.compose import compose

    window = f"labctl view - {endpoint}"
    end = None if seconds is None else time.monotonic() + seconds
    shown, last_key, ever_framed, last_error = None, None, False, None
    feed.touch()
    feed.start()
    cv2.namedWindow(window, cv2.WINDOW_AUTOSIZE)
    try:
        while True:
            feed.touch()
            seq, data, meta = feed.frame_data()
            last_error = feed.error()
            key = (seq, feed.maps_seq(), last_error, id(feed.status()))
            if key != last_key or shown is None:
                shown = compose(data, meta, seq, feed.overlay(), feed.maps(), feed.status(), scale, last_error)
                cv2.imshow(window, shown)
                last_key = key
                ever_framed = ever_framed or data is not None
            k = cv2.waitKey(30)
            if k >= 0 and (k & 0xFF) in QUIT_KEYS:
                break
            if cv2.getWindowProperty(window, cv2.WND_PROP_VISIBLE) < 1:
                break  # closed with the window manager
            if end is not None and time.monotonic() >= end:
                break
    finally:
        feed.stop()
        cv2.destroyWindow(window)
        cv2.waitKey(1)
    return shown, ever_framed, last_error


def _save_png(path: Path, image) -> None:
    import os

    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode the snapshot for {path}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)  # never a half-written picture
