"""hirag-oz: a context and memory service for LLM agents.

    import hirag_oz

    with hirag_oz.open("./data") as hirag:
        hirag.store_context(text="User prefers dark mode", level="LongTerm")
        found = hirag.search_contexts(query="Which theme?", max_tokens=500)

`hirag_oz.Client("http://...")` has the same methods, over HTTP. Names are imported on
first use, so `import hirag_oz.client` loads neither the models nor the store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hirag_oz_client import errors

__version__ = "0.1.0"

_EXPORTS = {
    "open": "hirag_oz.service",
    "Hirag": "hirag_oz.service",
    "Client": "hirag_oz_client",
    "AsyncClient": "hirag_oz_client",
    "OPERATIONS": "hirag_oz_client",
    "models": "hirag_oz_client",
    "Settings": "hirag_oz.config",
    "load_settings": "hirag_oz.config",
    "Level": "hirag_oz.memory.levels",
    "HiRAG": "hirag_oz.memory.manager",
    "Context": "hirag_oz.memory.models",
    "NewContext": "hirag_oz.memory.models",
    "SearchResult": "hirag_oz.memory.models",
    "StoredRef": "hirag_oz.memory.models",
    "MaintenanceReport": "hirag_oz.memory.models",
    "parse_filter": "hirag_oz.store.filters",
}
_ERRORS = [name for name in errors.__all__ if name.endswith("Error")]
_EXPORTS.update(dict.fromkeys(_ERRORS, "hirag_oz_client.errors"))

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
    from hirag_oz.config import Settings as Settings
    from hirag_oz.config import load_settings as load_settings
    from hirag_oz.memory.levels import Level as Level
    from hirag_oz.memory.manager import HiRAG as HiRAG
    from hirag_oz.memory.models import Context as Context
    from hirag_oz.memory.models import MaintenanceReport as MaintenanceReport
    from hirag_oz.memory.models import NewContext as NewContext
    from hirag_oz.memory.models import SearchResult as SearchResult
    from hirag_oz.memory.models import StoredRef as StoredRef
    from hirag_oz.service import Hirag as Hirag
    from hirag_oz.service import open as open
    from hirag_oz.store.filters import parse_filter as parse_filter
    from hirag_oz_client import OPERATIONS as OPERATIONS
    from hirag_oz_client import AsyncClient as AsyncClient
    from hirag_oz_client import Client as Client
    from hirag_oz_client import models as models
    from hirag_oz_client.errors import *  # noqa: F403


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hirag_oz' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
