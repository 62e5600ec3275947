"""The dump: everything a service keeps, as JSON Lines, portable between versions and stores.

    {"type": "header", "format": "hirag-oz-dump", "version": 1, "dump_id": ..., ...}
    {"type": "point", "collection": "longterm", "id": ..., "payload": {...},
     "dense": "<base64>", "sparse": {"indices": [...], "values": [...]}}
    {"type": "file", "path": "vision/pages/<doc>/1.png", "data": "<base64>"}
    {"type": "end", "points": {...}, "files": 12}

A point is a stored record as it is kept: a context (one collection per level), a fact, a
document region or a session record, with its payload whole (levels, timestamps, access
counts, metadata, validity, provenance, briefs and summaries). Its vectors are optional: a
dump without them, or made with another embedding model, is embedded again on import from
the text each kind embeds. `dense` is the vector's little-endian float32 values in base64 (as
OpenAI's embeddings API sends them with `encoding_format="base64"`): exact, and a quarter of
the size of the numbers written out; a list of numbers is read too. A file is one of the documents' files beside the store: page
images, document records, jobs and the uploads of unfinished jobs. The end line says the
dump is whole; a dump without it was cut short.

Written gzip-compressed when the file name ends in `.gz`; read either way (by its first
bytes).
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from hirag_oz.errors import ValidationError
from hirag_oz.facts.models import sentence
from hirag_oz.kernel.ids import is_uuid
from hirag_oz.store.base import SparseVec, StoredPoint
from hirag_oz.store.format import MIGRATIONS, VERSION

FORMAT = "hirag-oz-dump"
DUMP_VERSION = 1
MAX_LINE_BYTES = 96 * 1024 * 1024
"""A line holds one point or one file (an upload of up to `vision.max_document_mb`, in base64)."""

FILE_FOLDERS = ("pages", "docs", "jobs", "uploads")
"""The folders of `<data_dir>/vision` a dump carries."""

Payload = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """What a collection holds, what of a payload its vectors embed, and what must be there."""

    name: str
    suffix: str
    required: tuple[tuple[str, type | tuple[type, ...]], ...]
    text: Callable[[Payload], str] | None
    """The text the dense vector embeds; None: a constant vector (a session record)."""
    terms: Callable[[Payload], str] | None
    """The text of the BM25 vector; None: no terms."""


_NUMBER = (int, float)


def _fact_text(p: Payload) -> str:
    return sentence(p["subject"], p["predicate"], p["object"])


def _region_text(p: Payload) -> str:
    text = str(p.get("text", ""))
    return text if text.strip() else f"{p['type']} on page {p['page']}"


_CONTEXT = (
    ("text", str),
    ("agent_id", str),
    ("level", str),
    ("timestamp", _NUMBER),
    ("token_count", int),
)

KINDS: tuple[Kind, ...] = (
    Kind("context", "immediate", _CONTEXT, lambda p: p["text"], lambda p: p["text"]),
    Kind("context", "shortterm", _CONTEXT, lambda p: p["text"], lambda p: p["text"]),
    Kind("context", "longterm", _CONTEXT, lambda p: p["text"], lambda p: p["text"]),
    Kind(
        "fact",
        "facts",
        (
            ("subject", str),
            ("predicate", str),
            ("object", str),
            ("agent_id", str),
            ("hash", str),
            ("confidence", _NUMBER),
            ("observed_at", _NUMBER),
        ),
        _fact_text,
        _fact_text,
    ),
    Kind(
        "region",
        "regions",
        (
            ("agent_id", str),
            ("doc_id", str),
            ("page", int),
            ("bbox", dict),
            ("type", str),
            ("page_width", int),
            ("page_height", int),
        ),
        _region_text,
        lambda p: str(p.get("text", "")),
    ),
    Kind(
        "session", "sessions", (("agent_id", str), ("session_id", str), ("state", str)), None, None
    ),
)
BY_SUFFIX = {kind.suffix: kind for kind in KINDS}


def collection(prefix: str, kind: Kind) -> str:
    return f"{prefix}_{kind.suffix}"


def header(
    dump_id: str,
    created_at: float,
    agent_id: str | None,
    vectors: bool,
    model: str,
    dimension: int,
    applied: list[str],
) -> Payload:
    return {
        "type": "header",
        "format": FORMAT,
        "version": DUMP_VERSION,
        "dump_id": dump_id,
        "created_at": created_at,
        "scope": {"agent_id": agent_id},
        "vectors": vectors,
        "model": {"name": model, "dimension": dimension},
        "data_format": {"version": len(applied), "migrations": applied},
    }


def pack(vector: list[float]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def unpack(packed: str) -> list[float]:
    raw = base64.b64decode(packed, validate=True)
    if len(raw) % 4:
        raise ValueError("not float32 values")
    return np.frombuffer(raw, dtype="<f4").tolist()  # type: ignore[no-any-return]


def point_line(suffix: str, point: StoredPoint, vectors: bool) -> Payload:
    line: Payload = {
        "type": "point",
        "collection": suffix,
        "id": point.id,
        "payload": point.payload,
    }
    if vectors and point.dense is not None:
        line["dense"] = pack(point.dense)
    if vectors and point.sparse is not None:
        line["sparse"] = {"indices": point.sparse.indices, "values": point.sparse.values}
    return line


def file_line(path: str, data: bytes) -> Payload:
    return {"type": "file", "path": path, "data": base64.b64encode(data).decode("ascii")}


def encode(line: Payload) -> bytes:
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def check_header(line: Payload) -> Payload:
    """The header, if this version can read the dump it opens; else a ValidationError."""
    if line.get("type") != "header" or line.get("format") != FORMAT:
        raise ValidationError(
            "not a hirag-oz dump: the first line is not its header", {"field": "dump"}
        )
    if line.get("version") != DUMP_VERSION:
        raise ValidationError(
            f"the dump is in dump format {line.get('version')!r}; this version of hirag-oz "
            f"reads format {DUMP_VERSION}",
            {"dump_version": line.get("version"), "readable_version": DUMP_VERSION},
        )
    fmt = line.get("data_format")
    applied = fmt.get("migrations") if isinstance(fmt, dict) else None
    if not isinstance(applied, list) or not all(isinstance(m, str) for m in applied):
        raise ValidationError("the dump's header names no data format", {"field": "data_format"})
    unknown = sorted(set(applied) - set(MIGRATIONS))
    if unknown:
        raise ValidationError(
            f"the dump holds data in format {len(applied)}, newer than format {VERSION}, "
            f"which this version of hirag-oz reads (it does not know {', '.join(unknown)})",
            {"stored_format": len(applied), "readable_format": VERSION, "unknown": unknown},
        )
    if set(applied) != set(MIGRATIONS):
        # Every dump so far is of the one format there has been since dumps exist.
        raise ValidationError(
            f"the dump holds data in format {len(applied)}, older than format {VERSION}: "
            "import it with the version that wrote it, then export again",
            {"stored_format": len(applied), "readable_format": VERSION},
        )
    model = line.get("model")
    if not (
        isinstance(model, dict)
        and isinstance(model.get("name"), str)
        and isinstance(model.get("dimension"), int)
        and isinstance(line.get("dump_id"), str)
    ):
        raise ValidationError("the dump's header is incomplete", {"field": "header"})
    return line


class BadLine(ValueError):
    """A line of the dump that is skipped, with the reason."""


def check_point(line: Payload) -> tuple[Kind, StoredPoint]:
    """The kind and point of a point line; BadLine names what is wrong."""
    kind = BY_SUFFIX.get(str(line.get("collection")))
    if kind is None:
        raise BadLine(f"unknown collection {str(line.get('collection'))[:40]!r}")
    point_id, payload = line.get("id"), line.get("payload")
    if not isinstance(point_id, str) or not is_uuid(point_id) or not isinstance(payload, dict):
        raise BadLine(f"a {kind.name} needs a UUID id and an object payload")
    for field, types in kind.required:
        value = payload.get(field)
        if not isinstance(value, types) or isinstance(value, bool):
            raise BadLine(f"the {kind.name}'s payload lacks a valid {field!r}")
    dense = line.get("dense")
    if isinstance(dense, str):
        try:
            dense = unpack(dense)
        except ValueError:
            raise BadLine("dense is not base64 of float32 values") from None
    elif dense is not None and not (
        isinstance(dense, list)
        and all(isinstance(x, _NUMBER) and not isinstance(x, bool) for x in dense)
    ):
        raise BadLine("dense is neither base64 of float32 values nor a list of numbers")
    if dense is not None and not all(math.isfinite(x) for x in dense):
        raise BadLine("dense holds a value that is not a finite number")
    sparse = line.get("sparse")
    vec = None
    if sparse is not None:
        try:
            vec = SparseVec(
                [int(i) for i in sparse["indices"]], [float(v) for v in sparse["values"]]
            )
        except (TypeError, KeyError, ValueError):
            raise BadLine("sparse needs lists 'indices' and 'values'") from None
        if len(vec.indices) != len(vec.values):
            raise BadLine("sparse's indices and values differ in length")
        if not all(0 <= i < 2**32 for i in vec.indices) or not all(
            math.isfinite(v) for v in vec.values
        ):
            raise BadLine("sparse holds an index or value out of range")
    return kind, StoredPoint(point_id, payload, dense, vec)


def check_file(line: Payload) -> tuple[str, bytes]:
    """The relative path (under `vision/`) and bytes of a file line."""
    path, data = line.get("path"), line.get("data")
    if not isinstance(path, str) or not isinstance(data, str):
        raise BadLine("a file needs a string path and base64 data")
    parts = PurePosixPath(path).parts
    if (
        len(parts) < 3
        or parts[0] != "vision"
        or parts[1] not in FILE_FOLDERS
        or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
        or "\\" in path
    ):
        raise BadLine(f"the file path {path[:80]!r} is not one of the documents' files")
    try:
        return path, base64.b64decode(data, validate=True)
    except ValueError:
        raise BadLine("the file's data is not base64") from None


def open_dump(path: Path) -> IO[bytes]:
    """The dump at `path`, decompressed when it is gzip."""
    raw = path.open("rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    raw.seek(0)
    return raw


def lines(stream: IO[bytes]) -> Iterator[Payload | BadLine]:
    """Each line of `stream` as an object, or the BadLine of one that is not JSON."""
    while True:
        try:
            raw = stream.readline(MAX_LINE_BYTES + 1)
        except (gzip.BadGzipFile, EOFError, zlib.error):
            raise ValidationError("the dump is not valid gzip", {"field": "dump"}) from None
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES:
            raise ValidationError(
                f"a line of the dump is over {MAX_LINE_BYTES // (1024 * 1024)} MB",
                {"field": "dump"},
            )
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            yield BadLine("not JSON")
            continue
        yield value if isinstance(value, dict) else BadLine("not a JSON object")
