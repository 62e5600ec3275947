"""A DeepSeek-OCR model behind an OpenAI-compatible chat endpoint, as a real HTTP server on
loopback: it decodes the image it is sent, answers like DeepSeek-OCR served by vLLM, records
requests, and can be told to misbehave."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from PIL import Image

from tests.fake_http import JsonHandler, serving

SECRET = "sk-ocr-SECRET-7"
READ_TEXT = "Revenue grew by 12%\nin the third quarter."
LOGPROBS = [-0.1, -0.2, -0.3]
GROUNDING = """<|ref|>title<|/ref|><|det|>[[100, 300, 500, 350]]<|/det|>
# Quarterly **Report**

<|ref|>text<|/ref|><|det|>[[100, 400, 900, 500]]<|/det|>
Revenue grew by 12%
in the third quarter.

<|ref|>image<|/ref|><|det|>[[100, 520, 500, 640]]<|/det|>


<|ref|>table<|/ref|><|det|>[[100, 650, 900, 700]]<|/det|>
<table><tr><td>Q3</td><td>12%</td></tr></table>
"""


@dataclass
class Seen:
    body: dict[str, Any]
    headers: dict[str, str]
    image: Image.Image
    prompt: str


@dataclass
class FakeOcr:
    """Answers per request from `script`, then `default`: ok, nologprobs, slow, 500,
    garbage. `delay` slows every answer; `in_flight`/`max_in_flight` count concurrent
    requests."""

    default: str = "ok"
    script: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    delay: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def sizes(self) -> list[tuple[int, int]]:
        return [s.image.size for s in self.seen]

    def enter(self, seen: Seen) -> str:
        with self.lock:
            self.seen.append(seen)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.script.pop(0) if self.script else self.default

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


def decode_request(body: dict[str, Any]) -> tuple[Image.Image, str]:
    parts = body["messages"][0]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    prompt = next(p["text"] for p in parts if p["type"] == "text")
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
    image.load()
    return image, prompt


def _handler(api: FakeOcr) -> type[BaseHTTPRequestHandler]:
    class Handler(JsonHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            image, prompt = decode_request(body)
            headers = {k.lower(): v for k, v in self.headers.items()}
            mode = api.enter(Seen(body, headers, image, prompt))
            try:
                status, payload = self._answer(mode, prompt)
            finally:
                # Out of flight before the answer is written: once the client has it, it may
                # send the next request at once.
                api.leave()
            self.send_json(status, payload)

        def _answer(self, mode: str, prompt: str) -> tuple[int, bytes]:
            if self.path != "/v1/chat/completions":
                return 404, b'{"error": {"message": "no such route"}}'
            time.sleep(api.delay)
            if mode == "slow":
                time.sleep(1.0)
            if mode == "500":
                return 500, b'{"error": {"message": "model overloaded"}}'
            if mode == "garbage":
                return 200, b"<html>not json"
            content = GROUNDING if "<|grounding|>" in prompt else READ_TEXT
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
            if mode != "nologprobs":
                choice["logprobs"] = {
                    "content": [
                        {"token": "t", "logprob": lp, "top_logprobs": []} for lp in LOGPROBS
                    ]
                }
            return 200, json.dumps({"choices": [choice]}).encode()

    return Handler


@contextmanager
def running_fake_ocr() -> Iterator[FakeOcr]:
    api = FakeOcr()
    with serving(_handler(api)) as port:
        api.port = port
        yield api
