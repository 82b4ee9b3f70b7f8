"""The simulated bench: devices implementing the real interfaces over one optical world.

``SimWorld`` holds the physics and every hidden non-ideality; ``SimSlm``,
``SimCamera``, ``SimLaser`` and ``SimShutter`` are thin devices over it.
``serial_instruments`` serves the laser/shutter line protocols on a pseudo-terminal.
"""
