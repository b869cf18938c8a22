"""local-ai-router: an OpenAI-compatible gateway and agent harness for local models."""

__version__ = "0.1.0"

__all__ = ["__version__"]
