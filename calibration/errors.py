"""Errors raised while calibrating. ``labctl`` maps them to exit code 3 (bench problem)."""


class CalibrationError(RuntimeError):
    """The measurement is unusable: no signal, saturated, beam off the camera, bad fit."""
