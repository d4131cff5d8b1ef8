"""liveml: a model is code + hyperparameters + data; liveml versions all three, end to end."""

__version__ = "0.1.0"
