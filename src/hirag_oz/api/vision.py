"""Routes over the vision service: /api/v1/vision/..."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from hirag_oz.api.deps import components, metrics, require_json
from hirag_oz.api.schemas import (
    ERROR_RESPONSES,
    ErrorBody,
    JobOut,
    VisionDecodeRequest,
    VisionDecodeResponse,
    VisionIndexRequest,
    VisionSearchRequest,
    VisionSearchResponse,
)
from hirag_oz.errors import UnsupportedMediaTypeError, ValidationError
from hirag_oz.vision.jobs import Job
from hirag_oz.vision.models import DecodedRegion
from hirag_oz.vision.service import RegionFilters, VisionService

router = APIRouter(prefix="/api/v1/vision", tags=["vision"], responses=ERROR_RESPONSES)

_UPLOAD_FIELDS = ("metadata", "force_reindex", "agent_id")
_INDEX_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": VisionIndexRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "metadata": {"type": "string", "description": "A JSON object."},
                        "force_reindex": {"type": "boolean"},
                        "agent_id": {"type": "string"},
                    },
                }
            },
        },
    }
}


def _vision(request: Request) -> VisionService:
    return components(request).vision


@router.post(
    "/index",
    status_code=202,
    response_model=JobOut,
    openapi_extra=_INDEX_BODY,
    responses={
        403: {"model": ErrorBody, "description": "The path or URL is not allowed."},
        502: {"model": ErrorBody, "description": "An upstream failed."},
    },
)
async def index_document(request: Request) -> dict[str, Any]:
    """Queue a document for indexing: JSON `{doc_url, ...}` or a multipart upload (`file`).
    Answers 202 with the job; poll `GET /api/v1/vision/index/jobs/{job_id}`."""
    vision = _vision(request)
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    with metrics(request).operation("vision_index"):
        if media == "multipart/form-data":
            job = await _submit_upload(request, vision)
        elif media == "application/json":
            body = _parse(VisionIndexRequest, await request.body())
            job = await run_in_threadpool(
                vision.submit_url,
                body.doc_url,
                agent_id=body.agent_id,
                metadata=body.metadata,
                force_reindex=body.force_reindex,
            )
        else:
            raise UnsupportedMediaTypeError(
                "send JSON (application/json) or an upload (multipart/form-data)",
                {"content_type": media or None},
            )
    return job_out(job)


async def _submit_upload(request: Request, vision: VisionService) -> Job:
    async with request.form(max_files=1, max_fields=len(_UPLOAD_FIELDS)) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ValidationError("the upload needs a file field named 'file'", {"field": "file"})
        unknown = sorted(k for k in form if k not in (*_UPLOAD_FIELDS, "file"))
        if unknown:
            raise ValidationError(f"unknown form field {unknown[0]!r}", {"field": unknown[0]})
        metadata = _form_metadata(form.get("metadata"))
        force = str(form.get("force_reindex") or "false").strip().lower()
        if force not in ("true", "false", "1", "0"):
            raise ValidationError("force_reindex must be true or false", {"field": "force_reindex"})
        agent = form.get("agent_id")
        data = await upload.read()
        return await run_in_threadpool(
            vision.submit_upload,
            data,
            upload.filename or "upload",
            agent_id=agent if isinstance(agent, str) else None,
            metadata=metadata,
            force_reindex=force in ("true", "1"),
        )


def _form_metadata(raw: object) -> dict[str, Any] | None:
    if raw is None or raw == "":
        return None
    try:
        value = json.loads(str(raw))
    except (ValueError, RecursionError):
        raise ValidationError("metadata must be a JSON object", {"field": "metadata"}) from None
    if not isinstance(value, dict):
        raise ValidationError("metadata must be a JSON object", {"field": "metadata"})
    return value


def _parse(model: type[VisionIndexRequest], raw: bytes) -> VisionIndexRequest:
    try:
        return model.model_validate_json(raw or b"null")
    except pydantic.ValidationError as exc:
        errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]
        raise RequestValidationError(errors) from None


JobId = Annotated[str, Path(description="The job id returned by POST /api/v1/vision/index.")]


@router.get("/index/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: JobId, request: Request) -> dict[str, Any]:
    """The job's status and progress; a failed job carries an error envelope."""
    return job_out(_vision(request).job(job_id))


@router.post("/search", response_model=VisionSearchResponse, dependencies=[Depends(require_json)])
def search_regions(body: VisionSearchRequest, request: Request) -> dict[str, Any]:
    """Regions ranked by hybrid (dense + BM25) similarity to the query."""
    f = body.filters
    filters = RegionFilters(
        doc_id=f.doc_id if f else None,
        page=f.page if f else None,
        types=tuple(f.type or ()) if f else (),
        metadata=f.metadata if f else None,
    )
    with metrics(request).operation("vision_search"):
        hits = _vision(request).search(
            body.query, body.top_k, agent_id=body.agent_id, filters=filters
        )
    return {
        "regions": [
            {**hit.region.to_dict(), "score": hit.score, "why_relevant": hit.why_relevant}
            for hit in hits
        ]
    }


@router.post(
    "/decode",
    response_model=VisionDecodeResponse,
    dependencies=[Depends(require_json)],
    responses={
        502: {"model": ErrorBody, "description": "The OCR backend failed."},
        503: {"model": ErrorBody, "description": "The OCR backend is unavailable."},
        504: {"model": ErrorBody, "description": "The OCR backend timed out."},
    },
)
def decode_regions(body: VisionDecodeRequest, request: Request) -> dict[str, Any]:
    """Each region's text at the fidelity, in the order of `region_ids`."""
    with metrics(request).operation("vision_decode"):
        results = _vision(request).decode(body.region_ids, body.fidelity, agent_id=body.agent_id)
    return decoded_out(results)


def decoded_out(results: Sequence[DecodedRegion]) -> dict[str, Any]:
    return {
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


def job_out(job: Job) -> dict[str, Any]:
    return {
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
