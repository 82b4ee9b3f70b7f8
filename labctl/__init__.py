"""labctl: hardware-in-the-loop control for diffractive optical neural networks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("labctl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"
