"""The local summarizer: picks whole sentences, and always meets its token target."""

from __future__ import annotations

import re
from collections.abc import Sequence

from hirag_oz.kernel.stopwords import STOPWORDS
from hirag_oz.tokens import TokenCounter

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"\w+")


class ExtractiveSummarizer:
    """Keeps the sentences that score best until the target is full, in their original order.

    A sentence scores by its overlap with the query, its novelty against the sentences already
    kept (a repeated fact adds nothing), and its position: later sentences are more recent in a
    running conversation, and the first sentence of the old brief carries its framing. When
    even the best sentence does not fit, it is cut to the target.
    """

    name = "extractive"

    def __init__(self, counter: TokenCounter) -> None:
        self.counter = counter

    def summarize(self, texts: Sequence[str], target_tokens: int, query: str = "") -> str:
        if target_tokens <= 0:
            return ""
        whole = "\n".join(t for t in texts if t.strip())
        if self.counter.count(whole) <= target_tokens:
            return whole
        sentences = [s.strip() for t in texts for s in _SENTENCE_END.split(t) if s.strip()]
        if not sentences:
            return ""
        query_words = _content_words(query)
        words = [_content_words(s) for s in sentences]
        tokens = [self.counter.count(s) for s in sentences]
        kept: list[int] = []
        seen: set[str] = set()
        used = 0
        remaining = set(range(len(sentences)))
        while remaining:
            best = max(
                remaining, key=lambda i: _score(i, len(sentences), words[i], query_words, seen)
            )
            remaining.discard(best)
            # Joined with a space, which may add a token.
            cost = tokens[best] + (1 if kept else 0)
            if used + cost > target_tokens:
                continue
            kept.append(best)
            used += cost
            seen |= words[best]
        if not kept:
            return self.counter.truncate(sentences[-1], target_tokens)
        summary = " ".join(sentences[i] for i in sorted(kept))
        # Token counts of joined text are not exactly the sum of their parts.
        return self.counter.truncate(summary, target_tokens)


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS}


def _score(index: int, total: int, words: set[str], query: set[str], seen: set[str]) -> float:
    if not words:
        return 0.0
    relevance = len(words & query) / len(query) if query else 0.0
    novelty = len(words - seen) / len(words)
    position = (index + 1) / total
    return 0.5 * relevance + 0.3 * novelty + 0.2 * position
