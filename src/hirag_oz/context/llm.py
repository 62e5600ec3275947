"""A summarizer over any OpenAI-compatible chat-completions endpoint."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from hirag_oz.resilience import CircuitBreaker, RetryPolicy
from hirag_oz.tokens import TokenCounter
from hirag_oz.upstream import JsonApi, MalformedResponse, endpoint_url, first_choice

SYSTEM = (
    "You maintain the running brief of a conversation between a user and an AI agent. "
    "You write compact notes, not prose, and never invent facts."
)
INSTRUCTIONS = (
    "Rewrite the notes below into one running brief of at most {target} tokens. Keep key "
    "decisions, evidence, constraints and open items, with names, numbers and dates. Drop "
    "greetings and repetition.{focus}\n\n"
)


def chat_endpoint(url: str) -> httpx.URL:
    """`http://h` -> `http://h/v1/chat/completions`, `http://h/v1` -> `http://h/v1/chat/completions`."""
    return endpoint_url(url, "/chat/completions", "summarizer endpoint")


class OpenAICompatibleSummarizer:
    """Asks a chat model for a running brief within a token target.

    Timeouts, connection errors, 5xx and 429 are retried with backoff (`max_retries`); the
    breaker cuts off an endpoint that keeps failing. The answer is checked against the
    target and cut if longer. A failure raises a `hirag_oz.errors` error, and the caller
    falls back to the extractive summarizer.
    """

    name = "llm"

    def __init__(
        self,
        endpoint: str,
        api_key: str | None,
        model: str,
        counter: TokenCounter,
        *,
        timeout_secs: float = 30.0,
        max_retries: int = 2,
        temperature: float = 0.2,
        breaker: CircuitBreaker | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.url = chat_endpoint(endpoint)
        self.model = model
        self.counter = counter
        self._api = JsonApi(self.url, api_key, "summarizer endpoint", timeout_secs)
        self._temperature = temperature
        self.breaker = breaker
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)

    def __repr__(self) -> str:
        return f"OpenAICompatibleSummarizer(model={self.model!r}, path={self.url.path!r})"

    def close(self) -> None:
        self._api.close()

    def summarize(self, texts: Sequence[str], target_tokens: int, query: str = "") -> str:
        notes = "\n\n---\n\n".join(t for t in texts if t.strip())
        if target_tokens <= 0 or not notes:
            return ""
        focus = f" What matters most now: {query.strip()}" if query.strip() else ""
        prompt = INSTRUCTIONS.format(target=target_tokens, focus=focus) + notes
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": prompt},
            ],
            "max_tokens": target_tokens,
            "temperature": self._temperature,
        }
        answer = self._api.post(body, _content, self.retry_policy, self.breaker)
        return self.counter.truncate(answer.strip(), target_tokens)


def _content(response: httpx.Response) -> str:
    content = first_choice(response)["message"].get("content")
    if not isinstance(content, str) or not content.strip():
        raise MalformedResponse("choices[0].message.content is not a non-empty string")
    return content
