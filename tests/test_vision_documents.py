"""Documents into pages: formats from their bytes, frames, text layers in rendered pixels."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from hirag_oz.errors import UnsupportedMediaTypeError, ValidationError
from hirag_oz.vision import documents
from hirag_oz.vision.documents import detect_kind, page_count, pages
from tests.vision_samples import page_of_paragraphs, png_bytes, scanned_pdf, text_pdf


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def test_formats_come_from_the_bytes() -> None:
    image = Image.new("RGB", (40, 30), "white")
    assert detect_kind(png_bytes(image)) == "png"
    assert detect_kind(_encoded(image, "JPEG")) == "jpeg"
    assert detect_kind(_encoded(image, "TIFF")) == "tiff"
    assert detect_kind(scanned_pdf([image])) == "pdf"
    for data in (b"", b"GIF89a....", b"hello", _encoded(image, "BMP")):
        with pytest.raises(UnsupportedMediaTypeError):
            detect_kind(data)


def test_a_tiff_has_a_page_per_frame_and_images_keep_their_pixels() -> None:
    frames = [Image.new("RGB", (300, 200), color) for color in ("white", "gray", "black")]
    data = _encoded(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    assert page_count(data, "tiff") == 3
    found = list(pages(data, "tiff", dpi=200))
    assert [p.number for p in found] == [1, 2, 3]
    assert all(p.image.size == (300, 200) and p.text_lines is None for p in found)
    assert found[2].image.getpixel((5, 5)) == (0, 0, 0)


def test_transparency_becomes_white() -> None:
    clear = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    [page] = pages(png_bytes(clear), "png", dpi=200)
    assert page.image.mode == "RGB" and page.image.getpixel((10, 10)) == (255, 255, 255)


def test_a_text_layer_is_read_in_rendered_pixels() -> None:
    data = text_pdf([["Alpha beta gamma delta."], ["Second page words here."]])
    assert page_count(data, "pdf") == 2
    first, second = pages(data, "pdf", dpi=200)
    assert first.image.size == (1654, 2339)  # A4 at 200 dpi
    assert first.text_lines is not None and second.text_lines is not None
    [line] = first.text_lines
    assert line.text == "Alpha beta gamma delta."
    assert [w.text for w in line.words] == ["Alpha", "beta", "gamma", "delta."]
    # fpdf2 writes the paragraph at x = 20 mm plus its 1 mm cell margin, near y = 20 mm.
    assert abs(line.bbox.x - 21 / 25.4 * 200) < 3
    assert abs(line.bbox.y - 20 / 25.4 * 200) < 25
    # The boxes sit on the rendered ink: dark inside the line's box, white just above it.
    b = line.bbox
    inside = first.image.convert("L").crop((b.x, b.y, b.right, b.bottom))
    above = first.image.convert("L").crop((b.x, b.y - 30, b.right, b.y - 5))
    assert inside.getextrema()[0] < 80 and above.getextrema()[0] > 240
    assert 20 < line.bbox.h < 50 and all(w.confidence == 1.0 for w in line.words)
    xs = [w.bbox.x for w in line.words]
    assert xs == sorted(xs)


def test_a_scanned_page_has_no_text_layer_and_is_rendered_at_the_dpi() -> None:
    data = scanned_pdf([page_of_paragraphs([["Some scanned words."]]).image])
    [page] = pages(data, "pdf", dpi=100)
    assert page.text_lines is None
    assert abs(page.image.width - 827) <= 1  # 1654 px at 200 dpi, rendered at 100 dpi


def test_unreadable_documents_are_validation_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        page_count(b"%PDF-1.7 not a pdf at all", "pdf")
    with pytest.raises(ValidationError):
        list(pages(b"\x89PNG\r\n\x1a\n broken", "png", dpi=200))
    # An image past Pillow's decompression-bomb limit is refused, not decoded.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValidationError, match="too large"):
        page_count(png_bytes(Image.new("RGB", (100, 100), "white")), "png")
    assert documents.MIN_TEXT_LAYER_CHARS > 0
