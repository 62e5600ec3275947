"""The data routes, by hand: they stream whole dumps and write backups, which the
catalogue's one-request-one-response operations do not.

- `GET /api/v1/export?agent_id=&vectors=` streams the dump (`application/x-ndjson`).
- `POST /api/v1/import` takes a dump as the body (JSON Lines, gzip or not), stored to the
  data directory's disk as it arrives, then imported; answers the import's report.
- `POST /api/v1/backups` takes a backup of the running service; `GET /api/v1/backups`
  lists them.

They are for admin keys; an admin key limited to agents may export its agents' data only.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from hirag_oz.api.deps import caller_of, hirag_of
from hirag_oz.api.routes import ERROR_RESPONSES
from hirag_oz.archive import backup
from hirag_oz.archive import export as exporting
from hirag_oz.archive.load import import_dump
from hirag_oz.errors import InsufficientStorageError, PermissionDeniedError
from hirag_oz.kernel.disk import is_disk_full
from hirag_oz.kernel.ids import check_agent_id
from hirag_oz.service import Hirag

IMPORT_PATH = "/api/v1/import"
router = APIRouter(tags=["data"], responses=ERROR_RESPONSES)


@router.get("/api/v1/export", response_class=StreamingResponse)
def export_data(
    request: Request,
    agent_id: str | None = Query(None, description="Only this agent's data (default: all)."),
    vectors: bool = Query(True, description="Include the vectors."),
) -> StreamingResponse:
    """The dump of everything, or of one agent's data, as JSON Lines."""
    caller = caller_of(request)
    caller.require("admin", "export")
    hirag = hirag_of(request).tenant(caller.tenant)
    agent = caller.agent(check_agent_id(agent_id) if agent_id is not None else None)
    # The first line is made before the answer starts, so an error is still an envelope.
    lines = exporting.lines(hirag, agent_id=agent, vectors=vectors)
    first = next(lines)

    def stream() -> Any:
        yield first
        yield from lines

    return StreamingResponse(
        stream(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="hirag-oz-dump.jsonl"'},
    )


_DUMP_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A dump, JSON Lines, optionally gzip-compressed.",
        "content": {"application/x-ndjson": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(IMPORT_PATH, openapi_extra=_DUMP_BODY)
async def import_data(request: Request) -> JSONResponse:
    """Import the dump in the body (ids kept; sending it again resumes or changes nothing)."""
    hirag = _whole_service(request, "import")
    folder = Path(hirag.settings.server.data_dir) / "imports"
    spool = folder / f".upload-{uuid.uuid4().hex}.jsonl"
    try:
        await run_in_threadpool(_prepare, hirag, folder)
        with spool.open("wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
        report = await run_in_threadpool(import_dump, hirag, spool)
    except OSError as exc:
        if is_disk_full(exc):
            raise InsufficientStorageError(
                "the dump did not fit on the data directory's disk", {}
            ) from None
        raise
    finally:
        spool.unlink(missing_ok=True)
    return JSONResponse(report.to_dict())


def remove_stale_uploads(data_dir: Path) -> int:
    """Dumps an earlier server was receiving when it stopped: at start, none is in use."""
    removed = 0
    spools = [
        *(data_dir / "imports").glob(".upload-*.jsonl"),
        *data_dir.glob("tenants/*/imports/.upload-*.jsonl"),
    ]
    for spool in spools:
        spool.unlink(missing_ok=True)
        removed += 1
    return removed


def _whole_service(request: Request, what: str) -> Hirag:
    """The caller's tenant's service, for an admin key not limited to agents."""
    caller = caller_of(request)
    caller.require("admin", what)
    if caller.agents is not None:
        raise PermissionDeniedError(
            f"{what} is the whole tenant's: not for a key limited to agents", {}
        )
    return hirag_of(request).tenant(caller.tenant)


def _prepare(hirag: Hirag, folder: Path) -> None:
    hirag.disk.check()
    folder.mkdir(parents=True, exist_ok=True)


@router.post("/api/v1/backups", status_code=201)
async def create_backup(request: Request) -> JSONResponse:
    """Back the running service up: writes wait while the dump is written, reads go on."""
    made = await run_in_threadpool(backup.create, _whole_service(request, "a backup"))
    return JSONResponse(made.to_dict(), status_code=201)


@router.get("/api/v1/backups")
async def list_backups(request: Request) -> JSONResponse:
    """The backups, newest first."""
    found = await run_in_threadpool(backup.listed, _whole_service(request, "the backups"))
    return JSONResponse({"backups": [b.to_dict() for b in found]})
