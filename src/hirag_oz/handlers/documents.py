"""The documents operations: index jobs, region search, decode."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hirag_oz.vision.jobs import Job
from hirag_oz.vision.service import RegionFilters
from hirag_oz_client import models as m

if TYPE_CHECKING:
    from hirag_oz.service import Hirag

PROGRESS: ContextVar[Callable[[Job], None] | None] = ContextVar("index_progress", default=None)
"""Called after each page of an index_document with wait (MCP progress, a CLI bar)."""


def doc_url(given: str) -> str:
    """A URL; an absolute local path is read as its file:// URL."""
    if "://" not in given and Path(given).is_absolute():
        return Path(given).as_uri()
    return given


def index_document(hirag: Hirag, request: m.IndexDocumentRequest) -> m.JobOut:
    vision = hirag.documents
    options: dict[str, Any] = {
        "agent_id": request.agent_id,
        "metadata": request.metadata,
        "force_reindex": request.force_reindex,
    }
    url = doc_url(request.doc_url)
    if request.wait:
        job = vision.index_url(url, progress=PROGRESS.get(), **options)
    else:
        job = vision.submit_url(url, **options)
    return job_out(job)


def get_job(hirag: Hirag, request: m.GetJobRequest) -> m.JobOut:
    return job_out(hirag.documents.job(request.job_id, request.agent_id))


def search_regions(hirag: Hirag, request: m.SearchRegionsRequest) -> m.SearchRegionsResponse:
    f = request.filters
    filters = RegionFilters(
        doc_id=f.doc_id if f else None,
        page=f.page if f else None,
        types=tuple(f.type or ()) if f else (),
        metadata=f.metadata if f else None,
    )
    hits = hirag.documents.search(
        request.query, request.top_k, agent_id=request.agent_id, filters=filters
    )
    return m.SearchRegionsResponse.model_validate(
        {
            "regions": [
                {**hit.region.to_dict(), "score": hit.score, "why_relevant": hit.why_relevant}
                for hit in hits
            ]
        }
    )


def decode_regions(hirag: Hirag, request: m.DecodeRegionsRequest) -> m.DecodeRegionsResponse:
    results = hirag.documents.decode(
        request.region_ids, request.fidelity, agent_id=request.agent_id
    )
    return m.DecodeRegionsResponse.model_validate(
        {
            "results": [
                {
                    "region_id": r.region_id,
                    "text": r.text,
                    "fidelity": r.fidelity,
                    "confidence": r.confidence,
                    "tokens": r.tokens,
                    "backend": r.backend,
                }
                for r in results
            ]
        }
    )


def job_out(job: Job) -> m.JobOut:
    return m.JobOut.model_validate(
        {
            "job_id": job.job_id,
            "status": job.status,
            "doc_id": job.doc_id,
            "source": job.source_name,
            "progress": {"pages_done": job.pages_done, "pages_total": job.pages_total},
            "regions": job.regions,
            "reused": job.reused,
            "page_errors": job.page_errors,
            "error": job.error,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        }
    )
