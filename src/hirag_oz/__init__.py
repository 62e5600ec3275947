"""hirag-oz: a context and memory service for LLM agents."""

from hirag_oz.config import Settings, load_settings
from hirag_oz.errors import (
    BadRequestError,
    ConfigurationError,
    ConflictError,
    HiragError,
    NotFoundError,
    UnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
    ValidationError,
)
from hirag_oz.factory import build_memory, open_memory
from hirag_oz.memory.levels import Level
from hirag_oz.memory.manager import HiRAG
from hirag_oz.memory.models import Context, MaintenanceReport, NewContext, SearchResult, StoredRef
from hirag_oz.store.filters import parse_filter

__version__ = "0.1.0"

__all__ = [
    "BadRequestError",
    "ConfigurationError",
    "ConflictError",
    "Context",
    "HiRAG",
    "HiragError",
    "Level",
    "MaintenanceReport",
    "NewContext",
    "NotFoundError",
    "SearchResult",
    "Settings",
    "StoredRef",
    "UnavailableError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "ValidationError",
    "build_memory",
    "load_settings",
    "open_memory",
    "parse_filter",
]
