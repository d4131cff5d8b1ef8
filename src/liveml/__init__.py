"""liveml: a model is code + hyperparameters + data; liveml versions all three, end to end."""

__version__ = "0.1.0"

# Before anything imports torch: LIVEML_CPU_ISA=avx2 gives the same floats on every AVX2 machine.
from liveml.core import numerics as _numerics

_numerics.pin()
