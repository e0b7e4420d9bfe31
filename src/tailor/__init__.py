"""tailor: customize a DeepSeek-family (or any local Hugging Face causal) language model on your own hardware."""

__version__ = "0.1.0"
