"""The labctl exception hierarchy and its mapping to CLI exit codes.

``drivers``, ``sims`` and ``calibration`` may not import ``labctl`` (DESIGN §1), so
each defines its own small error classes; this module gathers every error class
the CLI knows and gives each an exit code.
"""

from __future__ import annotations

from calibration.errors import CalibrationError
from drivers.errors import DeviceError, DeviceTimeout
from sims.errors import SimulationError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DEVICE = 3
EXIT_TIMEOUT = 4


class LabctlError(Exception):
    """Base of errors raised by the ``labctl`` package itself."""

    exit_code = EXIT_FAILURE


class ConfigError(LabctlError):
    """A bench, training or experiment file is missing, malformed or inconsistent."""

    exit_code = EXIT_USAGE


class UsageError(LabctlError):
    """Arguments that make no sense together, a missing model, a wrong map file."""

    exit_code = EXIT_USAGE


class ProtocolError(LabctlError):
    """A bench-server message was malformed, refused, or answered with an error."""

    exit_code = EXIT_FAILURE


class BenchUnreachable(LabctlError):
    """No bench server answered within the deadline."""

    exit_code = EXIT_TIMEOUT


# Most specific first: the first isinstance match wins.
_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (LabctlError, -1),  # use the instance's own exit_code
    (DeviceTimeout, EXIT_TIMEOUT),
    (DeviceError, EXIT_DEVICE),
    (CalibrationError, EXIT_DEVICE),
    (SimulationError, EXIT_USAGE),
)


def exit_code_for(exc: BaseException) -> int | None:
    """Exit code for an error labctl reports as one line, or None for a real bug."""
    for cls, code in _EXIT_CODES:
        if isinstance(exc, cls):
            return exc.exit_code if code == -1 else code  # type: ignore[attr-defined]
    return None
