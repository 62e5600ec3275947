"""Assembling a prompt that fits the token budget: system prompt, running brief, retrieved
snippets and recent turns, each within its slot, with room left for the completion."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from hirag_oz.config import TokenBudgetSettings
from hirag_oz.errors import ValidationError
from hirag_oz.tokens import TokenCounter

logger = logging.getLogger(__name__)

# The chat format's own tokens (OpenAI's cl100k accounting): each message costs its content
# plus 4 (role and delimiters), and the reply is primed with 3 more.
MESSAGE_OVERHEAD = 4
REPLY_OVERHEAD = 3
# A snippet cut to fit keeps at least this many tokens, or it is dropped instead.
MIN_USEFUL_TOKENS = 32
BRIEF_HEADER = "Running brief:\n"
CONTEXT_HEADER = "Retrieved context:\n"


class Priority(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: str | int | Priority) -> Priority:
        if isinstance(value, Priority):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValidationError(
                f"priority must be one of Low, Medium, High, Critical (got {value!r})",
                {"field": "priority"},
            ) from None

    @property
    def label(self) -> str:
        return self.name.capitalize()


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True)
class Snippet:
    """A piece of context offered to the prompt: retrieved, or given by the caller."""

    text: str
    priority: Priority = Priority.MEDIUM
    score: float = 1.0
    id: str | None = None
    level: str | None = None
    source: str = "caller"


@dataclass(frozen=True)
class ChosenSnippet:
    text: str
    token_count: int
    priority: Priority
    score: float
    id: str | None
    level: str | None
    source: str
    truncated: bool = False


@dataclass(frozen=True)
class Allocation:
    """Tokens used per slot (measured, not the caps), the completion reserve, and the prompt."""

    system_tokens: int
    running_brief: int
    recent_turns: int
    retrieved_context: int
    completion: int
    prompt_tokens: int
    max_total: int
    remaining: int
    # Tokens of the system prompt beyond its slot, taken from the other slots.
    system_overflow: int


@dataclass
class Actions:
    summarized: bool = False
    summarizer: str | None = None
    folded_turns: int = 0
    # Turns left out entirely: only when the slots fill max_total and the chat format's own
    # tokens leave no room once the snippets and the brief are gone.
    dropped_turns: int = 0
    dropped_snippets: int = 0
    truncated_snippets: int = 0
    brief_truncated: bool = False


@dataclass
class BuiltContext:
    messages: list[dict[str, str]]
    system_prompt: str
    running_brief: str
    recent_turns: list[Turn]
    snippets: list[ChosenSnippet]
    allocation: Allocation
    actions: Actions = field(default_factory=Actions)


class Summarizer(Protocol):
    name: str

    def summarize(self, texts: Sequence[str], target_tokens: int, query: str = "") -> str: ...


@dataclass(frozen=True)
class Caps:
    """What each slot may hold for one build, once the system prompt is measured."""

    system_tokens: int
    running_brief: int
    recent_turns: int
    retrieved_context: int
    prompt: int
    system_overflow: int


def plan(budget: TokenBudgetSettings, system_tokens: int) -> Caps:
    """The slot caps for a system prompt of `system_tokens`.

    A system prompt over its slot is never cut: the excess comes out of the retrieved slot,
    then the brief, then the turns. Only a system message that does not fit next to the
    completion reserve is an error.
    """
    prompt = budget.max_total - budget.completion
    if system_tokens + MESSAGE_OVERHEAD + REPLY_OVERHEAD > prompt:
        raise ValidationError(
            f"the system prompt ({system_tokens} tokens, {MESSAGE_OVERHEAD + REPLY_OVERHEAD} "
            f"more in the chat format) and the completion reserve ({budget.completion}) do "
            f"not fit in max_total ({budget.max_total})",
            {
                "system_tokens": system_tokens,
                "completion": budget.completion,
                "max_total": budget.max_total,
            },
        )
    overflow = max(0, system_tokens - budget.system_tokens)
    rest = overflow
    caps = []
    for slot in (budget.retrieved_context, budget.running_brief, budget.recent_turns):
        taken = min(slot, rest)
        caps.append(slot - taken)
        rest -= taken
    retrieved, brief, turns = caps
    return Caps(system_tokens, brief, turns, retrieved, prompt, overflow)


def build_context(
    *,
    counter: TokenCounter,
    summarizer: Summarizer,
    fallback: Summarizer,
    budget: TokenBudgetSettings,
    system_prompt: str,
    query: str = "",
    running_brief: str = "",
    turns: Sequence[Turn] = (),
    snippets: Sequence[Snippet] = (),
    retrieve: Callable[[int], Sequence[Snippet]] | None = None,
) -> BuiltContext:
    """A prompt within `budget`: every slot within its cap, and all messages, with their chat
    format tokens, within max_total minus the completion reserve.

    `retrieve(max_tokens)` is asked for snippets to fill the retrieved slot; they join
    `snippets`. Turns that do not fit their slot are folded into the brief, oldest first; a
    brief over its slot is summarized (by `summarizer`, by `fallback` when that fails) and
    cut by tokens as a last resort.
    """
    caps = plan(budget, counter.count(system_prompt))
    actions = Actions()
    offered = list(snippets)
    if retrieve is not None and caps.retrieved_context > 0:
        offered.extend(retrieve(caps.retrieved_context))
    chosen = _choose_snippets(counter, offered, caps.retrieved_context, actions)
    kept, folded = _split_turns(counter, list(turns), caps.recent_turns)
    actions.folded_turns = len(folded)
    brief = _brief(counter, summarizer, fallback, running_brief, folded, caps, query, actions)

    messages = _messages(system_prompt, brief, chosen, kept)
    prompt_tokens = _prompt_tokens(counter, messages)
    # The slots leave room for the chat format's own tokens unless they fill max_total; then
    # the format's tokens come out of the snippets, the brief, the older turns, the newest.
    while prompt_tokens > caps.prompt:
        excess = prompt_tokens - caps.prompt
        if chosen:
            chosen.pop()
            actions.dropped_snippets += 1
        elif brief:
            brief = counter.truncate(brief, max(0, counter.count(brief) - excess))
            actions.brief_truncated = True
        elif len(kept) > 1:
            kept.pop(0)
            actions.dropped_turns += 1
        elif kept:
            newest = kept[0]
            content = counter.keep_end(newest.content, counter.count(newest.content) - excess)
            kept = [Turn(newest.role, content)] if content else []
        else:  # pragma: no cover - plan() guarantees the system message fits
            break
        messages = _messages(system_prompt, brief, chosen, kept)
        prompt_tokens = _prompt_tokens(counter, messages)

    allocation = Allocation(
        system_tokens=caps.system_tokens,
        running_brief=counter.count(brief),
        recent_turns=sum(counter.count(t.content) for t in kept),
        retrieved_context=sum(s.token_count for s in chosen),
        completion=budget.completion,
        prompt_tokens=prompt_tokens,
        max_total=budget.max_total,
        remaining=budget.max_total - budget.completion - prompt_tokens,
        system_overflow=caps.system_overflow,
    )
    return BuiltContext(messages, system_prompt, brief, kept, chosen, allocation, actions)


def _choose_snippets(
    counter: TokenCounter, offered: list[Snippet], cap: int, actions: Actions
) -> list[ChosenSnippet]:
    """Greedy by priority, then score: skip what does not fit and go on; then cut the best
    snippet left out into the room that remains, when that keeps something useful."""
    ranked = sorted(offered, key=lambda s: (-s.priority, -s.score))
    chosen: list[ChosenSnippet] = []
    left_out: list[Snippet] = []
    used = 0
    seen: set[str] = set()
    for s in ranked:
        if s.id is not None:
            if s.id in seen:  # offered twice (retrieved, and led to by a summary)
                continue
            seen.add(s.id)
        tokens = counter.count(s.text)
        if tokens and used + tokens <= cap:
            chosen.append(_chosen(s, s.text, tokens))
            used += tokens
        elif tokens:
            left_out.append(s)
    room = cap - used
    if left_out and room >= MIN_USEFUL_TOKENS:
        best = left_out.pop(0)
        text = counter.truncate(best.text, room)
        chosen.append(_chosen(best, text, counter.count(text), truncated=True))
        actions.truncated_snippets += 1
        chosen.sort(key=lambda c: (-c.priority, -c.score))
    actions.dropped_snippets += len(left_out)
    return chosen


def _chosen(s: Snippet, text: str, tokens: int, truncated: bool = False) -> ChosenSnippet:
    return ChosenSnippet(text, tokens, s.priority, s.score, s.id, s.level, s.source, truncated)


def _split_turns(
    counter: TokenCounter, turns: list[Turn], cap: int
) -> tuple[list[Turn], list[Turn]]:
    """The newest turns that fit `cap` (the newest always, cut from the front if it alone is
    too long), and the older ones, to fold into the brief."""
    if not turns or cap <= 0:
        return [], turns
    newest = turns[-1]
    content = counter.keep_end(newest.content, cap)
    kept = [Turn(newest.role, content)] if content else []
    used = counter.count(content)
    start = len(turns) - 1
    while start > 0:
        tokens = counter.count(turns[start - 1].content)
        if used + tokens > cap:
            break
        used += tokens
        start -= 1
    return turns[start:-1] + kept, turns[:start]


def _brief(
    counter: TokenCounter,
    summarizer: Summarizer,
    fallback: Summarizer,
    running_brief: str,
    folded: list[Turn],
    caps: Caps,
    query: str,
    actions: Actions,
) -> str:
    parts = [running_brief] if running_brief.strip() else []
    parts += [f"{t.role}: {t.content}" for t in folded]
    brief = "\n".join(parts)
    cap = caps.running_brief
    if counter.count(brief) <= cap:
        return brief
    actions.summarized = True
    try:
        summary = summarizer.summarize(parts, cap, query)
        actions.summarizer = summarizer.name
    except Exception:
        logger.warning("summarizer %s failed; using %s", summarizer.name, fallback.name)
        summary = fallback.summarize(parts, cap, query)
        actions.summarizer = fallback.name
    if counter.count(summary) > cap:
        summary = counter.truncate(summary, cap)
        actions.brief_truncated = True
    return summary


def _messages(
    system_prompt: str, brief: str, chosen: list[ChosenSnippet], turns: list[Turn]
) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}]
    if brief:
        messages.append({"role": "system", "content": BRIEF_HEADER + brief})
    if chosen:
        body = "\n\n".join(f"[{i}] {c.text}" for i, c in enumerate(chosen, start=1))
        messages.append({"role": "system", "content": CONTEXT_HEADER + body})
    messages.extend({"role": t.role, "content": t.content} for t in turns)
    return messages


def _prompt_tokens(counter: TokenCounter, messages: list[dict[str, Any]]) -> int:
    return sum(counter.count(m["content"]) + MESSAGE_OVERHEAD for m in messages) + REPLY_OVERHEAD
