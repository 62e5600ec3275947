"""The DeepSeek-OCR engine against a real OpenAI-compatible HTTP server on loopback that
decodes the image it is sent, answers like DeepSeek-OCR served by vLLM, records requests,
and can be told to misbehave."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from hirag_oz.errors import UnavailableError, UpstreamError, UpstreamTimeoutError, wire
from hirag_oz.resilience import CircuitBreaker, CircuitOpenError, RetryPolicy
from hirag_oz.vision.deepseek import (
    GROUNDING_PROMPT,
    NOMINAL_PRECISION,
    READ_PROMPT,
    DeepSeekOcrEngine,
    chat_endpoint,
    strip_markup,
)
from hirag_oz.vision.models import BBox
from tests.fake_ocr import LOGPROBS, READ_TEXT, SECRET, FakeOcr, running_fake_ocr


@pytest.fixture
def server() -> Iterator[FakeOcr]:
    with running_fake_ocr() as api:
        yield api


@pytest.fixture
def make_engine(server: FakeOcr) -> Iterator[Any]:
    engines: list[DeepSeekOcrEngine] = []

    def make(**kw: Any) -> DeepSeekOcrEngine:
        kw.setdefault("retry_policy", RetryPolicy(max_retries=2, base_delay_secs=0.01))
        engine = DeepSeekOcrEngine(server.url, SECRET, **kw)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def _image(width: int, height: int, color: int = 0) -> Image.Image:
    return Image.new("RGB", (width, height), (color, color, color))


def _gray(image: Image.Image, x: int, y: int) -> int:
    value = image.getpixel((x, y))
    assert isinstance(value, int)
    return value


def test_the_endpoint_is_derived_from_a_base_url() -> None:
    assert str(chat_endpoint("http://h:1")) == "http://h:1/v1/chat/completions"
    assert str(chat_endpoint("http://h/v1/")) == "http://h/v1/chat/completions"


def test_read_returns_the_text_and_the_logprob_confidence(
    server: FakeOcr, make_engine: Any
) -> None:
    engine = make_engine()
    out = engine.read(_image(600, 200), "10x")
    assert out.text == READ_TEXT
    assert out.confidence == pytest.approx(math.exp(sum(LOGPROBS) / len(LOGPROBS)))
    seen = server.seen[0]
    assert seen.prompt == READ_PROMPT
    assert seen.body["model"] == "deepseek-ai/DeepSeek-OCR"
    assert seen.body["temperature"] == 0 and seen.body["logprobs"] is True
    assert 0 < seen.body["max_tokens"] <= 7168
    assert seen.body["messages"][0]["content"][0]["type"] == "image_url"
    assert seen.headers["authorization"] == f"Bearer {SECRET}"
    assert engine.name == "deepseek" and engine.calls == 1 and engine.failures == 0


def test_fidelity_picks_the_resolution_mode_the_server_receives(
    server: FakeOcr, make_engine: Any
) -> None:
    engine = make_engine()
    region = _image(2000, 1000)  # 2 MP: ~800 text tokens
    for fidelity in ("1x", "5x", "10x", "20x"):
        engine.read(region, fidelity)
    # 1x: Large; 800/5 = 160 -> Base (256); 800/10 = 80 -> Small (100); 800/20 = 40 -> Tiny.
    assert server.sizes == [(1280, 1280), (1024, 1024), (640, 640), (512, 512)]
    engine.read(_image(400, 120), "20x")  # a small region
    engine.read(_image(400, 120), "1x")
    assert server.sizes[-2:] == [(512, 512), (1280, 1280)]
    # Aspect ratio kept, centred on white: 2000x1000 in 640 is 640x320 from y=160.
    small = server.seen[2].image.convert("L")
    assert _gray(small, 320, 320) < 30
    assert _gray(small, 320, 100) > 225 and _gray(small, 320, 540) > 225


def test_without_logprobs_the_confidence_is_nominal(server: FakeOcr, make_engine: Any) -> None:
    server.default = "nologprobs"
    engine = make_engine()
    # 2 MP (~800 text tokens) at 20x goes to Tiny (64 vision tokens): 12.5x -> the 20x band.
    assert engine.read(_image(2000, 1000), "20x").confidence == NOMINAL_PRECISION["20x"]
    # 0.08 MP (~32 text tokens) in Large: well under 5x.
    assert engine.read(_image(400, 200), "1x").confidence == NOMINAL_PRECISION["1x"]


def test_grounding_lines_are_mapped_back_to_the_original_pixels(
    server: FakeOcr, make_engine: Any
) -> None:
    engine = make_engine()
    lines = engine.lines(_image(2000, 1000, color=255))
    seen = server.seen[0]
    assert seen.prompt == GROUNDING_PROMPT and seen.image.size == (1280, 1280)
    assert seen.body["skip_special_tokens"] is False
    # Large square: scale 0.64, content 1280x640 from y=320. A normalised n maps to
    # x = n * 2000 / 999 and y = n * 2000 / 999 - 500 on the page.
    assert [line.text for line in lines] == [
        "Quarterly Report",
        "Revenue grew by 12%",
        "in the third quarter.",
        "Q3 12%",
    ]
    assert [line.bbox for line in lines] == [
        BBox(200, 101, 801, 100),  # title: [100, 300, 500, 350]
        BBox(200, 301, 1602, 100),  # first half of [100, 400, 900, 500]
        BBox(200, 401, 1602, 100),  # second half
        BBox(200, 801, 1602, 100),  # table: [100, 650, 900, 700]
    ]
    words = lines[1].words
    assert [w.text for w in words] == ["Revenue", "grew", "by", "12%"]
    # 19 characters over 1601.8 px: 84.3 px a character.
    assert words[0].bbox == BBox(200, 301, 590, 100)
    assert words[1].bbox.x == 875 and words[-1].bbox.right == 1802
    confidence = math.exp(sum(LOGPROBS) / len(LOGPROBS))
    assert all(w.confidence == pytest.approx(confidence) for line in lines for w in line.words)


def test_a_small_page_goes_in_base_mode(server: FakeOcr, make_engine: Any) -> None:
    server.default = "nologprobs"
    lines = make_engine().lines(_image(1000, 800, color=255))
    assert server.sizes == [(1024, 1024)]
    assert lines and all(w.confidence == NOMINAL_PRECISION["1x"] for w in lines[0].words)


def test_markup_is_stripped() -> None:
    assert strip_markup("## A **bold** [link](http://x) `code`") == "A bold link code"
    assert strip_markup("| a | b |\n|---|---|\n| 1 | 2 |") == "a b\n1 2"
    assert strip_markup("- item &amp; more\n\n\\(x^2\\)") == "item & more\nx^2"


def test_5xx_is_retried_then_succeeds(server: FakeOcr, make_engine: Any) -> None:
    server.script = ["500", "500"]
    engine = make_engine()
    assert engine.read(_image(300, 100), "5x").text == READ_TEXT
    assert len(server.seen) == 3 and engine.calls == 3 and engine.failures == 2


def test_persistent_5xx_is_an_upstream_error(server: FakeOcr, make_engine: Any) -> None:
    server.default = "500"
    with pytest.raises(UpstreamError) as failed:
        make_engine().read(_image(300, 100), "5x")
    assert type(failed.value) is UpstreamError
    assert wire(failed.value).status == 502 and failed.value.code == "UPSTREAM_ERROR"
    assert "status 500 after 3 attempts" in failed.value.message
    assert SECRET not in failed.value.message
    assert len(server.seen) == 3


def test_a_malformed_answer_is_an_upstream_error(server: FakeOcr, make_engine: Any) -> None:
    server.default = "garbage"
    with pytest.raises(UpstreamError, match="malformed DeepSeek OCR endpoint response"):
        make_engine(retry_policy=RetryPolicy(0)).lines(_image(300, 100))


def test_a_slow_server_times_out(server: FakeOcr, make_engine: Any) -> None:
    server.default = "slow"
    engine = make_engine(timeout_secs=0.2, retry_policy=RetryPolicy(0))
    with pytest.raises(UpstreamTimeoutError) as failed:
        engine.read(_image(300, 100), "10x")
    assert wire(failed.value).status == 504 and failed.value.code == "TIMEOUT"


def test_the_breaker_opens_and_stops_requests(server: FakeOcr, make_engine: Any) -> None:
    server.default = "500"
    breaker = CircuitBreaker("deepseek", failure_threshold=2, reset_timeout_secs=60)
    engine = make_engine(breaker=breaker, retry_policy=RetryPolicy(0))
    for _ in range(2):
        with pytest.raises(UpstreamError):
            engine.read(_image(300, 100), "10x")
    assert len(server.seen) == 2
    with pytest.raises(UnavailableError) as failed:
        engine.read(_image(300, 100), "10x")
    assert isinstance(failed.value, CircuitOpenError) and wire(failed.value).status == 503
    assert len(server.seen) == 2


def test_a_disabled_engine_sends_nothing(server: FakeOcr, make_engine: Any) -> None:
    engine = make_engine(enabled=False)
    with pytest.raises(UnavailableError, match="disabled") as failed:
        engine.read(_image(300, 100), "1x")
    assert wire(failed.value).status == 503
    with pytest.raises(UnavailableError):
        engine.lines(_image(300, 100))
    assert server.seen == [] and engine.calls == 0


def test_concurrency_is_bounded(server: FakeOcr, make_engine: Any) -> None:
    server.delay = 0.3
    engine = make_engine(max_concurrency=2)
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(engine.read(_image(300, 100), "10x").text)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors and results == [READ_TEXT] * 6
    assert len(server.seen) == 6
    assert server.max_in_flight == 2
