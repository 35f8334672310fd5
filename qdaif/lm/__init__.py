"""LM backends behind one batched interface: ``generate`` and ``score``."""

from qdaif.lm._base import LM, ScoreRequest, backend_names, make_lm, register_backend

__all__ = ["LM", "ScoreRequest", "backend_names", "make_lm", "register_backend"]
