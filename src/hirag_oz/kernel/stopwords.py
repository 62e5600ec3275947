"""Words too common to say what a text is about.

Shared by the extractive summarizer (which sentences to keep) and region search (which
query terms to name in `why_relevant`), so both agree on what counts as a content word.
"""

from __future__ import annotations

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "so",
        "that",
        "the",
        "this",
        "to",
        "was",
        "we",
        "were",
        "with",
        "you",
        "your",
        "he",
        "she",
        "they",
        "them",
        "his",
        "her",
        "our",
        "my",
        "me",
        "not",
        "no",
        "do",
        "did",
        "done",
    ]
)
