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
from hirag_oz.context.service import ContextBuilder

__all__ = [
    "Actions",
    "Allocation",
    "BuiltContext",
    "ChosenSnippet",
    "ContextBuilder",
    "ExtractiveSummarizer",
    "Priority",
    "Snippet",
    "Summarizer",
    "Turn",
    "build_context",
    "plan",
]
