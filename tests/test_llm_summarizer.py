"""The LLM summarizer against a real OpenAI-compatible HTTP server on loopback that can be
told to misbehave, alone and inside the context builder (where failures fall back)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from hirag_oz.config import TokenBudgetSettings
from hirag_oz.context import ExtractiveSummarizer, Turn, build_context
from hirag_oz.context.llm import OpenAICompatibleSummarizer, chat_endpoint
from hirag_oz.errors import UpstreamError, UpstreamTimeoutError
from hirag_oz.resilience import CircuitBreaker, CircuitOpenError, RetryPolicy
from hirag_oz.tokens import TokenCounter
from tests.fake_http import JsonHandler, serving

SECRET = "sk-test-SECRET-42"
SUMMARY = "Decided: ship Friday. Open: cache warmup. Owner: Alice."


@dataclass
class FakeChat:
    """Answers per request from `script`, then `default`: ok, slow, 500, 429, garbage, long,
    empty, hold (answers ok once `release` is set)."""

    default: str = "ok"
    script: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def mode(self, body: dict[str, Any], headers: dict[str, str]) -> str:
        with self.lock:
            self.bodies.append(body)
            self.headers.append(headers)
            return self.script.pop(0) if self.script else self.default


def _handler(api: FakeChat) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            mode = api.mode(body, {k.lower(): v for k, v in self.headers.items()})
            if self.path != "/v1/chat/completions":
                self.send_json(404, b'{"error": {"message": "no such route"}}')
                return
            if mode == "slow":
                time.sleep(1.0)
            if mode == "hold":
                api.release.wait(30)
            if mode == "500":
                self.send_json(500, b'{"error": {"message": "model overloaded"}}')
                return
            if mode == "429":
                self.send_json(429, b'{"error": {"message": "slow down"}}')
                return
            if mode == "garbage":
                self.send_json(200, b"<html>not json")
                return
            content = {"long": "word " * 2000, "empty": ""}.get(mode, SUMMARY)
            answer = {"choices": [{"message": {"role": "assistant", "content": content}}]}
            self.send_json(200, json.dumps(answer).encode())

    return Handler


@pytest.fixture
def chat() -> Iterator[FakeChat]:
    api = FakeChat()
    with serving(_handler(api)) as port:
        api.port = port
        yield api


def _summarizer(chat: FakeChat, counter: TokenCounter, **kw: Any) -> OpenAICompatibleSummarizer:
    kw.setdefault("retry_policy", RetryPolicy(max_retries=2, base_delay_secs=0.01))
    return OpenAICompatibleSummarizer(chat.url, SECRET, "brief-model", counter, **kw)


def test_the_endpoint_is_derived_from_a_base_url() -> None:
    assert str(chat_endpoint("http://h:1")) == "http://h:1/v1/chat/completions"
    assert str(chat_endpoint("http://h/v1/")) == "http://h/v1/chat/completions"
    assert str(chat_endpoint("http://h/v1/chat/completions")) == "http://h/v1/chat/completions"


def test_a_summary_from_the_model(chat: FakeChat, counter: TokenCounter) -> None:
    summary = _summarizer(chat, counter).summarize(
        ["turn one", "turn two"], 50, query="release date"
    )
    assert summary == SUMMARY
    body = chat.bodies[0]
    assert body["model"] == "brief-model" and body["max_tokens"] == 50
    assert "at most 50 tokens" in body["messages"][1]["content"]
    assert "release date" in body["messages"][1]["content"]
    assert chat.headers[0]["authorization"] == f"Bearer {SECRET}"


def test_no_key_means_no_header(chat: FakeChat, counter: TokenCounter) -> None:
    OpenAICompatibleSummarizer(chat.url, "", "m", counter).summarize(["x"], 10)
    assert "authorization" not in chat.headers[0]


def test_an_over_long_answer_is_cut_to_the_target(chat: FakeChat, counter: TokenCounter) -> None:
    chat.default = "long"
    summary = _summarizer(chat, counter).summarize(["notes"], 40)
    assert 0 < counter.count(summary) <= 40


def test_5xx_and_429_are_retried(chat: FakeChat, counter: TokenCounter) -> None:
    chat.script = ["500", "429"]
    assert _summarizer(chat, counter).summarize(["notes"], 40) == SUMMARY
    assert len(chat.bodies) == 3


def test_failures_raise_errors_without_the_key(chat: FakeChat, counter: TokenCounter) -> None:
    chat.default = "500"
    with pytest.raises(UpstreamError) as failed:
        _summarizer(chat, counter).summarize(["notes"], 40)
    assert "status 500 after 3 attempts" in failed.value.message
    assert SECRET not in failed.value.message
    chat.default = "garbage"
    with pytest.raises(UpstreamError, match="malformed summarizer endpoint response"):
        _summarizer(chat, counter).summarize(["notes"], 40)
    chat.default = "slow"
    with pytest.raises(UpstreamTimeoutError):
        _summarizer(chat, counter, timeout_secs=0.2, retry_policy=RetryPolicy(0)).summarize(
            ["notes"], 40
        )


def test_the_breaker_stops_calling_a_failing_endpoint(
    chat: FakeChat, counter: TokenCounter
) -> None:
    chat.default = "500"
    breaker = CircuitBreaker("summarizer", failure_threshold=2, reset_timeout_secs=60)
    llm = _summarizer(chat, counter, breaker=breaker, retry_policy=RetryPolicy(0))
    for _ in range(2):
        with pytest.raises(UpstreamError):
            llm.summarize(["notes"], 40)
    sent = len(chat.bodies)
    with pytest.raises(CircuitOpenError):
        llm.summarize(["notes"], 40)
    assert len(chat.bodies) == sent and breaker.state == "open"


@pytest.mark.parametrize("mode", ["ok", "500", "garbage", "empty"])
def test_the_builder_uses_the_model_or_falls_back(
    chat: FakeChat, counter: TokenCounter, mode: str
) -> None:
    chat.default = mode
    budget = TokenBudgetSettings(running_brief=60, recent_turns=30)
    turns = [Turn("user", f"Point {i}: the release needs item {i} done first.") for i in range(30)]
    built = build_context(
        counter=counter,
        summarizer=_summarizer(chat, counter),
        fallback=ExtractiveSummarizer(counter),
        budget=budget,
        system_prompt="sys",
        query="release",
        turns=turns,
    )
    assert built.actions.summarized is True
    assert built.actions.summarizer == ("llm" if mode == "ok" else "extractive")
    assert built.running_brief == SUMMARY if mode == "ok" else "Point" in built.running_brief
    assert 0 < counter.count(built.running_brief) <= 60
