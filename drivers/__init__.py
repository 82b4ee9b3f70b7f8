"""Device interfaces, real drivers (HDMI SLM, camera, serial instruments) and the simulated bench.

Drivers know nothing of configuration files, networks or training: ``labctl`` builds
them from a bench config and composes them.
"""
