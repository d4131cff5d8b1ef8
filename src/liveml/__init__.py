"""liveml: a model is code + hyperparameters + data; liveml versions all three, end to end."""

__version__ = "0.1.0"

# Before anything imports torch: the same float results on every AVX2 machine (core/numerics.py).
from liveml.core import numerics as _numerics

_numerics.pin()
