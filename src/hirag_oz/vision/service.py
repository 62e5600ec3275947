"""The vision service: index documents into regions as jobs, search regions, decode them."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cachetools import LRUCache, TTLCache
from PIL import Image

from hirag_oz.config import VisionSettings
from hirag_oz.embeddings.base import Embedder
from hirag_oz.errors import (
    HiragError,
    NotFoundError,
    UnavailableError,
    ValidationError,
    error_class,
)
from hirag_oz.kernel.disk import DiskGuard, is_disk_full
from hirag_oz.kernel.files import remove_partial_writes, write_atomic
from hirag_oz.kernel.fusion import fuse_hybrid
from hirag_oz.kernel.ids import check_agent_id, is_uuid
from hirag_oz.kernel.sparse_setup import open_hybrid_collections
from hirag_oz.kernel.stopwords import STOPWORDS
from hirag_oz.kernel.validation import check_metadata, check_text
from hirag_oz.store.base import (
    Condition,
    Distance,
    FieldType,
    Filter,
    PointRecord,
    StoredPoint,
    VectorStore,
)
from hirag_oz.store.filters import check_match
from hirag_oz.store.gate import WriteGate
from hirag_oz.tokens import TokenCounter
from hirag_oz.vision import documents, layout, sources
from hirag_oz.vision.jobs import (
    Interrupted,
    Job,
    JobQueue,
    JobStore,
    check_job_id,
    new_job_id,
    run_job,
)
from hirag_oz.vision.models import (
    FIDELITIES,
    REGION_TYPES,
    BBox,
    DecodedRegion,
    Fidelity,
    Region,
    RegionType,
)
from hirag_oz.vision.ocr import OcrEngine

logger = logging.getLogger(__name__)

REGION_INDEXES: dict[str, FieldType] = {
    "agent_id": "tenant",
    "doc_id": "keyword",
    "page": "integer",
    "type": "keyword",
}
MAX_QUERY_CHARS = 2000
MAX_TOP_K = 50
HYBRID_ALPHA = 0.7
CROP_MARGIN = 6
_REGION_NS = uuid.UUID("6f1d7a8e-93c2-4b8e-9b7e-2f0c1a4d5e60")
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_WORD = re.compile(r"[\w'][\w'.,-]*[\w]|\w")


class VisionObserver(Protocol):
    """Where the service reports what it did (the metrics, in the server)."""

    def job_finished(self, outcome: str) -> None: ...

    def page_done(self, outcome: str, seconds: float) -> None: ...

    def ocr(self, backend: str, fidelity: str, seconds: float) -> None: ...


@dataclass(frozen=True)
class RegionHit:
    region: Region
    score: float
    why_relevant: str


@dataclass(frozen=True)
class RegionFilters:
    doc_id: str | None = None
    page: int | None = None
    types: tuple[RegionType, ...] = ()
    metadata: dict[str, str | int | float | bool] | None = None


class DecodeCache:
    """Decoded texts by (region, fidelity, backend), with hit and miss counts."""

    def __init__(self, max_entries: int, ttl_secs: float) -> None:
        self._cache: TTLCache[tuple[str, str, str], DecodedRegion] = TTLCache(
            maxsize=max_entries, ttl=ttl_secs
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str, str]) -> DecodedRegion | None:
        with self._lock:
            found = self._cache.get(key)
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
            return found

    def put(self, key: tuple[str, str, str], value: DecodedRegion) -> None:
        with self._lock:
            self._cache[key] = value

    def drop_doc(self, region_ids: set[str]) -> None:
        with self._lock:
            for key in [k for k in self._cache if k[0] in region_ids]:
                self._cache.pop(key, None)

    def size(self) -> int:
        with self._lock:
            return len(self._cache)


class VisionService:
    """Documents indexed into regions in `<prefix>_regions`, page images and jobs under
    `<data_dir>/vision`. Jobs run on `settings.workers` threads."""

    def __init__(
        self,
        settings: VisionSettings,
        data_dir: Path,
        backend: VectorStore,
        embedder: Embedder,
        counter: TokenCounter,
        engine: OcrEngine | None,
        *,
        collection_prefix: str = "contexts",
        distance: Distance = "Cosine",
        observer: VisionObserver | None = None,
        start: bool = True,
        disk: DiskGuard | None = None,
        gate: WriteGate | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.embedder = embedder
        self.counter = counter
        self.engine = engine
        self.distance = distance
        self.observer = observer
        self.collection = f"{collection_prefix}_regions"
        self.sparse = open_hybrid_collections(
            backend, [self.collection], embedder.dimension, distance, REGION_INDEXES
        )
        root = Path(data_dir) / "vision"
        self.disk = disk or DiskGuard(Path(data_dir), 0)
        self.pages_dir = root / "pages"
        self.docs_dir = root / "docs"
        self.uploads_dir = root / "uploads"
        for folder in (self.pages_dir, self.docs_dir, self.uploads_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = settings.max_document_mb * 1024 * 1024
        self.cache = DecodeCache(settings.decode_cache_size, settings.decode_cache_ttl_secs)
        self._page_images: LRUCache[Path, Image.Image] = LRUCache(maxsize=4)
        self._page_lock = threading.Lock()
        # The files beside the store are written under the store's write gate, so a backup
        # copies them at the same instant as the collections.
        self.gate = gate or WriteGate()
        self.jobs = JobStore(root / "jobs", self.gate)
        self.queue = JobQueue(
            self.jobs,
            self._run,
            settings.workers,
            settings.max_pending_jobs,
            on_finished=self._finished,
        )
        if start:
            removed = self._remove_partial_writes()
            resumed = self.queue.resume()
            if resumed:
                logger.info("re-queued %d unfinished index jobs", len(resumed))
            removed += self._remove_stale_uploads(set(resumed))
            if removed:
                logger.info("removed %d file(s) left by an interrupted process", removed)

    def _remove_partial_writes(self) -> int:
        """What an earlier process was writing when it was killed (before jobs run again)."""
        removed = remove_partial_writes(self.jobs.folder)
        for folder in [*self.docs_dir.iterdir(), *self.pages_dir.iterdir()]:
            if folder.is_dir():
                removed += remove_partial_writes(folder)
        return removed

    def _remove_stale_uploads(self, unfinished: set[str]) -> int:
        """Uploads an earlier process kept for a job it never saved or that has finished."""
        removed = 0
        for upload in self.uploads_dir.glob("job_*.bin"):
            if upload.stem not in unfinished:
                upload.unlink(missing_ok=True)
                removed += 1
        return removed

    @property
    def engine_name(self) -> str | None:
        return self.engine.name if self.engine is not None else None

    def close(self) -> None:
        self.queue.close(wait=True)
        if self.engine is not None:
            self.engine.close()

    # ----------------------------------------------------------------------------- index
    def submit_url(
        self,
        doc_url: str,
        *,
        agent_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        force_reindex: bool = False,
    ) -> Job:
        """Queue the document at a file:// or http(s):// URL (checked now, read by the job)."""
        source = sources.parse_doc_url(
            doc_url, self.settings.allowed_paths, self.settings.allow_private_urls
        )
        if source.kind == "file" and Path(source.location).stat().st_size > self.max_bytes:
            raise sources.too_large(self.max_bytes)
        return self.queue.submit(self._new_job(source, agent_id, metadata, force_reindex))

    def submit_upload(
        self,
        data: bytes,
        filename: str,
        *,
        agent_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        force_reindex: bool = False,
    ) -> Job:
        """Queue an uploaded document; its bytes are kept until the job ends."""
        if len(data) > self.max_bytes:
            raise sources.too_large(self.max_bytes)
        documents.detect_kind(data)
        job_id = new_job_id()
        stored = self.uploads_dir / f"{job_id}.bin"
        source = sources.Source("upload", str(stored), Path(filename or "upload").name[:200])
        job = self._new_job(source, agent_id, metadata, force_reindex, job_id)
        try:
            stored.write_bytes(data)
        except OSError as exc:
            stored.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise self.disk.error(None) from exc
            raise
        try:
            return self.queue.submit(job)
        except HiragError:
            stored.unlink(missing_ok=True)
            raise

    def index_url(
        self,
        doc_url: str,
        *,
        agent_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        force_reindex: bool = False,
        progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Index the document at a file:// or http(s):// URL now, in this thread;
        `progress(job)` after each page."""
        source = sources.parse_doc_url(
            doc_url, self.settings.allowed_paths, self.settings.allow_private_urls
        )
        job = self._new_job(source, agent_id, metadata, force_reindex)
        save = self._saver(progress)
        if run_job(job, lambda: self._run(job, save), save):
            self._finished(job)
        return job

    def _saver(self, progress: Callable[[Job], None] | None) -> Callable[[Job], None]:
        def save(current: Job) -> None:
            self.jobs.save(current)
            if progress is not None:
                progress(current)

        return save

    def index_bytes(
        self,
        data: bytes,
        name: str,
        *,
        agent_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        force_reindex: bool = False,
        progress: Callable[[Job], None] | None = None,
    ) -> Job:
        """Index a document now, in this thread (the CLI); `progress(job)` after each page."""
        source = sources.Source("upload", "", Path(name).name[:200])
        job = self._new_job(source, agent_id, metadata, force_reindex)
        save = self._saver(progress)
        if run_job(job, lambda: self._index(job, data, save), save):
            self._finished(job)
        return job

    def job(self, job_id: str, agent_id: str | None = None) -> Job:
        """The job `job_id` (of `agent_id` when given: another agent's is not found)."""
        job = self.jobs.load(check_job_id(job_id))
        if agent_id is not None and job.agent_id != check_agent_id(agent_id):
            raise NotFoundError("no such job", {"job_id": job_id})
        return job

    def _new_job(
        self,
        source: sources.Source,
        agent_id: str | None,
        metadata: dict[str, Any] | None,
        force_reindex: bool,
        job_id: str | None = None,
    ) -> Job:
        # Every new job comes here first: none is taken while the disk is nearly full.
        self.disk.check()
        return Job(
            job_id=job_id or new_job_id(),
            status="queued",
            agent_id=check_agent_id(agent_id),
            source_kind=source.kind,
            source=source.location,
            source_name=source.name,
            metadata=check_metadata(metadata or {}),
            force_reindex=force_reindex,
            created_at=time.time(),
        )

    def _run(self, job: Job, save: Callable[[Job], None]) -> None:
        if job.source_kind == "file":
            data = sources.read_file(job.source, self.settings.allowed_paths, self.max_bytes)
        elif job.source_kind == "url":
            data = sources.download(
                job.source,
                max_bytes=self.max_bytes,
                timeout_secs=self.settings.download_timeout_secs,
                allow_private=self.settings.allow_private_urls,
            )
        else:
            try:
                data = Path(job.source).read_bytes()
            except FileNotFoundError:
                raise NotFoundError("the uploaded document is gone", {}) from None
        self._index(job, data, save)

    def _finished(self, job: Job) -> None:
        if job.source_kind == "upload" and job.source:
            Path(job.source).unlink(missing_ok=True)
        if self.observer is not None:
            outcome = "reused" if job.reused and job.status == "succeeded" else job.status
            self.observer.job_finished(outcome)

    def _index(self, job: Job, data: bytes, save: Callable[[Job], None]) -> None:
        kind = documents.detect_kind(data)
        doc_id = "doc_" + hashlib.sha256(data).hexdigest()[:32]
        job.doc_id = doc_id
        record_path = self._record_path(job.agent_id, doc_id)
        if record_path.exists() and not job.force_reindex:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            job.reused = True
            job.pages_total = job.pages_done = int(record.get("pages", 0))
            job.regions = int(record.get("regions", 0))
            save(job)
            return
        self._forget(job.agent_id, doc_id)
        total = documents.page_count(data, kind)
        if total > self.settings.max_pages:
            raise ValidationError(
                f"the document has {total} pages, more than vision.max_pages "
                f"({self.settings.max_pages})",
                {"pages": total, "max_pages": self.settings.max_pages},
            )
        job.pages_total, job.pages_done, job.regions, job.page_errors = total, 0, 0, []
        save(job)
        for page in documents.pages(data, kind, self.settings.render_dpi):
            if self.queue.closed:
                raise Interrupted()
            started = time.perf_counter()
            try:
                job.regions += self._index_page(job, doc_id, page)
                outcome = "ok"
            except HiragError as exc:
                job.page_errors.append({"page": page.number, **exc.to_dict()})
                outcome = "failed"
            except Exception as exc:
                logger.exception("page %d of job %s failed", page.number, job.job_id)
                job.page_errors.append(
                    {
                        "page": page.number,
                        "code": "INTERNAL_ERROR",
                        "message": f"the page could not be indexed: {type(exc).__name__}",
                        "details": {},
                    }
                )
                outcome = "failed"
            if self.observer is not None:
                self.observer.page_done(outcome, time.perf_counter() - started)
            job.pages_done += 1
            save(job)
        if total and len(job.page_errors) == total:
            first = job.page_errors[0]
            raise error_class(first.get("code", "INTERNAL_ERROR"))(
                f"every page failed ({total}); page 1: {first['message']}",
                {"page_errors": job.page_errors[:10]},
            )
        record = {
            "doc_id": doc_id,
            "agent_id": job.agent_id,
            "kind": kind,
            "pages": total,
            "regions": job.regions,
            "source_name": job.source_name,
            "metadata": job.metadata,
            "page_errors": [e["page"] for e in job.page_errors],
            "indexed_at": time.time(),
            "job_id": job.job_id,
        }
        record_path.parent.mkdir(parents=True, exist_ok=True)
        # Whole or absent after a crash: a partial record would fail every later job of
        # the same document.
        with self.gate.write():
            write_atomic(record_path, json.dumps(record, ensure_ascii=False).encode())

    def _index_page(self, job: Job, doc_id: str, page: documents.Page) -> int:
        image_path = self.pages_dir / doc_id / f"{page.number}.png"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        png = io.BytesIO()
        page.image.save(png, format="PNG")
        with self.gate.write():
            write_atomic(image_path, png.getvalue())
        lines = page.text_lines
        if lines is None:
            if self.engine is None:
                raise UnavailableError(
                    "no OCR engine is available for a page without a text layer", {}
                )
            started = time.perf_counter()
            lines = self.engine.lines(page.image)
            if self.observer is not None:
                self.observer.ocr(self.engine.name, "page", time.perf_counter() - started)
        blocks = layout.regions(lines, page.image)
        if not blocks:
            return 0
        texts = [block.text for block in blocks]
        vectors = self.embedder.embed(
            [
                t if t.strip() else f"{block.type} on page {page.number}"
                for t, block in zip(texts, blocks, strict=True)
            ]
        )
        records = []
        for index, (block, text, vector) in enumerate(zip(blocks, texts, vectors, strict=True)):
            region_id = str(
                uuid.uuid5(_REGION_NS, f"{job.agent_id}\x00{doc_id}\x00{page.number}\x00{index}")
            )
            payload = {
                "agent_id": job.agent_id,
                "doc_id": doc_id,
                "page": page.number,
                "bbox": block.bbox.to_dict(),
                "page_width": page.image.width,
                "page_height": page.image.height,
                "type": block.type,
                "text": text,
                "token_estimate": self.counter.count(text) if text else 0,
                "has_vt": True,
                "confidence": round(block.confidence, 4),
                "text_layer": page.text_lines is not None,
                "metadata": job.metadata,
                "source_name": job.source_name,
            }
            records.append(PointRecord(region_id, vector, self.sparse.document(text), payload))
        self.backend.upsert(self.collection, records)
        return len(records)

    def _record_path(self, agent_id: str, doc_id: str) -> Path:
        folder = hashlib.sha256(agent_id.encode()).hexdigest()[:16]
        return self.docs_dir / folder / f"{doc_id}.json"

    def _forget(self, agent_id: str, doc_id: str) -> None:
        """Remove an earlier indexing of the document by this agent."""
        flt = Filter(
            must=(Condition("agent_id", match=agent_id), Condition("doc_id", match=doc_id))
        )
        old = {p.id for p in self.backend.scroll(self.collection, flt, 100_000)}
        if old:
            self.backend.delete_by_filter(self.collection, flt)
            self.cache.drop_doc(old)
        self._record_path(agent_id, doc_id).unlink(missing_ok=True)

    # ----------------------------------------------------------------------------- search
    def search(
        self,
        query: str,
        top_k: int = 12,
        *,
        agent_id: str | None = None,
        filters: RegionFilters | None = None,
    ) -> list[RegionHit]:
        text = check_text(query, "query", MAX_QUERY_CHARS)
        if not 1 <= top_k <= MAX_TOP_K:
            raise ValidationError(f"top_k must be 1 to {MAX_TOP_K}", {"field": "top_k"})
        flt = self._filter(check_agent_id(agent_id), filters or RegionFilters())
        dense, sparse = self.backend.hybrid_search(
            self.collection,
            self.embedder.embed([text])[0],
            self.sparse.query(text),
            max(3 * top_k, 30),
            flt,
        )
        fused = fuse_hybrid(dense, sparse, HYBRID_ALPHA, self.distance)
        fused.sort(key=lambda pair: (-pair[1], pair[0].id))
        terms = _terms(text)
        return [
            RegionHit(
                _region(StoredPoint(hit.id, hit.payload)),
                round(score, 6),
                why_relevant(terms, str(hit.payload.get("text", ""))),
            )
            for hit, score in fused[:top_k]
        ]

    def _filter(self, agent_id: str, filters: RegionFilters) -> Filter:
        must: list[Condition | Filter] = [Condition("agent_id", match=agent_id)]
        if filters.doc_id is not None:
            must.append(Condition("doc_id", match=check_match(filters.doc_id, "filters.doc_id")))
        if filters.page is not None:
            must.append(Condition("page", match=check_match(filters.page, "filters.page")))
        if filters.types:
            unknown = [t for t in filters.types if t not in REGION_TYPES]
            if unknown:
                raise ValidationError(
                    f"unknown region type {unknown[0]!r}", {"allowed": list(REGION_TYPES)}
                )
            must.append(Condition("type", any_of=tuple(filters.types)))
        for key, value in (filters.metadata or {}).items():
            if not _METADATA_KEY.match(key):
                raise ValidationError(
                    "metadata filter keys are 1-64 letters, digits, '_' or '-'",
                    {"field": "filters.metadata", "key": key[:80]},
                )
            where = f"filters.metadata.{key}"
            must.append(Condition(f"metadata.{key}", match=check_match(value, where)))
        return Filter(must=tuple(must))

    # ----------------------------------------------------------------------------- decode
    def decode(
        self,
        region_ids: Sequence[str],
        fidelity: Fidelity | None = None,
        *,
        agent_id: str | None = None,
    ) -> list[DecodedRegion]:
        """Each region's text at `fidelity`, in the order asked (repeats included)."""
        chosen: Fidelity = fidelity or self.settings.default_fidelity
        if chosen not in FIDELITIES:
            raise ValidationError(
                f"fidelity must be one of {', '.join(FIDELITIES)}", {"field": "fidelity"}
            )
        limit = self.settings.max_regions_per_request
        if not 1 <= len(region_ids) <= limit:
            raise ValidationError(
                f"region_ids must hold 1 to {limit} ids", {"field": "region_ids", "max": limit}
            )
        agent = check_agent_id(agent_id)
        unique = list(dict.fromkeys(region_ids))
        # An id that is not a UUID string is reported missing, never sent to the store.
        valid = [rid for rid in unique if isinstance(rid, str) and is_uuid(rid)]
        found = {
            p.id: p
            for p in self.backend.retrieve(self.collection, valid)
            if p.payload.get("agent_id") == agent
        }
        missing = [rid for rid in unique if rid not in found]
        if missing:
            raise NotFoundError("no such region", {"region_ids": missing[:20]})
        decoded = {rid: self._decode_one(found[rid], chosen) for rid in unique}
        return [decoded[rid] for rid in region_ids]

    def _decode_one(self, point: StoredPoint, fidelity: Fidelity) -> DecodedRegion:
        payload = point.payload
        exact = fidelity == "1x" and bool(payload.get("text_layer"))
        backend = "text_layer" if exact else (self.engine_name or "none")
        key = (point.id, fidelity, backend)
        cached = self.cache.get(key)
        if cached is not None:
            return dataclasses.replace(cached, cached=True)
        if exact:
            text, confidence = str(payload.get("text", "")), 1.0
        else:
            if self.engine is None:
                raise UnavailableError("no OCR engine is available to decode regions", {})
            crop = self._crop(payload)
            started = time.perf_counter()
            read = self.engine.read(crop, fidelity)
            if self.observer is not None:
                self.observer.ocr(self.engine.name, fidelity, time.perf_counter() - started)
            text, confidence = read.text, read.confidence
        result = DecodedRegion(
            region_id=point.id,
            text=text,
            fidelity=fidelity,
            confidence=round(confidence, 4),
            tokens=self.counter.count(text) if text else 0,
            backend=backend,
        )
        self.cache.put(key, result)
        return result

    def _crop(self, payload: dict[str, Any]) -> Image.Image:
        path = self.pages_dir / str(payload["doc_id"]) / f"{int(payload['page'])}.png"
        with self._page_lock:
            image = self._page_images.get(path)
            if image is None:
                try:
                    with Image.open(path) as opened:
                        image = opened.convert("RGB")
                except FileNotFoundError:
                    raise NotFoundError(
                        "the region's page image is missing; index the document again",
                        {"doc_id": payload["doc_id"], "page": payload["page"]},
                    ) from None
                self._page_images[path] = image
        b = payload["bbox"]
        box = (
            max(0, b["x"] - CROP_MARGIN),
            max(0, b["y"] - CROP_MARGIN),
            min(image.width, b["x"] + b["w"] + CROP_MARGIN),
            min(image.height, b["y"] + b["h"] + CROP_MARGIN),
        )
        return image.crop(box)

    def count(self, agent_id: str | None = None) -> int:
        flt = None if agent_id is None else Filter(must=(Condition("agent_id", match=agent_id),))
        return self.backend.count(self.collection, flt)


def _region(point: StoredPoint) -> Region:
    p = point.payload
    b = p["bbox"]
    return Region(
        region_id=point.id,
        doc_id=p["doc_id"],
        page=int(p["page"]),
        bbox=BBox(int(b["x"]), int(b["y"]), int(b["w"]), int(b["h"])),
        page_width=int(p["page_width"]),
        page_height=int(p["page_height"]),
        type=p["type"],
        text=str(p.get("text", "")),
        token_estimate=int(p.get("token_estimate", 0)),
        has_vt=bool(p.get("has_vt", False)),
        confidence=float(p.get("confidence", 0.0)),
        text_layer=bool(p.get("text_layer", False)),
        metadata=dict(p.get("metadata") or {}),
    )


def _terms(query: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit()):
            seen.setdefault(word, None)
    return list(seen)


def why_relevant(terms: list[str], text: str, window: int = 12) -> str:
    """The query words found in the region and a quote of the words around the first."""
    words = text.split()
    lowered = [w.lower().strip(".,;:!?()[]\"'|") for w in words]
    matched = [t for t in terms if t in lowered]
    if not matched:
        quote = " ".join(words[:window])
        more = "…" if len(words) > window else ""
        return (
            f'similar in meaning, no query word in it: "{quote}{more}"'
            if quote
            else ("similar in meaning (a region without text)")
        )
    first = min(lowered.index(t) for t in matched)
    start = max(0, first - window // 3)
    quote = " ".join(words[start : start + window])
    before = "…" if start > 0 else ""
    after = "…" if start + window < len(words) else ""
    listed = ", ".join(f'"{t}"' for t in matched)
    return f'matches {listed}: "{before}{quote}{after}"'
