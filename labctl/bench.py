"""Turn a ``BenchConfig`` into connected device objects, real or simulated.

``open_bench(cfg)`` builds the devices; using the result as a context manager
connects them in a safe state (shutter closed, laser off, SLMs blank) and leaves
them that way on exit, whatever happened (DESIGN §8).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from drivers.camera import Camera, OpenCvCamera
from drivers.errors import DeviceError
from drivers.laser import Laser
from drivers.shutter import Shutter
from drivers.slm import Slm
from labctl.config import BenchConfig, CameraConfig, SerialPortConfig, SlmConfig
from labctl.errors import ConfigError

CAMERA_ENTRY_POINTS = "labctl.cameras"


class Bench:
    """Every device of one bench. ``slms`` is in file order; ``layer_slms`` in beam order."""

    def __init__(self, config: BenchConfig, slms: dict[str, Slm], camera: Camera, laser: Laser,
                 shutter: Shutter | None, world: Any = None):
        self.config = config
        self.slms = slms
        self.input_slm = slms[config.input_slm.name]
        self.layer_slms = tuple(slms[s.name] for s in config.layer_slms)
        self.camera = camera
        self.laser = laser
        self.shutter = shutter
        self._world = world
        self._connected: list[Any] = []

    def devices(self) -> list[Any]:
        return [self.laser, *([self.shutter] if self.shutter else []), *self.slms.values(), self.camera]

    def connect(self) -> "Bench":
        """Connect every device, then put the bench in its safe state."""
        try:
            # Beam blocked first, before any SLM shows anything.
            for dev in self.devices():
                dev.connect()
                self._connected.append(dev)
                if dev is self.shutter:
                    dev.close()
                elif dev is self.laser:
                    dev.off()
        except BaseException:
            self.disconnect()
            raise
        return self

    def abort(self) -> None:
        """Blank every SLM and block the beam (shutter closed, or laser off without one).

        Every step is tried even if one fails; the first failure is raised afterwards.
        """
        errors: list[BaseException] = []
        steps = [s.blank for s in self.slms.values() if s.connected]
        if self.shutter is not None and self.shutter in self._connected:
            steps.insert(0, self.shutter.close)
        elif self.laser in self._connected:
            steps.insert(0, self.laser.off)
        for step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - keep making the bench safe
                errors.append(e)
        if errors:
            raise errors[0]

    def disconnect(self) -> None:
        """Leave the bench safe (SLMs blank, shutter closed, laser off) and release every device."""
        errors: list[BaseException] = []
        try:
            self.abort()
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        if self.laser in self._connected:
            try:
                self.laser.off()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        for dev in reversed(self._connected):
            try:
                dev.disconnect()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        self._connected.clear()
        if errors:
            raise errors[0]

    def status(self) -> dict[str, Any]:
        return {
            "bench": self.config.name,
            "slms": {name: s.status() for name, s in self.slms.items()},
            "camera": self.camera.status(),
            "laser": self.laser.status() if self.laser in self._connected else {"name": self.laser.name},
            "shutter": (self.shutter.status() if self.shutter in self._connected else {"name": self.shutter.name})
            if self.shutter
            else None,
        }

    def __enter__(self) -> "Bench":
        return self.connect()

    def __exit__(self, *exc: Any) -> None:
        self.disconnect()


def _uses_sim(cfg: BenchConfig) -> bool:
    return (
        any(s.driver == "sim" for s in cfg.slms)
        or cfg.camera.driver == "sim"
        or cfg.laser.driver == "sim"
        or (cfg.shutter is not None and cfg.shutter.driver == "sim")
    )


def _build_world(cfg: BenchConfig) -> Any:
    # Imported here: the simulated bench pulls in torch, which a real bench does not need.
    from drivers.sim.truth import CameraTruth, LaserTruth, ShutterTruth, SlmTruth
    from drivers.sim.world import SimWorld

    first = cfg.input_slm
    world = SimWorld(
        shape=(first.roi[3], first.roi[2]),
        pitch_m=first.pitch_m,
        wavelength_m=cfg.wavelength_m,
        distances_m=cfg.distances_m,
        method=cfg.propagation,
        pad_factor=cfg.pad_factor,
        seed=cfg.seed,
        has_shutter=cfg.shutter is not None,
    )
    for s in [cfg.input_slm, *cfg.layer_slms]:
        if s.driver != "sim":
            continue
        resp = s.truth.get("response_file")
        truth = SlmTruth.from_table(s.truth, s.role, cfg.resolve(resp) if resp else None)
        world.add_slm(s.name, s.role, (s.roi[3], s.roi[2]), s.pitch_m, s.upsample, truth)
    world.set_camera_truth(CameraTruth.from_table(cfg.camera.truth))
    world.set_laser_truth(LaserTruth.from_table(cfg.laser.truth))
    if cfg.shutter is not None:
        world.set_shutter_truth(ShutterTruth.from_table(cfg.shutter.truth))
    return world


def _slm(cfg: BenchConfig, s: SlmConfig, world: Any) -> Slm:
    screen = (s.resolution[1], s.resolution[0])
    if s.driver == "sim":
        from drivers.sim.slm import SimSlm

        return SimSlm(world, s.name, s.roi, screen, s.pitch_m, s.settle_s)
    from drivers.hdmi import HdmiSlm

    monitor = s.monitor if s.monitor is not None else 0
    return HdmiSlm(s.name, monitor, s.roi, screen, s.pitch_m, s.settle_s, verify=s.verify)


def camera_plugins() -> dict[str, Any]:
    """Camera drivers registered in the ``labctl.cameras`` entry-point group (name → entry point)."""
    return {ep.name: ep for ep in entry_points(group=CAMERA_ENTRY_POINTS)}


def _camera(cfg: BenchConfig, c: CameraConfig, world: Any) -> Camera:
    if c.driver == "sim":
        from drivers.sim.camera import SimCamera

        if any(s.driver != "sim" for s in cfg.slms):
            raise ConfigError(f"{cfg.path}: camera: a simulated camera needs every SLM simulated (driver = \"sim\")")
        world.check()
        return SimCamera(world, "camera", c.resolution, c.pitch_m, c.bit_depth, c.exposure_s, c.gain_db)
    if c.driver == "opencv":
        opts = dict(c.options)
        pixel_format = opts.pop("pixel_format", None)
        timeout_s = opts.pop("timeout_s", 2.0)
        if opts:
            raise ConfigError(f"{cfg.path}: camera.options: unknown key {sorted(opts)[0]!r} for the opencv driver "
                              "(known: pixel_format, timeout_s)")
        assert c.device is not None
        device = cfg.resolve(c.device) if isinstance(c.device, str) and "://" not in c.device else c.device
        return OpenCvCamera(str(device) if not isinstance(device, int) else device, c.resolution, c.bit_depth,
                            c.exposure_s, c.gain_db, pixel_format, float(timeout_s), "camera", c.pitch_m)
    plugins = camera_plugins()
    if c.driver not in plugins:
        known = ", ".join(["opencv", "sim", *sorted(plugins)])
        raise ConfigError(f"{cfg.path}: camera.driver: no camera driver {c.driver!r} installed (known: {known})")
    try:
        cls = plugins[c.driver].load()
    except Exception as e:  # noqa: BLE001 - a broken plugin must not take the CLI down with a traceback
        raise DeviceError(f"camera plugin {c.driver!r} failed to load: {type(e).__name__}: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Camera)):
        raise DeviceError(f"camera plugin {c.driver!r} is not a drivers.camera.Camera subclass")
    return cls(
        name="camera", resolution=c.resolution, pitch_m=c.pitch_m, bit_depth=c.bit_depth,
        exposure_s=c.exposure_s, gain_db=c.gain_db, device=c.device, **c.options,
    )


def _transport(s: SerialPortConfig) -> Any:
    from drivers.serial_io import SerialTransport

    return SerialTransport(s.port, baudrate=s.baudrate, timeout_s=s.timeout_s)


def open_bench(cfg: BenchConfig) -> Bench:
    """Build (not yet connect) every device of ``cfg``; use the result as a context manager."""
    world = _build_world(cfg) if _uses_sim(cfg) else None
    slms = {s.name: _slm(cfg, s, world) for s in cfg.slms}
    camera = _camera(cfg, cfg.camera, world)
    if cfg.laser.driver == "sim":
        from drivers.sim.instruments import SimLaser

        laser: Laser = SimLaser(world)
    else:
        from drivers.laser import SerialLaser

        assert cfg.laser.serial is not None
        laser = SerialLaser(_transport(cfg.laser.serial))
    shutter: Shutter | None = None
    if cfg.shutter is not None:
        if cfg.shutter.driver == "sim":
            from drivers.sim.instruments import SimShutter

            shutter = SimShutter(world)
        else:
            from drivers.shutter import SerialShutter

            assert cfg.shutter.serial is not None
            shutter = SerialShutter(_transport(cfg.shutter.serial))
    return Bench(cfg, slms, camera, laser, shutter, world)


def open_slm(cfg: BenchConfig, name: str) -> Slm:
    """Build (not connect) the one SLM called ``name``; ConfigError if the bench has none."""
    s = cfg.slm(name)
    world = _build_world(cfg) if s.driver == "sim" else None
    return _slm(cfg, s, world)
