"""A remote OCR engine: DeepSeek-OCR behind an OpenAI-compatible chat-completions endpoint
(as vLLM serves it).

DeepSeek-OCR reads an image through a fixed number of vision tokens that depends on the
resolution mode of the image it gets (model card): Tiny 512x512 = 64 tokens, Small
640x640 = 100, Base 1024x1024 = 256, Large 1280x1280 = 400. A fidelity "kx" asks for about
one vision token per k text tokens, so `read` estimates the text tokens of a region from its
pixel area, picks the smallest mode with enough vision tokens, and sends the region resized
into that mode's square. (vLLM applies its own configured image preprocessing, which may
rescale the square again; the pixels sent still bound what the model can read.) `lines` uses the model's grounding mode, whose answer gives a box
per layout item, and spreads each item's text over lines and words inside that box.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import threading
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import Image

from hirag_oz.errors import UnavailableError
from hirag_oz.resilience import CircuitBreaker, RetryPolicy
from hirag_oz.upstream import JsonApi, MalformedResponse, endpoint_url, first_choice
from hirag_oz.vision.models import (
    FIDELITIES,
    BBox,
    Fidelity,
    OcrLine,
    OcrText,
    OcrWord,
    compression,
)

DEFAULT_MODEL = "deepseek-ai/DeepSeek-OCR"

READ_PROMPT = "<image>\nFree OCR."
"""DeepSeek-OCR's plain OCR prompt: the text, no layout."""
GROUNDING_PROMPT = "<image>\n<|grounding|>Convert the document to markdown."
"""DeepSeek-OCR's grounding prompt: markdown with a `<|ref|>..<|det|>` box per layout item."""


@dataclass(frozen=True, slots=True)
class Mode:
    """A native resolution mode of DeepSeek-OCR: a square image of `size` pixels, read
    through `vision_tokens` tokens."""

    name: str
    size: int
    vision_tokens: int


TINY = Mode("tiny", 512, 64)
SMALL = Mode("small", 640, 100)
BASE = Mode("base", 1024, 256)
LARGE = Mode("large", 1280, 400)
MODES: tuple[Mode, ...] = (TINY, SMALL, BASE, LARGE)

# How many text tokens a region of one megapixel holds, for pages rendered at 200 dpi with
# body text of 11-12 pt. Such a line is about 1.2 x 11.5 pt = 13.8 pt = 38 px tall, and an
# average character about 0.5 em = 5.75 pt = 16 px wide: ~610 px^2 a character, ~1,600
# characters a megapixel, and at ~4 characters a token ~400 tokens. Headings, white space
# and larger type hold fewer, footnotes and dense tables more; it is an estimate for choosing
# a resolution mode, not a count.
TEXT_TOKENS_PER_MEGAPIXEL = 400.0

# Nominal OCR precision by compression ratio (text tokens / vision tokens), as reported on
# the Fox benchmark in the DeepSeek-OCR paper: ~97% below 10x, falling to ~60% at 20x. Used
# only when the server returns no token log-probabilities.
NOMINAL_PRECISION: dict[Fidelity, float] = {"1x": 0.99, "5x": 0.99, "10x": 0.97, "20x": 0.60}

# Output budget. vLLM rejects a request whose prompt (image tokens + prompt text) plus
# max_tokens exceed the model's context (8,192 for DeepSeek-OCR), so the cap leaves room for
# a Large image and the chat template.
MAX_OUTPUT_TOKENS = 7168
MIN_READ_TOKENS = 512
READ_TOKENS_PER_TEXT_TOKEN = 4
"""Headroom over the text-token estimate for `read`'s max_tokens: small or dense type."""

# vLLM request extras from its DeepSeek-OCR recipe: keep the grounding tags in the answer,
# and the n-gram repetition guard's per-request settings (<td>, </td> may repeat). A server
# that does not run the guard ignores `vllm_xargs`.
VLLM_EXTRAS: dict[str, Any] = {
    "skip_special_tokens": False,
    "vllm_xargs": {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": [128821, 128822]},
}

PAD_COLOR = (255, 255, 255)
_NORMALISED_MAX = 999.0
"""Grounding boxes are in 0..999 of the image the model saw."""


def chat_endpoint(url: str) -> httpx.URL:
    """`http://h` -> `http://h/v1/chat/completions`, `http://h/v1` -> `.../v1/chat/completions`."""
    return endpoint_url(url, "/chat/completions", "vision deepseek endpoint")


def estimate_text_tokens(width: int, height: int) -> float:
    """Text tokens in a region of `width` x `height` pixels (see TEXT_TOKENS_PER_MEGAPIXEL)."""
    return width * height / 1_000_000 * TEXT_TOKENS_PER_MEGAPIXEL


def choose_mode(width: int, height: int, fidelity: Fidelity) -> Mode:
    """The smallest mode with at least text_tokens / k vision tokens for fidelity "kx",
    capped at Large; "1x" is always Large."""
    k = compression(fidelity)
    if k == 1:
        return LARGE
    wanted = estimate_text_tokens(width, height) / k
    for mode in MODES:
        if mode.vision_tokens >= wanted:
            return mode
    return LARGE


def page_mode(width: int, height: int) -> Mode:
    """Base for a page that fits in 1024 pixels, else Large."""
    return BASE if max(width, height) <= BASE.size else LARGE


def nominal_precision(text_tokens: float, mode: Mode) -> float:
    """NOMINAL_PRECISION of the band holding the compression ratio actually sent."""
    ratio = text_tokens / mode.vision_tokens
    for fidelity in FIDELITIES:
        if ratio <= compression(fidelity):
            return NOMINAL_PRECISION[fidelity]
    return NOMINAL_PRECISION[FIDELITIES[-1]]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where an image went inside the square sent to the model."""

    size: int
    """The square's side."""
    left: int
    top: int
    scale_x: float
    scale_y: float
    width: int
    """The original image's width and height."""
    height: int

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """A point in the square -> the original image's pixels, clamped to it."""
        ox = (x - self.left) / self.scale_x
        oy = (y - self.top) / self.scale_y
        return min(max(ox, 0.0), float(self.width)), min(max(oy, 0.0), float(self.height))


def fit_to_square(image: Image.Image, size: int) -> tuple[Image.Image, Placement]:
    """`image` resized (aspect ratio kept) to fit a `size` square, centred on white."""
    rgb = image.convert("RGB")
    scale = min(size / rgb.width, size / rgb.height)
    new_w = min(size, max(1, round(rgb.width * scale)))
    new_h = min(size, max(1, round(rgb.height * scale)))
    resized = rgb.resize((new_w, new_h), Image.Resampling.LANCZOS)
    left, top = (size - new_w) // 2, (size - new_h) // 2
    square = Image.new("RGB", (size, size), PAD_COLOR)
    square.paste(resized, (left, top))
    placement = Placement(
        size, left, top, new_w / rgb.width, new_h / rgb.height, rgb.width, rgb.height
    )
    return square, placement


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass(frozen=True, slots=True)
class Answer:
    """The model's text and the geometric-mean token probability, if the server sent
    log-probabilities."""

    text: str
    token_confidence: float | None


class DeepSeekOcrEngine:
    """The OcrEngine port over a DeepSeek-OCR model served behind an OpenAI-compatible
    chat-completions endpoint.

    - `read(image, fidelity)` sends the region in the smallest resolution mode that keeps
      the fidelity's text-to-vision-token ratio (see `choose_mode`) with the "Free OCR."
      prompt.
    - `lines(image)` sends the page in Base or Large mode with the grounding prompt and maps
      the answer's item boxes back to the page's pixels; line and word boxes inside an item
      are even splits of the item's box (the model gives no finer geometry).
    - Confidence is the geometric mean of the answer's token probabilities
      (`logprobs: true`). Without log-probabilities it is the nominal precision of the
      compression ratio sent, from the DeepSeek-OCR paper (`NOMINAL_PRECISION`): a
      published average, not a measurement of this answer.

    At most `max_concurrency` requests are in flight at once (the engine is called from
    worker threads; a waiting call holds no connection, and a call keeps its slot across
    its retries). Timeouts, connection errors, 5xx
    and 429 are retried by the `RetryPolicy`; failures raise `UpstreamError` (502),
    `UnavailableError` (503, also for an open breaker) or `UpstreamTimeoutError` (504).
    A disabled engine raises `UnavailableError` without sending anything. `calls` counts
    every attempt sent, `failures` those that gave no valid answer.
    """

    name = "deepseek"

    def __init__(
        self,
        endpoint: str,
        api_key: str | None,
        model: str = DEFAULT_MODEL,
        *,
        timeout_secs: float = 60.0,
        max_retries: int = 2,
        max_concurrency: int = 4,
        breaker: CircuitBreaker | None = None,
        retry_policy: RetryPolicy | None = None,
        enabled: bool = True,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.url = chat_endpoint(endpoint)
        self.model = model
        self.enabled = enabled
        self.max_concurrency = max_concurrency
        self.breaker = breaker
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self._api = JsonApi(self.url, api_key, "DeepSeek OCR endpoint", timeout_secs)
        self._slots = threading.BoundedSemaphore(max_concurrency)

    def __repr__(self) -> str:
        return f"DeepSeekOcrEngine(model={self.model!r}, path={self.url.path!r})"

    @property
    def calls(self) -> int:
        return self._api.calls

    @property
    def failures(self) -> int:
        return self._api.failures

    def close(self) -> None:
        self._api.close()

    def read(self, image: Image.Image, fidelity: Fidelity) -> OcrText:
        self._check_enabled()
        mode = choose_mode(image.width, image.height, fidelity)
        square, _ = fit_to_square(image, mode.size)
        text_tokens = estimate_text_tokens(image.width, image.height)
        max_tokens = min(
            MAX_OUTPUT_TOKENS,
            max(MIN_READ_TOKENS, math.ceil(READ_TOKENS_PER_TEXT_TOKEN * text_tokens)),
        )
        answer = self._ask(square, READ_PROMPT, max_tokens, extras={})
        confidence = answer.token_confidence
        if confidence is None:
            confidence = nominal_precision(text_tokens, mode)
        return OcrText(answer.text.strip(), confidence)

    def lines(self, image: Image.Image) -> list[OcrLine]:
        self._check_enabled()
        mode = page_mode(image.width, image.height)
        square, placement = fit_to_square(image, mode.size)
        answer = self._ask(square, GROUNDING_PROMPT, MAX_OUTPUT_TOKENS, extras=VLLM_EXTRAS)
        confidence = answer.token_confidence
        if confidence is None:
            confidence = nominal_precision(estimate_text_tokens(image.width, image.height), mode)
        lines = parse_grounding(answer.text, placement, confidence)
        return sorted(lines, key=lambda line: (line.bbox.y, line.bbox.x))

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise UnavailableError("the DeepSeek OCR backend is disabled", {"backend": self.name})

    def _ask(
        self, image: Image.Image, prompt: str, max_tokens: int, extras: dict[str, Any]
    ) -> Answer:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": data_url(image)}},
                        {"type": "text", "text": prompt},
                    ],
                }
            ],
            "temperature": 0,
            "max_tokens": max_tokens,
            "logprobs": True,
            **extras,
        }
        with self._slots:
            return self._api.post(body, _answer, self.retry_policy, self.breaker)


def _answer(response: httpx.Response) -> Answer:
    choice = first_choice(response)
    content = choice["message"].get("content")
    if content is None:
        content = ""  # an empty image: nothing to read
    if not isinstance(content, str):
        raise MalformedResponse("choices[0].message.content is not a string")
    return Answer(content, _token_confidence(choice.get("logprobs")))


def _token_confidence(logprobs: Any) -> float | None:
    """exp(mean log-probability) of the answer's tokens: their geometric-mean probability."""
    entries = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(entries, list):
        return None
    values = [
        float(e["logprob"])
        for e in entries
        if isinstance(e, dict)
        and isinstance(e.get("logprob"), int | float)
        and not isinstance(e.get("logprob"), bool)
        and math.isfinite(e["logprob"])
    ]
    if not values:
        return None
    return min(1.0, max(0.0, math.exp(sum(values) / len(values))))


# ---- grounding answers ----

_ITEM = re.compile(r"<\|ref\|>(.*?)<\|/ref\|>\s*<\|det\|>(.*?)<\|/det\|>", re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# Layout labels of DeepSeek-OCR's grounding output. Another `ref` with no content after the
# box is the text itself (the "<|grounding|>OCR this image." style).
_LABELS = frozenset(
    {
        "text",
        "title",
        "sub_title",
        "table",
        "table_caption",
        "table_footnote",
        "image",
        "image_caption",
        "figure",
        "figure_caption",
        "equation",
        "formula",
        "code",
        "list",
        "header",
        "footer",
        "page_header",
        "page_footer",
        "footnote",
        "caption",
        "reference",
        "paragraph",
    }
)


def parse_grounding(text: str, placement: Placement, confidence: float) -> list[OcrLine]:
    """OcrLines from a grounding answer: one per text line of each item, in the item's
    order. Each item's box (0..999 of the square sent) is mapped back to the original
    image; its height is split evenly among its lines, and each line's width among its
    words by character count (spaces included). Items without text (figures) are skipped."""
    matches = list(_ITEM.finditer(text))
    out: list[OcrLine] = []
    for i, match in enumerate(matches):
        label = match.group(1).strip()
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        content = strip_markup(text[match.end() : end])
        if not content and label.lower() not in _LABELS:
            content = strip_markup(label)
        box = _item_box(match.group(2), placement)
        if box is None or not content:
            continue  # no whole box, or a figure (`image`) or other item without text
        out.extend(_item_lines(content.split("\n"), box, confidence))
    return out


def _item_box(det: str, placement: Placement) -> tuple[float, float, float, float] | None:
    """The union of an item's boxes in original pixels, or None without a whole box."""
    numbers = [float(n) for n in _NUMBER.findall(det)]
    boxes = [numbers[i : i + 4] for i in range(0, len(numbers) - 3, 4)]
    if not boxes:
        return None
    unit = placement.size / _NORMALISED_MAX
    x1 = min(min(b[0], b[2]) for b in boxes) * unit
    y1 = min(min(b[1], b[3]) for b in boxes) * unit
    x2 = max(max(b[0], b[2]) for b in boxes) * unit
    y2 = max(max(b[1], b[3]) for b in boxes) * unit
    left, top = placement.to_original(x1, y1)
    right, bottom = placement.to_original(x2, y2)
    if right - left < 0.5 or bottom - top < 0.5:
        return None
    return left, top, right, bottom


def _item_lines(
    texts: list[str], box: tuple[float, float, float, float], confidence: float
) -> list[OcrLine]:
    left, top, right, bottom = box
    step = (bottom - top) / len(texts)
    lines: list[OcrLine] = []
    for n, line_text in enumerate(texts):
        y1 = round(top + n * step)
        y2 = max(y1 + 1, round(top + (n + 1) * step))
        words = line_text.split()
        per_char = (right - left) / len(" ".join(words))
        ocr_words: list[OcrWord] = []
        before = 0
        for word in words:
            x1 = round(left + before * per_char)
            x2 = max(x1 + 1, round(left + (before + len(word)) * per_char))
            ocr_words.append(OcrWord(word, BBox(x1, y1, x2 - x1, y2 - y1), confidence))
            before += len(word) + 1
        x_left, x_right = round(left), max(round(left) + 1, round(right))
        lines.append(OcrLine(tuple(ocr_words), BBox(x_left, y1, x_right - x_left, y2 - y1)))
    return lines


_TABLE_ROW_END = re.compile(r"</tr\s*>|<br\s*/?>", re.IGNORECASE)
_TABLE_CELL_END = re.compile(r"</t[dh]\s*>", re.IGNORECASE)
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>")
# Special tokens: `<|ref|>` style, and DeepSeek's fullwidth-bar style (`<\uff5cend...\uff5c>`).
_SPECIAL = re.compile(r"<\|[^|<>]*\|>" "|<\uff5c[^\uff5c<>]*\uff5c>")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_BULLET = re.compile(r"^\s*[-*+]\s+")
_QUOTE = re.compile(r"^\s*>\s?")
_IMAGE_LINK = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"\*\*|__|~~|`")
_MATH_DELIMITER = re.compile(r"\\[()\[\]]|\$\$")


def strip_markup(text: str) -> str:
    """The plain text of a markdown/HTML fragment, one line per non-empty text line:
    headings, bullets, emphasis, links and math delimiters dropped, table cells separated
    by spaces and rows by newlines, HTML tags removed and entities decoded."""
    text = _SPECIAL.sub(" ", text)
    text = _TABLE_ROW_END.sub("\n", text)
    text = _TABLE_CELL_END.sub(" ", text)
    text = _TAG.sub("", text)
    text = _IMAGE_LINK.sub("", text)
    text = _LINK.sub(r"\1", text)
    lines: list[str] = []
    for raw in text.split("\n"):
        if _TABLE_RULE.match(raw):
            continue
        line = _HEADING.sub("", raw)
        line = _QUOTE.sub("", line)
        line = _BULLET.sub("", line)
        line = _EMPHASIS.sub("", line)
        line = _MATH_DELIMITER.sub(" ", line)
        line = line.replace("|", " ")
        line = " ".join(html.unescape(line).split())
        if line:
            lines.append(line)
    return "\n".join(lines)
