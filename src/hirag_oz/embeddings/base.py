"""The Embedder port."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Protocol, runtime_checkable


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into dense vectors of a fixed `dimension`, in input order."""

    model_name: str

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


def submit(embedder: Embedder, texts: Sequence[str]) -> Future[list[list[float]]]:
    """`embedder.embed(texts)` as a future: from the embedder's own `submit` when it has one
    (it then runs on a thread of its own), else computed before this returns."""
    own = getattr(embedder, "submit", None)
    if own is not None:
        found: Future[list[list[float]]] = own(texts)
        return found
    done: Future[list[list[float]]] = Future()
    try:
        done.set_result(embedder.embed(texts))
    except Exception as exc:
        done.set_exception(exc)
    return done
