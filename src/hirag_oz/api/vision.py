"""The route of index_document, by hand: besides the JSON body of the catalogue, it takes
a document uploaded as multipart/form-data."""

from __future__ import annotations

import json
from typing import Any

import pydantic
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from hirag_oz.api.deps import caller_of, hirag_of
from hirag_oz.api.routes import ERROR_RESPONSES, json_response, run
from hirag_oz.errors import UnsupportedMediaTypeError, ValidationError
from hirag_oz.handlers.documents import job_out
from hirag_oz.kernel.scope import Caller, needed_role
from hirag_oz.vision.jobs import Job
from hirag_oz.vision.service import VisionService
from hirag_oz_client import catalogue as ops
from hirag_oz_client.models import ErrorBody, IndexDocumentRequest, JobOut

INDEX = ops.INDEX_DOCUMENT
router = APIRouter(tags=[INDEX.group], responses=ERROR_RESPONSES)

_UPLOAD_FIELDS = ("metadata", "force_reindex", "agent_id")
_INDEX_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": IndexDocumentRequest.model_json_schema()},
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


@router.post(
    INDEX.path,
    status_code=INDEX.status,
    response_model=JobOut,
    summary=INDEX.name,
    openapi_extra=_INDEX_BODY,
    responses={
        403: {"model": ErrorBody, "description": "The path or URL is not allowed."},
        502: {"model": ErrorBody, "description": "An upstream failed."},
    },
)
async def index_document(request: Request) -> Response:
    """Queue a document for indexing: JSON `{doc_url, ...}` or a multipart upload (`file`).
    Answers 202 with the job; poll `GET /api/v1/vision/index/jobs/{job_id}`."""
    hirag = hirag_of(request)
    caller = caller_of(request)
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        caller.require(needed_role(INDEX), INDEX.name)
        metrics = hirag.metrics
        tenant = hirag.tenant(caller.tenant)  # the caller's tenant's documents
        await run_in_threadpool(tenant.check_quota)
        if metrics is None:
            job = await _submit_upload(request, tenant.documents, caller)
        else:
            with metrics.operation(INDEX.name):
                job = await _submit_upload(request, tenant.documents, caller)
        return json_response(job_out(job), INDEX.status)
    if media == "application/json":
        body = _parse(IndexDocumentRequest, await request.body())
        return json_response(await run(hirag, INDEX, body, caller), INDEX.status)
    raise UnsupportedMediaTypeError(
        "send JSON (application/json) or an upload (multipart/form-data)",
        {"content_type": media or None},
    )


async def _submit_upload(request: Request, vision: VisionService, caller: Caller) -> Job:
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
        agent_id = caller.agent(agent if isinstance(agent, str) else None)
        data = await upload.read()
        return await run_in_threadpool(
            vision.submit_upload,
            data,
            upload.filename or "upload",
            agent_id=agent_id,
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


def _parse(model: type[IndexDocumentRequest], raw: bytes) -> IndexDocumentRequest:
    try:
        return model.model_validate_json(raw or b"null")
    except pydantic.ValidationError as exc:
        errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]
        raise RequestValidationError(errors) from None
