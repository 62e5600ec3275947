"""The adaptive context builder: a prompt that fits the token budget."""

from hirag_oz.context.builder import (
    Actions,
    Allocation,
    BuiltContext,
    ChosenSnippet,
    Priority,
    Snippet,
    Summarizer,
    Turn,
    build_context,
    plan,
)
from hirag_oz.context.extractive import ExtractiveSummarizer

__all__ = [
    "Actions",
    "Allocation",
    "BuiltContext",
    "ChosenSnippet",
    "ExtractiveSummarizer",
    "Priority",
    "Snippet",
    "Summarizer",
    "Turn",
    "build_context",
    "plan",
]
