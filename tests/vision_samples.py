"""Documents the vision tests render for themselves: text pages, tables, code, figures, PDFs
with and without a text layer. Each knows where it drew what."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
MONO = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
# A4 at 200 dpi.
PAGE = (1654, 2339)
SIZE = 34


@dataclass
class Drawn:
    text: str
    box: tuple[int, int, int, int]
    """x, y, right, bottom in page pixels."""


@dataclass
class SamplePage:
    image: Image.Image
    drawn: list[Drawn] = field(default_factory=list)


def _font(path: str = FONT, size: int = SIZE) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def page_of_paragraphs(paragraphs: list[list[str]], *, top: int = 150) -> SamplePage:
    """Paragraphs of lines, a blank line between paragraphs; one Drawn per paragraph."""
    image = Image.new("RGB", PAGE, "white")
    draw = ImageDraw.Draw(image)
    font = _font()
    page = SamplePage(image)
    y = top
    for lines in paragraphs:
        boxes = []
        for line in lines:
            boxes.append(_draw(draw, (150, y), line, font))
            y += int(SIZE * 1.3)
        page.drawn.append(Drawn("\n".join(lines), _union(boxes)))
        y += SIZE * 2
    return page


def _draw(
    draw: ImageDraw.ImageDraw, at: tuple[int, int], text: str, font: ImageFont.FreeTypeFont
) -> tuple[int, int, int, int]:
    """Draw `text` and return the box of its ink."""
    draw.text(at, text, font=font, fill="black")
    x, y, r, b = draw.textbbox(at, text, font=font)
    return int(x), int(y), int(r), int(b)


def _union(boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def page_with_table_code_figure() -> SamplePage:
    """A heading paragraph, a 3x4 table, a code block and a bar chart, top to bottom."""
    image = Image.new("RGB", PAGE, "white")
    draw = ImageDraw.Draw(image)
    font, mono = _font(), _font(MONO, 30)
    page = SamplePage(image)
    intro = "Shipments by warehouse for the spring quarter are listed below."
    page.drawn.append(Drawn(intro, _draw(draw, (150, 150), intro, font)))
    rows = [
        ("Warehouse", "Pallets", "Delay"),
        ("Lyon", "412", "2 days"),
        ("Porto", "288", "5 days"),
        ("Gdansk", "931", "1 day"),
    ]
    y = 320
    boxes = []
    for row in rows:
        for col, cell in enumerate(row):
            boxes.append(_draw(draw, (150 + col * 450, y), cell, font))
        y += 60
    page.drawn.append(Drawn("\n".join(" | ".join(r) for r in rows), _union(boxes)))
    code = [
        "def total(items):",
        "    count = 0",
        "    for item in items:",
        "        count += item.weight",
        "    return count",
    ]
    y = 700
    boxes = []
    for line in code:
        boxes.append(_draw(draw, (150, y), line, mono))
        y += 42
    page.drawn.append(Drawn("\n".join(code), _union(boxes)))
    # A bar chart without text: four filled bars on an axis.
    draw.line((200, 1700, 1200, 1700), fill="black", width=6)
    draw.line((200, 1200, 200, 1700), fill="black", width=6)
    for i, height in enumerate((300, 420, 180, 350)):
        x = 280 + i * 230
        draw.rectangle((x, 1700 - height, x + 150, 1700), fill=(40, 80, 160))
    page.drawn.append(Drawn("", (200, 1200, 1200, 1700)))
    return page


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def scanned_pdf(images: list[Image.Image], dpi: int = 200) -> bytes:
    """A PDF of page images only (no text layer), as a scanner makes."""
    out = io.BytesIO()
    first, *rest = [im.convert("RGB") for im in images]
    first.save(out, format="PDF", save_all=True, append_images=rest, resolution=float(dpi))
    return out.getvalue()


def text_pdf(pages: list[list[str]]) -> bytes:
    """A PDF with a text layer: each page a list of paragraphs, Helvetica 12 pt."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    for paragraphs in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.set_xy(20, 20)
        for paragraph in paragraphs:
            pdf.multi_cell(170, 6, paragraph)
            pdf.ln(8)
    return bytes(pdf.output())
