"""qdaif: Quality-Diversity through AI Feedback, an open-ended search engine for text."""

__version__ = "0.2.0"
