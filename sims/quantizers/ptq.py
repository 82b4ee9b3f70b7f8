"""Post-training quantization (000 §4.2, QuATON's PQ): train unconstrained phases, then
show the nearest device level (complex distance, so phase wraps) of every pixel."""

from __future__ import annotations

from sims.quantizers.base import register
from sims.quantizers.full import FullPrecision


@register
class PostTraining(FullPrecision):
    name = "ptq"
    quantized = True  # evaluation and export use the rounded levels
