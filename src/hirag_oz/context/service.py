"""Building a prompt over the memory: retrieval fills the retrieved slot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from hirag_oz.config import TokenBudgetSettings
from hirag_oz.context.builder import (
    BuiltContext,
    Priority,
    Snippet,
    Summarizer,
    Turn,
    build_context,
)
from hirag_oz.context.extractive import ExtractiveSummarizer
from hirag_oz.errors import ValidationError
from hirag_oz.kernel.ids import DEFAULT_AGENT
from hirag_oz.kernel.validation import check_unicode
from hirag_oz.memory.manager import HiRAG
from hirag_oz.store.base import Filter
from hirag_oz.tokens import TokenCounter


class ContextBuilder:
    """`build()` answers "what do I send to the model now?" within the token budget.

    Retrieved contexts come in as Medium-priority snippets scored by their relevance (0-1);
    a caller's snippet without a score counts as 1.0, so at equal priority what the caller
    chose goes first.
    """

    def __init__(
        self,
        memory: HiRAG,
        counter: TokenCounter,
        budget: TokenBudgetSettings,
        summarizer: Summarizer | None = None,
    ) -> None:
        self.memory = memory
        self.counter = counter
        self.budget = budget
        self.fallback: Summarizer = ExtractiveSummarizer(counter)
        self.summarizer: Summarizer = summarizer or self.fallback

    def close(self) -> None:
        close = getattr(self.summarizer, "close", None)
        if close is not None:
            close()

    def build(
        self,
        query: str,
        *,
        system_prompt: str,
        agent_id: str | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        running_brief: str = "",
        recent_turns: Sequence[Turn | str] = (),
        levels: Sequence[str] | None = None,
        filters: Filter | None = None,
        snippets: Sequence[Snippet] = (),
        budget: Mapping[str, int] | None = None,
    ) -> BuiltContext:
        check_unicode(query, "query")
        check_unicode(system_prompt, "system_prompt")
        check_unicode(running_brief, "running_brief")
        for i, turn in enumerate(recent_turns):
            check_unicode(turn if isinstance(turn, str) else turn.content, f"recent_turns[{i}]")
        for i, snippet in enumerate(snippets):
            check_unicode(snippet.text, f"snippets[{i}].text")

        def retrieve(max_tokens: int) -> list[Snippet]:
            found = self.memory.search(
                query,
                max_tokens,
                levels=levels,
                agent_id=agent_id or DEFAULT_AGENT,
                session_id=session_id,
                user_id=user_id,
                filters=filters,
            )
            return [
                Snippet(
                    c.text,
                    Priority.MEDIUM,
                    c.relevance_score or 0.0,
                    id=c.id,
                    level=c.level.value,
                    source="retrieved",
                )
                for c in found.contexts
            ]

        return build_context(
            counter=self.counter,
            summarizer=self.summarizer,
            fallback=self.fallback,
            budget=self._budget(budget),
            system_prompt=system_prompt,
            query=query,
            running_brief=running_brief,
            turns=[Turn("user", t) if isinstance(t, str) else t for t in recent_turns],
            snippets=snippets,
            retrieve=retrieve if query.strip() else None,
        )

    def _budget(self, override: Mapping[str, int] | None) -> TokenBudgetSettings:
        """The configured slots with a request's own, validated by the same rules."""
        if not override:
            return self.budget
        merged: dict[str, Any] = {**self.budget.model_dump(), **override}
        try:
            return TokenBudgetSettings(**merged)
        except pydantic.ValidationError as exc:
            problems = [
                {"field": ".".join(["budget", *map(str, e["loc"])]), "message": e["msg"]}
                for e in exc.errors()
            ]
            message = "; ".join(p["message"] for p in problems)
            raise ValidationError(f"invalid budget: {message}", {"errors": problems}) from None
