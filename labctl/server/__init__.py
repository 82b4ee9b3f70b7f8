"""The bench server (`labctl serve`): owns the devices and answers the protocol of DESIGN §6."""

from labctl.server.server import BenchServer

__all__ = ["BenchServer"]
