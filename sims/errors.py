"""Errors raised by the digital twin. ``labctl`` maps them to exit code 2 (bad input)."""


class SimulationError(ValueError):
    """Inputs the twin cannot simulate faithfully (shapes, sampling, files)."""


class SamplingError(SimulationError):
    """The grid is too coarse or too small for the requested propagation."""


class DataError(SimulationError):
    """A dataset or model/calibration file is missing, corrupt or of the wrong shape."""
