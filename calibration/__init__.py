"""SLM response measurement, level selection and camera registration.

Drives devices only through the ``drivers`` interfaces; may fit measurements with
``sims.optics``. Never reads a simulated device's hidden truth.
"""
