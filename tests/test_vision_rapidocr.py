"""RapidOcrEngine on English lines rendered with Pillow: accuracy, recovered spaces, line boxes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("rapidocr_onnxruntime")

from PIL import Image, ImageDraw, ImageFont

from hirag_oz.vision.models import FIDELITIES, BBox, Fidelity
from hirag_oz.vision.ocr import OcrEngine
from hirag_oz.vision.rapid import RapidOcrEngine, rapidocr_available

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
SIZE = 34
MARGIN = 20
LEADING = 54

SENTENCES = [
    "Invoice 4471 total amount due is 1,284.50 EUR.",
    "The quick brown fox jumps over the lazy dog.",
    "Please return the signed form by March 3, 2024.",
    "Memory levels store facts, episodes and summaries.",
    "Call support at 555-0199 if the page fails to load.",
]

pytestmark = pytest.mark.skipif(not FONT.exists(), reason="DejaVu Sans is not installed")


def _font() -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT), SIZE)


def _render(lines: list[str]) -> tuple[Image.Image, list[BBox]]:
    """Black lines on white, and the ink box Pillow drew each in."""
    font = _font()
    width = max(int(font.getlength(s)) for s in lines) + 2 * MARGIN
    height = (len(lines) - 1) * LEADING + SIZE + 2 * MARGIN
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    boxes = []
    for i, line in enumerate(lines):
        at = (MARGIN, MARGIN + i * LEADING)
        draw.text(at, line, fill="black", font=font)
        left, top, right, bottom = draw.textbbox(at, line, font=font)
        boxes.append(BBox(int(left), int(top), int(right - left), int(bottom - top)))
    return image, boxes


def _distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _accuracy(truth: str, read: str) -> float:
    return max(0.0, 1.0 - _distance(truth, read) / len(truth))


@pytest.fixture(scope="module")
def engine() -> Iterator[RapidOcrEngine]:
    eng = RapidOcrEngine()
    yield eng
    eng.close()


def test_available_and_a_port() -> None:
    assert rapidocr_available()
    port: OcrEngine = RapidOcrEngine()
    assert port.name == "rapidocr"
    port.close()


def test_reads_english_lines_at_1x_with_their_spaces(engine: RapidOcrEngine) -> None:
    accuracies, word_counts_right = [], 0
    for sentence in SENTENCES:
        image, _ = _render([sentence])
        out = engine.read(image, "1x")
        accuracies.append(_accuracy(sentence, out.text))
        word_counts_right += len(out.text.split()) == len(sentence.split())
        assert 0.5 < out.confidence <= 1.0
    assert min(accuracies) >= 0.9, accuracies
    assert sum(accuracies) / len(accuracies) >= 0.95, accuracies
    # The bundled (Chinese) recognizer drops most spaces of some of these lines unaided.
    assert word_counts_right >= len(SENTENCES) - 1


@pytest.mark.parametrize("fidelity", FIDELITIES[1:])
def test_reads_at_lower_fidelities(engine: RapidOcrEngine, fidelity: Fidelity) -> None:
    image, _ = _render(SENTENCES[:2])
    out = engine.read(image, fidelity)
    assert out.text.count("\n") == 1
    assert _accuracy("\n".join(SENTENCES[:2]), out.text) >= 0.85, out.text


def test_lines_top_to_bottom_with_boxes_where_drawn(engine: RapidOcrEngine) -> None:
    image, drawn = _render(SENTENCES)
    lines = engine.lines(image)
    assert len(lines) == len(SENTENCES), [line.text for line in lines]
    assert [line.bbox.y for line in lines] == sorted(line.bbox.y for line in lines)
    for line, box, sentence in zip(lines, drawn, SENTENCES, strict=True):
        assert _accuracy(sentence, line.text) >= 0.9, line.text
        for word in line.words:
            b = word.bbox
            assert b.x >= 0 and b.y >= 0 and b.right <= image.width and b.bottom <= image.height
            assert b.w > 0 and b.h > 0
            assert 0.0 <= word.confidence <= 1.0
            assert b.y >= box.y - 10 and b.bottom <= box.bottom + 10
        assert abs(line.bbox.x - box.x) <= 10
        assert abs(line.bbox.right - box.right) <= 10
        assert abs(line.bbox.y - box.y) <= 10
        assert abs(line.bbox.bottom - box.bottom) <= 10
        # Words left to right, not overlapping.
        for left, right in zip(line.words, line.words[1:], strict=False):
            assert left.bbox.right <= right.bbox.x + 2


def test_word_boxes_fit_the_words(engine: RapidOcrEngine) -> None:
    sentence = "The quick brown fox jumps over the lazy dog."
    image, _ = _render([sentence])
    (line,) = engine.lines(image)
    font = _font()
    draw = ImageDraw.Draw(image)
    x = float(MARGIN)
    truth = {}
    for word in sentence.split(" "):
        left, _, right, _ = draw.textbbox((x, MARGIN), word, font=font)
        truth[word] = (left, right)
        x += font.getlength(word + " ")
    found = {w.text: (w.bbox.x, w.bbox.right) for w in line.words}
    matched = [w for w in truth if w in found]
    assert len(matched) >= len(truth) - 1
    for word in matched:
        assert abs(found[word][0] - truth[word][0]) <= 6, word
        assert abs(found[word][1] - truth[word][1]) <= 6, word


def test_an_empty_page_has_no_lines(engine: RapidOcrEngine) -> None:
    blank = Image.new("RGB", (600, 300), "white")
    assert engine.lines(blank) == []
    out = engine.read(blank, "1x")
    assert out.text == ""
    assert out.confidence == 0.0
    tiny = Image.new("L", (3, 2), 255)
    assert engine.read(tiny, "20x").text == ""


def test_concurrent_reads_agree(engine: RapidOcrEngine) -> None:
    image, _ = _render([SENTENCES[1]])
    expected = engine.read(image, "1x").text
    results: list[str] = []

    def work() -> None:
        results.append(engine.read(image, "1x").text)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 3


def test_closed_engine_refuses() -> None:
    eng = RapidOcrEngine()
    eng.close()
    with pytest.raises(RuntimeError):
        eng.read(Image.new("L", (50, 50), 255), "1x")
