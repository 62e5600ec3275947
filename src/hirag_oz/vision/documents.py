"""Documents as pages: PDF (rendered with PDFium, its text layer read where present) and
PNG/JPEG/TIFF images (one page per frame)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageSequence

from hirag_oz.errors import UnsupportedMediaTypeError, ValidationError
from hirag_oz.vision.models import BBox, OcrLine, OcrWord

DocKind = Literal["pdf", "png", "jpeg", "tiff"]
MEDIA_TYPES: dict[DocKind, str] = {
    "pdf": "application/pdf",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "tiff": "image/tiff",
}
_MAGIC: tuple[tuple[bytes, DocKind], ...] = (
    (b"%PDF-", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
# A page whose text layer has fewer characters than this is treated as scanned and OCR'd.
MIN_TEXT_LAYER_CHARS = 16
_PDF_POINTS_PER_INCH = 72.0


@dataclass
class Page:
    number: int
    """1-based."""
    image: Image.Image
    text_lines: list[OcrLine] | None
    """The text layer's lines in rendered pixels, or None when the page must be OCR'd."""


def detect_kind(data: bytes) -> DocKind:
    """The document's format from its first bytes (never from a name or a declared type)."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    raise UnsupportedMediaTypeError(
        "not a PDF, PNG, JPEG or TIFF document", {"accepted": sorted(MEDIA_TYPES.values())}
    )


def page_count(data: bytes, kind: DocKind) -> int:
    if kind == "pdf":
        pdf = _open_pdf(data)
        try:
            return len(pdf)
        finally:
            pdf.close()
    with _open_image(data) as image:
        return getattr(image, "n_frames", 1)


def pages(data: bytes, kind: DocKind, dpi: int) -> Iterator[Page]:
    """The pages one at a time (a page image is large), PDFs rendered at `dpi`; images keep
    their own pixels."""
    if kind == "pdf":
        yield from _pdf_pages(data, dpi)
        return
    with _open_image(data) as image:
        for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
            yield Page(number, _flatten(frame), None)


def _open_pdf(data: bytes):  # type: ignore[no-untyped-def]
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise ValidationError(f"the PDF cannot be read: {exc}", {"format": "pdf"}) from None


def _open_image(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
            return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValidationError(f"the image is too large: {exc}", {"format": "image"}) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValidationError(f"the image cannot be read: {exc}", {"format": "image"}) from None


def _flatten(frame: Image.Image) -> Image.Image:
    """RGB on white: transparency and palettes do not reach OCR."""
    if frame.mode in ("RGBA", "LA") or (frame.mode == "P" and "transparency" in frame.info):
        rgba = frame.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return frame.convert("RGB")


def _pdf_pages(data: bytes, dpi: int) -> Iterator[Page]:
    pdf = _open_pdf(data)
    scale = dpi / _PDF_POINTS_PER_INCH
    try:
        for index in range(len(pdf)):
            page = pdf[index]
            try:
                image = page.render(scale=scale).to_pil().convert("RGB")
                _, height = page.get_size()
                textpage = page.get_textpage()
                try:
                    lines = _text_layer(textpage, scale, height)
                finally:
                    textpage.close()
            finally:
                page.close()
            chars = sum(len(line.text) for line in lines)
            yield Page(index + 1, image, lines if chars >= MIN_TEXT_LAYER_CHARS else None)
    finally:
        pdf.close()


def _text_layer(textpage, scale: float, page_height: float) -> list[OcrLine]:  # type: ignore[no-untyped-def]
    """Lines and words of a PDF text layer, boxes in rendered pixels (PDF space has its
    origin bottom-left, in points)."""
    import pypdfium2.raw as raw

    lines: list[OcrLine] = []
    words: list[OcrWord] = []
    chars: list[str] = []
    box: BBox | None = None

    def end_word() -> None:
        nonlocal box
        if chars and box is not None:
            words.append(OcrWord("".join(chars), box, 1.0))
        chars.clear()
        box = None

    def end_line() -> None:
        end_word()
        if words:
            lines.append(OcrLine.of(list(words)))
        words.clear()

    for i in range(textpage.count_chars()):
        char = chr(raw.FPDFText_GetUnicode(textpage.raw, i))
        if char in "\r\n":
            end_line()
            continue
        if char.isspace() or char == "\x00":
            end_word()
            continue
        left, bottom, right, top = textpage.get_charbox(i, loose=True)
        char_box = BBox(
            round(left * scale),
            round((page_height - top) * scale),
            max(1, round((right - left) * scale)),
            max(1, round((top - bottom) * scale)),
        )
        chars.append(char)
        box = char_box if box is None else box.union(char_box)
    end_line()
    return lines
