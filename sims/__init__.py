"""Digital twin: optics, device models, DONN layers, quantizers, training and data.

Imports only torch, numpy and its own modules; it knows nothing of hardware.
"""
