"""One handler per catalogued operation: its request model in, its response model out.

Every surface (the library object, HTTP, MCP, the CLI) runs an operation through the
handler registered here under the operation's name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from hirag_oz.handlers import contexts, documents, facts, prompts, service, sessions

if TYPE_CHECKING:
    from hirag_oz.service import Hirag

Handler = Callable[["Hirag", Any], BaseModel]

HANDLERS: dict[str, Handler] = {
    "store_context": contexts.store_context,
    "store_contexts": contexts.store_contexts,
    "search_contexts": contexts.search_contexts,
    "get_context": contexts.get_context,
    "update_context": contexts.update_context,
    "delete_context": contexts.delete_context,
    "clear_contexts": contexts.clear_contexts,
    "build_context": prompts.build_context,
    "add_fact": facts.add_fact,
    "query_facts": facts.query_facts,
    "get_fact": facts.get_fact,
    "delete_fact": facts.delete_fact,
    "index_document": documents.index_document,
    "get_job": documents.get_job,
    "search_regions": documents.search_regions,
    "decode_regions": documents.decode_regions,
    "append_messages": sessions.append_messages,
    "session_context": sessions.session_context,
    "get_session": sessions.get_session,
    "list_sessions": sessions.list_sessions,
    "list_messages": sessions.list_messages,
    "update_brief": sessions.update_brief,
    "close_session": sessions.close_session,
    "delete_session": sessions.delete_session,
    "health": service.health,
}
