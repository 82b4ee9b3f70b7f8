"""Errors raised by devices. ``labctl`` maps them to exit code 3 (4 for timeouts)."""


class DeviceError(RuntimeError):
    """A device is missing, refused a command, or answered nonsense.

    The message names the device (and port or monitor) and what was expected.
    """


class DeviceTimeout(DeviceError):
    """A device did not answer within its timeout."""
