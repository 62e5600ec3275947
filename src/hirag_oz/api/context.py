"""The adaptive context route: /api/v1/context/build."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Request

from hirag_oz.api.deps import components, metrics, require_json
from hirag_oz.api.schemas import ERROR_RESPONSES, BuildRequest, BuildResponse
from hirag_oz.context import Priority, Snippet, Turn
from hirag_oz.store.filters import parse_filter

router = APIRouter(
    prefix="/api/v1/context",
    tags=["context"],
    responses=ERROR_RESPONSES,
    dependencies=[Depends(require_json)],
)


@router.post("/build", response_model=BuildResponse)
def build(body: BuildRequest, request: Request) -> dict[str, object]:
    """The messages to send to the model now: system prompt, running brief, retrieved
    context and recent turns, every slot within the token budget."""
    recorder = metrics(request)
    builder = components(request).context
    with recorder.operation("build"):
        built = builder.build(
            body.query,
            system_prompt=body.system_prompt,
            agent_id=body.agent_id,
            session_id=body.session_id,
            user_id=body.user_id,
            running_brief=body.running_brief,
            recent_turns=[
                t if isinstance(t, str) else Turn(t.role, t.content) for t in body.recent_turns
            ],
            levels=body.levels,
            filters=parse_filter(body.filters),
            snippets=[
                Snippet(s.text, Priority.parse(s.priority), 1.0 if s.score is None else s.score)
                for s in body.snippets
            ],
            budget=body.budget.model_dump(exclude_none=True) if body.budget else None,
        )
    recorder.observe_build(built, builder.summarizer.name)
    recorder.observe_budget("build", built.allocation.prompt_tokens, built.allocation.max_total)
    return {
        "messages": built.messages,
        "system_prompt": built.system_prompt,
        "running_brief": built.running_brief,
        "recent_turns": [{"role": t.role, "content": t.content} for t in built.recent_turns],
        "snippets": [{**asdict(s), "priority": s.priority.label} for s in built.snippets],
        "allocation": asdict(built.allocation),
        "actions": asdict(built.actions),
    }
