"""The operator live view: what the bench's camera and SLMs show, for a browser or an OpenCV window.

- :mod:`labctl.web.feed` polls a bench server (``view.frame``, ``view.maps``,
  ``status``) in one thread and keeps only the newest of each: viewers share it.
- :mod:`labctl.web.render` turns a float frame into an 8-bit picture and a histogram.
- :mod:`labctl.web.overlay` puts the detector regions and registration grid in camera pixels.
- :mod:`labctl.web.artifacts` finds the latest calibration plots, registration and deploy report.
- :mod:`labctl.web.app` is the Starlette app; :mod:`labctl.web.http` runs it beside ``labctl serve``.
"""
