"""hubquant: Hugging Face Hub models to validated quantized releases."""

__version__ = "0.1.0"
