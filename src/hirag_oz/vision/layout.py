"""Lines into regions: paragraph-like blocks typed text, table, figure or code.

No layout model ships with the OCR packages used here, so regions come from documented
heuristics over line boxes and the page's ink:

1. Figures: ink that no text line covers, in connected areas of at least `FIGURE_MIN_AREA`
   of the page. Text lines inside a figure (labels) belong to it.
2. Line segments: a line is cut where two words are further apart than `CELL_GAP` line
   heights, so table cells and side-by-side columns become separate segments.
3. Tables: at least `TABLE_MIN_ROWS` consecutive rows (segments sharing a vertical band)
   of two or more segments each, with few words per segment (`TABLE_MAX_WORDS_PER_CELL`
   on average), as cells are; two columns of running text have long segments.
4. Paragraphs: the other segments, each joined to the block above it when it overlaps it
   horizontally and starts within `PARAGRAPH_GAP` line heights of its bottom.
5. Code: a paragraph block whose lines mostly look like code (keywords at the start,
   statement punctuation at the end, brackets and operators).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from hirag_oz.vision.models import BBox, OcrLine, RegionType

CELL_GAP = 1.5
PARAGRAPH_GAP = 0.8
TABLE_MIN_ROWS = 2
TABLE_MAX_WORDS_PER_CELL = 4.0
TABLE_ROW_GAP = 2.5
FIGURE_MIN_AREA = 0.01
FIGURE_MIN_SIDE = 0.04
_INK_LEVEL = 200
_GRID = 8
_CODE_START = re.compile(
    r"^(def|class|import|from|return|if|elif|else|for|while|try|except|with|function|const|"
    r"let|var|public|private|static|void|int|#include|#define|select|insert|update|fn|pub|"
    r"package|func|print|async|await)\b",
    re.IGNORECASE,
)
_CODE_END = (":", ";", "{", "}", ")", "(", ",")
_CODE_SYMBOLS = frozenset("{}[]()=<>;:_#\"'")


@dataclass
class Block:
    type: RegionType
    lines: list[OcrLine]
    bbox: BBox

    @property
    def text(self) -> str:
        if self.type == "table":
            return "\n".join(" | ".join(cell.text for cell in row) for row in _rows(self.lines))
        if self.type == "code":
            return _indented(self.lines)
        return "\n".join(line.text for line in self.lines)

    @property
    def confidence(self) -> float:
        words = [w for line in self.lines for w in line.words]
        return sum(w.confidence for w in words) / len(words) if words else 0.0


def regions(lines: list[OcrLine], page: Image.Image) -> list[Block]:
    """The page's blocks in reading order (top to bottom, then left to right)."""
    segments = [seg for line in lines for seg in _segments(line)]
    height = statistics.median([s.bbox.h for s in segments]) if segments else 0.0
    blocks = _figures(page, segments)
    in_figures = {id(seg) for block in blocks for seg in block.lines}
    rest = [s for s in segments if id(s) not in in_figures]
    tables, prose = _tables(rest, height)
    blocks += tables
    for lines_of_block in _paragraphs(prose, height):
        kind: RegionType = "code" if _looks_like_code(lines_of_block) else "text"
        blocks.append(Block(kind, lines_of_block, BBox.around([s.bbox for s in lines_of_block])))
    return sorted(blocks, key=lambda b: (b.bbox.y, b.bbox.x))


def _segments(line: OcrLine) -> list[OcrLine]:
    if len(line.words) < 2:
        return [line]
    gap = CELL_GAP * line.bbox.h
    out, current = [], [line.words[0]]
    for word in line.words[1:]:
        if word.bbox.x - current[-1].bbox.right > gap:
            out.append(OcrLine.of(current))
            current = []
        current.append(word)
    out.append(OcrLine.of(current))
    return out


def _rows(segments: list[OcrLine]) -> list[list[OcrLine]]:
    """Segments grouped by vertical band, top to bottom, each row left to right."""
    rows: list[list[OcrLine]] = []
    for seg in sorted(segments, key=lambda s: (s.bbox.y + s.bbox.h / 2, s.bbox.x)):
        centre = seg.bbox.y + seg.bbox.h / 2
        if rows:
            last = rows[-1]
            band = statistics.mean(s.bbox.y + s.bbox.h / 2 for s in last)
            if abs(centre - band) <= 0.5 * min(seg.bbox.h, min(s.bbox.h for s in last)):
                last.append(seg)
                continue
        rows.append([seg])
    return [sorted(row, key=lambda s: s.bbox.x) for row in rows]


def _tables(segments: list[OcrLine], height: float) -> tuple[list[Block], list[OcrLine]]:
    rows = _rows(segments)
    tables: list[Block] = []
    prose: list[OcrLine] = []
    run: list[list[OcrLine]] = []

    def close_run() -> None:
        cells = [seg for row in run for seg in row]
        words = sum(len(seg.words) for seg in cells)
        if len(run) >= TABLE_MIN_ROWS and words / len(cells) <= TABLE_MAX_WORDS_PER_CELL:
            tables.append(Block("table", cells, BBox.around([s.bbox for s in cells])))
        else:
            prose.extend(cells)
        run.clear()

    for row in rows:
        if len(row) < 2:
            if run:
                close_run()
            prose.extend(row)
            continue
        if run:
            previous_bottom = max(s.bbox.bottom for s in run[-1])
            top = min(s.bbox.y for s in row)
            if top - previous_bottom > TABLE_ROW_GAP * height:
                close_run()
        run.append(row)
    if run:
        close_run()
    return tables, prose


def _paragraphs(segments: list[OcrLine], height: float) -> list[list[OcrLine]]:
    blocks: list[list[OcrLine]] = []
    for seg in sorted(segments, key=lambda s: (s.bbox.y, s.bbox.x)):
        best = None
        for block in blocks:
            last = block[-1]
            overlaps = seg.bbox.x < _right(block) and seg.bbox.right > _left(block)
            gap = seg.bbox.y - last.bbox.bottom
            if overlaps and -0.5 * height <= gap <= PARAGRAPH_GAP * max(height, last.bbox.h):
                best = block
        if best is None:
            blocks.append([seg])
        else:
            best.append(seg)
    return blocks


def _left(block: list[OcrLine]) -> int:
    return min(s.bbox.x for s in block)


def _right(block: list[OcrLine]) -> int:
    return max(s.bbox.right for s in block)


def _indented(lines: list[OcrLine]) -> str:
    """Code lines with their indentation rebuilt from how far right each one starts, in
    characters of the block's (monospaced) width."""
    widths = [line.bbox.w / len(line.text) for line in lines if len(line.text) >= 4]
    char = statistics.median(widths) if widths else 0.0
    left = _left(lines)
    out = []
    for line in lines:
        spaces = round((line.bbox.x - left) / char) if char > 0 else 0
        out.append(" " * spaces + line.text)
    return "\n".join(out)


def _looks_like_code(lines: list[OcrLine]) -> bool:
    texts = [line.text.strip() for line in lines if line.text.strip()]
    if len(texts) < 2:
        return False
    starts = sum(1 for t in texts if _CODE_START.match(t)) / len(texts)
    ends = sum(1 for t in texts if t.endswith(_CODE_END)) / len(texts)
    chars = "".join(texts).replace(" ", "")
    symbols = sum(1 for c in chars if c in _CODE_SYMBOLS) / max(1, len(chars))
    indents = {round((line.bbox.x - _left(lines)) / max(1, line.bbox.h)) for line in lines}
    return (starts >= 0.3 and (ends >= 0.3 or symbols >= 0.05)) or (
        symbols >= 0.08 and ends >= 0.4 and len(indents) >= 2
    )


def _figures(page: Image.Image, segments: list[OcrLine]) -> list[Block]:
    """Connected areas of ink not covered by text, as figure blocks with the segments inside."""
    gray = page.convert("L")
    cols, rows = max(1, gray.width // _GRID), max(1, gray.height // _GRID)
    small = np.asarray(gray.resize((cols, rows), Image.Resampling.BOX))
    ink = small < _INK_LEVEL
    for seg in segments:
        b = seg.bbox
        ink[
            max(0, b.y // _GRID - 1) : b.bottom // _GRID + 2,
            max(0, b.x // _GRID - 1) : b.right // _GRID + 2,
        ] = False
    grown = ndimage.binary_dilation(ink, iterations=2)
    labels, found = ndimage.label(grown, structure=np.ones((3, 3), dtype=bool))
    blocks: list[Block] = []
    for where in ndimage.find_objects(labels)[:found]:
        if where is None:
            continue
        ys, xs = where
        h, w = ys.stop - ys.start, xs.stop - xs.start
        if (
            h * w < FIGURE_MIN_AREA * rows * cols
            or h < FIGURE_MIN_SIDE * rows
            or w < FIGURE_MIN_SIDE * cols
        ):
            continue
        box = BBox(
            xs.start * _GRID,
            ys.start * _GRID,
            min(gray.width, xs.stop * _GRID) - xs.start * _GRID,
            min(gray.height, ys.stop * _GRID) - ys.start * _GRID,
        )
        inside = [s for s in segments if _centre_in(s.bbox, box)]
        blocks.append(Block("figure", inside, box))
    return blocks


def _centre_in(inner: BBox, outer: BBox) -> bool:
    cx, cy = inner.x + inner.w / 2, inner.y + inner.h / 2
    return outer.x <= cx <= outer.right and outer.y <= cy <= outer.bottom
