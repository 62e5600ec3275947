"""What route handlers take from the request: the app's service object and request checks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from hirag_oz.api.middleware import BODY_METHODS
from hirag_oz.errors import UnsupportedMediaTypeError
from hirag_oz.kernel.scope import Caller, caller_in
from hirag_oz.memory.manager import HiRAG
from hirag_oz.observability.metrics import Metrics
from hirag_oz.service import Hirag


def hirag_of(request: Request) -> Hirag:
    found: Hirag = request.app.state.hirag
    return found


def caller_of(request: Request) -> Caller:
    """Who sent the request: the key's caller, or (no keys configured) the trusted one."""
    return caller_in(request.scope)


A = TypeVar("A")
T = TypeVar("T")


async def embed_then(
    memory: HiRAG,
    submit: Callable[[A], Future[list[list[float]]]],
    arg: A,
    work: Callable[[list[list[float]] | None], T],
) -> T:
    """`work(vectors of arg)`, each part where it costs least.

    With a store whose calls hold the GIL (Qdrant Edge), the model runs on the embedder's
    thread (`submit`) and `work` (store calls, ranking) on the event loop: in a worker
    thread it would run nothing in parallel, and its two thread handoffs, each a wait for
    the GIL on a busy server, cost more than the work. A store that waits on the network
    is called from a worker thread, as is then the whole of `work`, which embeds when
    given None."""
    if memory.backend.parallel_queries != 1:
        return await run_in_threadpool(work, None)
    vectors: list[list[float]] = await asyncio.wrap_future(submit(arg))
    return work(vectors)


def metrics(request: Request) -> Metrics:
    found: Metrics = request.app.state.metrics
    return found


async def require_json(request: Request) -> None:
    """415 for a body that is not declared as JSON (a missing Content-Type included, so a
    browser cannot send a body without a CORS preflight). Async, as it only reads headers:
    FastAPI runs a plain function dependency on a worker thread."""
    if request.method not in BODY_METHODS:
        return
    declared = request.headers.get("content-type")
    if declared is None:
        if request.headers.get("content-length", "0") == "0" and not request.headers.get(
            "transfer-encoding"
        ):
            return  # no body at all: the schema check answers
        raise UnsupportedMediaTypeError(
            "a request body needs 'Content-Type: application/json'", {"content_type": None}
        )
    media = declared.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaTypeError(
            f"expected 'Content-Type: application/json', got {media!r}",
            {"content_type": media},
        )
