"""Tiny but real Phi-family test models.

Each model has the real tokenizer, chat template, generation config and
architecture settings of a Microsoft Phi model, shrunk to 2 layers with
random weights. Building needs only the standard library and numpy.
"""

from .build import build_tiny_model
from .cache import BuildCache
from .publish import publish_tiny_model
from .specs import TINY_MODELS, TinyModelSpec, get_spec

__all__ = ["TINY_MODELS", "BuildCache", "TinyModelSpec", "build_tiny_model", "get_spec", "publish_tiny_model"]
