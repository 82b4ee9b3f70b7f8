"""Quantization strategies: how a DONN layer turns trainable parameters into per-pixel
complex transmissions. A new method is one new subclass of :class:`Quantizer`
registered in :data:`QUANTIZERS`."""

from sims.quantizers.base import QUANTIZERS, Quantizer, register
from sims.quantizers.fixed import Fixed
from sims.quantizers.full import FullPrecision
from sims.quantizers.gumbel import GumbelSoftmax
from sims.quantizers.schedules import Schedule, make_schedule
from sims.quantizers import dsq, psq, ptq, qat, ste, wsq  # noqa: F401,E402 - registers the method zoo

__all__ = ["QUANTIZERS", "Quantizer", "register", "Fixed", "FullPrecision", "GumbelSoftmax", "Schedule",
           "make_schedule"]
