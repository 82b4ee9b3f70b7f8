"""Bench configuration: TOML → validated, frozen dataclasses.

Every error names the file, the table and key, and what was expected; unknown keys
are errors too (a typo such as ``pitch_um`` must not silently fall back to a
default). See DESIGN §4 and docs/bench-config.md.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from labctl.errors import ConfigError

SLM_DRIVERS = ("hdmi", "sim")
LASER_DRIVERS = ("serial", "sim")
SHUTTER_DRIVERS = ("serial", "sim")
CAMERA_BUILTIN_DRIVERS = ("opencv", "sim")
PROPAGATION_METHODS = ("asm", "fresnel")


# ---------------------------------------------------------------------------
# Typed config objects


@dataclass(frozen=True)
class SerialPortConfig:
    """Where a serial instrument is plugged in (real driver only)."""

    port: str
    baudrate: int = 9600
    timeout_s: float = 1.0


@dataclass(frozen=True)
class LaserConfig:
    driver: str
    serial: SerialPortConfig | None = None
    truth: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShutterConfig:
    driver: str
    serial: SerialPortConfig | None = None
    truth: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SlmConfig:
    """One SLM. ``roi`` is (x, y, w, h) on the SLM screen in SLM pixels."""

    name: str
    role: str  # "input" | "layer"
    driver: str  # "hdmi" | "sim"
    resolution: tuple[int, int]  # (width, height) of the SLM screen, SLM pixels
    pitch_m: float
    roi: tuple[int, int, int, int]
    upsample: int
    settle_s: float
    monitor: int | str | None = None  # screeninfo index or name (hdmi)
    serial: str = ""
    verify: bool = True  # hdmi: read every map back from the X server before show returns
    truth: dict[str, Any] = field(default_factory=dict)

    @property
    def neurons(self) -> tuple[int, int]:
        """(rows, cols) of DONN neurons this SLM's ROI holds."""
        return (self.roi[3] // self.upsample, self.roi[2] // self.upsample)

    @property
    def neuron_pitch_m(self) -> float:
        return self.pitch_m * self.upsample


@dataclass(frozen=True)
class CameraConfig:
    driver: str  # "opencv" | "sim" | a name in the labctl.cameras entry-point group
    pitch_m: float
    resolution: tuple[int, int]  # (width, height), camera pixels
    bit_depth: int = 12
    exposure_s: float = 1e-3
    gain_db: float = 0.0
    device: int | str | None = None  # OpenCV index or path/URL (opencv)
    options: dict[str, Any] = field(default_factory=dict)  # plugin-specific
    truth: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchConfig:
    """A whole bench: geometry plus every device, as read from one TOML file."""

    name: str
    wavelength_m: float
    distances_m: tuple[float, ...]
    propagation: str
    pad_factor: int
    seed: int
    laser: LaserConfig
    shutter: ShutterConfig | None
    slms: tuple[SlmConfig, ...]
    camera: CameraConfig
    path: Path
    sha256: str

    @property
    def input_slm(self) -> SlmConfig:
        return next(s for s in self.slms if s.role == "input")

    @property
    def layer_slms(self) -> tuple[SlmConfig, ...]:
        """Layer SLMs in beam order (the order of the file)."""
        return tuple(s for s in self.slms if s.role == "layer")

    @property
    def size(self) -> tuple[int, int]:
        """(rows, cols) of the DONN field (neurons per side)."""
        return self.input_slm.neurons

    @property
    def pitch_m(self) -> float:
        """Neuron pitch of the DONN field, metres."""
        return self.input_slm.neuron_pitch_m

    def slm(self, name: str) -> SlmConfig:
        for s in self.slms:
            if s.name == name:
                return s
        names = ", ".join(s.name for s in self.slms)
        raise ConfigError(f"{self.path}: no SLM named {name!r}; this bench has: {names}")

    def resolve(self, relative: str) -> Path:
        """A path from the bench file, relative to the bench file's folder."""
        p = Path(relative)
        return p if p.is_absolute() else self.path.parent / p


# ---------------------------------------------------------------------------
# Validation helpers


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_ROOT = "(top level)"


class _Table:
    """Reads keys out of one TOML table, recording which keys were used."""

    def __init__(self, data: Any, where: str, file: Path):
        self.file = file
        self.where = where
        if not isinstance(data, dict):
            self.fail(f"expected a table, got {_describe(data)}")
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def fail(self, message: str, key: str | None = None) -> None:
        loc = f"{self.where}.{key}" if key else self.where
        raise ConfigError(f"{self.file}: {loc}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, check: Callable[[Any], Any], expected: str, default: Any = ...) -> Any:
        """Value of ``key`` passed through ``check`` (returns the value or raises ValueError)."""
        self.seen.add(key)
        if key not in self.data:
            if default is ...:
                hint = ""
                typos = difflib.get_close_matches(key, [k for k in self.data if isinstance(k, str)], n=1, cutoff=0.6)
                if typos and typos[0] not in self.seen:
                    hint = f"; found unknown key {typos[0]!r} (a typo?)"
                self.fail(f"missing required key (expected {expected}){hint}", key)
            return default
        value = self.data[key]
        try:
            return check(value)
        except (TypeError, ValueError):
            self.fail(f"expected {expected}, got {_describe(value)}", key)

    def sub(self, key: str) -> "_Table | None":
        self.seen.add(key)
        if key not in self.data:
            return None
        where = key if self.where == _ROOT else f"{self.where}.{key}"
        return _Table(self.data[key], where, self.file)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            known = ", ".join(sorted(self.seen))
            self.fail(f"unknown key {unknown[0]!r} (known keys here: {known})")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v: Any) -> float:
    if not _is_number(v) or v <= 0:
        raise ValueError
    return float(v)


def _non_negative(v: Any) -> float:
    if not _is_number(v) or v < 0:
        raise ValueError
    return float(v)


def _number(v: Any) -> float:
    if not _is_number(v):
        raise ValueError
    return float(v)


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError
        return v

    return check


def _string(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError
    return v


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise ValueError
        return v

    return check


def _vector(n: int, item: Callable[[Any], Any]) -> Callable[[Any], tuple]:
    def check(v: Any) -> tuple:
        if not isinstance(v, list) or len(v) != n:
            raise ValueError
        return tuple(item(x) for x in v)

    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError
    return v


def _positive_list(v: Any) -> tuple[float, ...]:
    if not isinstance(v, list) or not v:
        raise ValueError
    return tuple(_positive(x) for x in v)


def _int_or_str(v: Any) -> int | str:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError
    return v


# Truth tables are read only by the simulated bench (DESIGN §4). Their keys and
# checks live here so that a typo in a truth table is reported like any other.
SLM_TRUTH_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "response_file": (_string, "a path to a JSON file with gray, phase_rad, amplitude"),
    "shift_px": (_vector(2, _number), "[rows, cols] shift in neurons"),
    "rotation_deg": (_number, "a rotation in degrees"),
    "fringing_px": (_non_negative, "crosstalk width in SLM pixels, >= 0"),
    "dead": (_bool, "true or false (a dead SLM shows nothing)"),
}
CAMERA_TRUTH_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "magnification": (_positive, "optical magnification detector plane → camera, > 0"),
    "offset_px": (_vector(2, _number), "[x, y] offset of the detector centre from the frame centre, camera pixels"),
    "rotation_deg": (_number, "a rotation in degrees"),
    "dark_dn": (_non_negative, "dark level in DN, >= 0"),
    "read_noise_e": (_non_negative, "read noise in electrons, >= 0"),
    "full_well_e": (_positive, "full-well capacity in electrons, > 0"),
    "photons_per_s": (_positive, "photo-electrons per second for unit detector intensity, > 0"),
}
LASER_TRUTH_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "power_w": (_positive, "optical power in watts, > 0"),
    "relative_noise": (_non_negative, "relative power fluctuation per frame, >= 0"),
}
SHUTTER_TRUTH_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "stuck": (_bool, "true or false (a stuck shutter never opens)"),
}


def _truth(table: _Table, driver: str, keys: dict[str, tuple[Callable[[Any], Any], str]]) -> dict[str, Any]:
    sub = table.sub("truth")
    if sub is None:
        return {}
    if driver != "sim":
        table.fail("a truth table is only allowed on a simulated device (driver = \"sim\")", "truth")
    out = {k: sub.get(k, check, expected) for k, (check, expected) in keys.items() if sub.has(k)}
    sub.seen.update(keys)
    sub.finish()
    return out


def _serial(table: _Table, driver: str) -> SerialPortConfig | None:
    if driver != "serial":
        for key in ("port", "baudrate", "timeout_s"):
            if table.has(key):
                table.fail(f"only meaningful with driver = \"serial\" (driver is {driver!r})", key)
        return None
    return SerialPortConfig(
        port=table.get("port", _string, "a serial port such as /dev/ttyUSB0"),
        baudrate=table.get("baudrate", _int(1), "a positive integer baud rate", 9600),
        timeout_s=table.get("timeout_s", _positive, "a timeout in seconds, > 0", 1.0),
    )


def _laser(t: _Table) -> LaserConfig:
    driver = t.get("driver", _choice(LASER_DRIVERS), f"one of {', '.join(LASER_DRIVERS)}")
    cfg = LaserConfig(driver=driver, serial=_serial(t, driver), truth=_truth(t, driver, LASER_TRUTH_KEYS))
    t.finish()
    return cfg


def _shutter(t: _Table) -> ShutterConfig:
    driver = t.get("driver", _choice(SHUTTER_DRIVERS), f"one of {', '.join(SHUTTER_DRIVERS)}")
    cfg = ShutterConfig(driver=driver, serial=_serial(t, driver), truth=_truth(t, driver, SHUTTER_TRUTH_KEYS))
    t.finish()
    return cfg


def _slm(t: _Table) -> SlmConfig:
    name = t.get("name", _string, "a device name")
    t.where = f"slm {name!r}"
    role = t.get("role", _choice(("input", "layer")), 'one of "input", "layer"')
    driver = t.get("driver", _choice(SLM_DRIVERS), f"one of {', '.join(SLM_DRIVERS)}")
    resolution = t.get("resolution", _vector(2, _int(1)), "[width, height] of the SLM screen in pixels")
    pitch_m = t.get("pitch_m", _positive, "the SLM pixel pitch in metres, > 0")
    roi = t.get("roi", _vector(4, _int(0)), "[x, y, w, h] in SLM pixels (integers >= 0)")
    upsample = t.get("upsample", _int(1), "SLM pixels per neuron side, an integer >= 1", 1)
    settle_s = t.get("settle_s", _non_negative, "a settle time in seconds, >= 0", 0.0 if driver == "sim" else 0.1)
    monitor = t.get("monitor", _int_or_str, "a monitor index (integer) or name (string)", None)
    serial = t.get("serial", _string, "the SLM's serial number", "")
    verify = t.get("verify", _bool, "true or false (read every shown map back from the X server)", True)
    if driver != "hdmi" and t.has("verify"):
        t.fail(f"only meaningful with driver = \"hdmi\" (driver is {driver!r})", "verify")
    x, y, w, h = roi
    if w == 0 or h == 0:
        t.fail(f"ROI width and height must be > 0, got {list(roi)}", "roi")
    if x + w > resolution[0] or y + h > resolution[1]:
        t.fail(
            f"ROI {list(roi)} reaches ({x + w}, {y + h}), outside the {resolution[0]}x{resolution[1]} SLM screen",
            "roi",
        )
    if w % upsample or h % upsample:
        t.fail(f"ROI size {w}x{h} is not a whole number of {upsample}-pixel neurons", "roi")
    if driver == "hdmi" and monitor is None:
        t.fail("an HDMI SLM needs a monitor (screeninfo index or name; see `labctl devices`)", "monitor")
    truth = _truth(t, driver, SLM_TRUTH_KEYS)
    t.finish()
    return SlmConfig(name, role, driver, resolution, pitch_m, roi, upsample, settle_s, monitor, serial, verify, truth)


def _camera(t: _Table) -> CameraConfig:
    driver = t.get("driver", _string, 'a camera driver: "opencv", "sim" or an installed plugin')
    pitch_m = t.get("pitch_m", _positive, "the camera pixel pitch in metres, > 0")
    resolution = t.get("resolution", _vector(2, _int(1)), "[width, height] of the sensor in pixels")
    bit_depth = t.get("bit_depth", _int(1, 16), "bits per pixel, 1..16", 12)
    exposure_s = t.get("exposure_s", _positive, "an exposure time in seconds, > 0", 1e-3)
    gain_db = t.get("gain_db", _non_negative, "a gain in dB, >= 0", 0.0)
    device = t.get("device", _int_or_str, "an OpenCV camera index or a video path/URL", None)
    if driver == "opencv" and device is None:
        device = 0
    options_t = t.sub("options")
    options: dict[str, Any] = {}
    if options_t is not None:
        options = dict(options_t.data)  # plugin-specific; validated by the plugin
    truth = _truth(t, driver, CAMERA_TRUTH_KEYS)
    t.finish()
    return CameraConfig(driver, pitch_m, resolution, bit_depth, exposure_s, gain_db, device, options, truth)


def _parse(data: dict[str, Any], path: Path, sha: str) -> BenchConfig:
    root = _Table(data, _ROOT, path)
    bench = root.sub("bench")
    if bench is None:
        root.fail("missing required table [bench]")
    name = bench.get("name", _string, "a bench name")
    wavelength_m = bench.get("wavelength_m", _positive, "a wavelength in metres, > 0")
    if not 100e-9 <= wavelength_m <= 20e-6:
        bench.fail(f"{wavelength_m!r} m is not an optical wavelength (expected metres, e.g. 532e-9)", "wavelength_m")
    distances = bench.get(
        "distances_m",
        _positive_list,
        "a non-empty list of distances in metres, each > 0",
    )
    propagation = bench.get("propagation", _choice(PROPAGATION_METHODS), 'one of "asm", "fresnel"', "asm")
    pad_factor = bench.get("pad_factor", _int(1, 8), "a zero-padding factor, an integer 1..8", 2)
    seed = bench.get("seed", _int(0), "a non-negative integer seed", 0)
    bench.finish()

    def required(key: str) -> _Table:
        t = root.sub(key)
        if t is None:
            root.fail(f"missing required table [{key}]")
        return t

    laser = _laser(required("laser"))
    shutter_t = root.sub("shutter")
    shutter = _shutter(shutter_t) if shutter_t is not None else None
    camera = _camera(required("camera"))

    root.seen.add("slm")
    slm_list = data.get("slm")
    if not isinstance(slm_list, list) or not slm_list:
        root.fail("missing [[slm]] tables: a bench needs one input SLM and at least one layer SLM")
    slms = tuple(_slm(_Table(s, f"slm[{i}]", path)) for i, s in enumerate(slm_list))
    root.finish()

    names = [s.name for s in slms]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError(f"{path}: slm {n!r}: duplicate device name (each SLM needs its own name)")
    inputs = [s for s in slms if s.role == "input"]
    layers = [s for s in slms if s.role == "layer"]
    if len(inputs) != 1:
        raise ConfigError(f"{path}: expected exactly one SLM with role = \"input\", found {len(inputs)}")
    if not layers:
        raise ConfigError(f"{path}: expected at least one SLM with role = \"layer\", found none")
    if len(distances) != len(layers) + 1:
        raise ConfigError(
            f"{path}: bench.distances_m: expected {len(layers) + 1} distances "
            f"(input→layer 1, …, layer {len(layers)}→camera), got {len(distances)}"
        )
    first = inputs[0]
    for s in slms:
        if s.neurons != first.neurons:
            raise ConfigError(
                f"{path}: slm {s.name!r}: ROI/upsample gives {s.neurons[0]}x{s.neurons[1]} neurons, "
                f"but slm {first.name!r} gives {first.neurons[0]}x{first.neurons[1]}; all planes must match"
            )
        if not math.isclose(s.neuron_pitch_m, first.neuron_pitch_m, rel_tol=1e-9):
            raise ConfigError(
                f"{path}: slm {s.name!r}: neuron pitch {s.neuron_pitch_m:g} m (pitch_m x upsample) differs "
                f"from slm {first.name!r} ({first.neuron_pitch_m:g} m); all planes must match"
            )
    return BenchConfig(
        name, wavelength_m, distances, propagation, pad_factor, seed, laser, shutter, slms, camera, path, sha
    )


def builtin_bench_path(name: str) -> Path:
    """Path of a bench file shipped inside the package (``sim``)."""
    ref = resources.files("labctl") / "benches" / f"{name}.toml"
    return Path(str(ref))


def load_bench(spec: str | Path) -> BenchConfig:
    """Load and validate a bench: a TOML file path, or the name of a shipped bench (``sim``)."""
    path = Path(spec)
    if not path.suffix and not path.exists():
        shipped = builtin_bench_path(str(spec))
        if not shipped.exists():
            raise ConfigError(f"bench {str(spec)!r}: no such file, and no shipped bench of that name (try \"sim\")")
        path = shipped
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: bench file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read bench file ({e.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file (expected TOML)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return _parse(data, path.resolve(), hashlib.sha256(raw).hexdigest())
