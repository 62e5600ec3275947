"""The prompt operation: the next model call's messages within the token budget."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from hirag_oz.context import Priority, Snippet, Turn
from hirag_oz.context.builder import BuiltContext
from hirag_oz.store.filters import parse_filter
from hirag_oz_client import models as m

if TYPE_CHECKING:
    from hirag_oz.service import Hirag


def build_context(hirag: Hirag, request: m.BuildContextRequest) -> m.BuildContextResponse:
    builder = hirag.prompts
    built = builder.build(
        request.query,
        system_prompt=request.system_prompt,
        agent_id=request.agent_id,
        session_id=request.session_id,
        user_id=request.user_id,
        running_brief=request.running_brief,
        recent_turns=[
            t if isinstance(t, str) else Turn(t.role, t.content) for t in request.recent_turns
        ],
        levels=request.levels,
        filters=parse_filter(request.filters),
        snippets=snippets_in(request),
        budget=request.budget.model_dump(exclude_none=True) if request.budget else None,
    )
    return built_out(hirag, built)


def snippets_in(request: m.BuildContextRequest | m.SessionContextRequest) -> list[Snippet]:
    return [
        Snippet(s.text, Priority.parse(s.priority), 1.0 if s.score is None else s.score)
        for s in request.snippets
    ]


def built_out(hirag: Hirag, built: BuiltContext) -> m.BuildContextResponse:
    """The wire form of a built prompt, observed in the metrics."""
    if hirag.metrics is not None:
        hirag.metrics.observe_build(built, hirag.prompts.summarizer.name)
        hirag.metrics.observe_budget(
            "build", built.allocation.prompt_tokens, built.allocation.max_total
        )
    return m.BuildContextResponse.model_validate(
        {
            "messages": built.messages,
            "system_prompt": built.system_prompt,
            "running_brief": built.running_brief,
            "recent_turns": [{"role": t.role, "content": t.content} for t in built.recent_turns],
            "snippets": [{**asdict(s), "priority": s.priority.label} for s in built.snippets],
            "allocation": asdict(built.allocation),
            "actions": asdict(built.actions),
        }
    )
