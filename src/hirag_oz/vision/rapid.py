"""RapidOCR (PaddleOCR PP-OCRv4 models on onnxruntime): the pip-only OcrEngine, for machines
without the tesseract binary. Its models ship inside the `rapidocr-onnxruntime` wheel; nothing is
downloaded at run time.

The bundled recognizer is a Chinese model: it reads English well but often drops the spaces of a
line. Spaces are recovered in its CTC decoding (see `_SpaceBiasedDecode`)."""

from __future__ import annotations

import importlib.util
import itertools
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from hirag_oz.vision.models import BBox, Fidelity, OcrLine, OcrText, OcrWord
from hirag_oz.vision.ocr import resample

GrayArray = npt.NDArray[np.uint8]

# Detection runs on at most this many pixels a side; recognition reads line crops at up to
# _MAX_SIDE (pages larger than that are scaled down first).
_DET_SIDE = 2000
_MAX_SIDE = 4096
# Pad so that the library never adds its own (black) letterbox to a short image.
_MIN_HEIGHT = 48
_MARGIN = 10

# Space recovery: the space class's probability is multiplied by this before the greedy CTC
# decoding picks each column's class (see `_SpaceBiasedDecode`).
_SPACE_BOOST = 100.0

# Word boxes are tightened to the ink: a pixel is ink when it is darker than this fraction of the
# crop's darkest pixel (low, so that faint strokes of downsampled text count).
_INK_FRACTION = 0.25
_MIN_CONTRAST = 40.0

# Detected boxes on one row closer than this many line heights are one line.
_JOIN_GAP = 2.0


def rapidocr_available() -> bool:
    """Whether `rapidocr_onnxruntime` and its OpenCV are installed (looked up, not imported:
    importing them loads OpenCV and adds a log handler). `opencv-python` also needs the system's
    libGL at import; without it the engine's constructor raises ImportError."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("rapidocr_onnxruntime", "cv2"))
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class _Detection:
    """One text box of RapidOCR: its line's words, box and score."""

    words: tuple[OcrWord, ...]
    bbox: BBox
    score: float

    @property
    def center_y(self) -> float:
        return self.bbox.y + self.bbox.h / 2


class RapidOcrEngine:
    """RapidOCR through `rapidocr_onnxruntime`: text boxes with their recognized text, split into
    words with boxes estimated from the ink. One instance; calls are serialized (the library
    keeps per-call state on the instance)."""

    name = "rapidocr"

    def __init__(self, min_score: float = 0.5, threads: int | None = None) -> None:
        from rapidocr_onnxruntime import RapidOCR

        options: dict[str, Any] = {
            # Limit the detector's input by its longer side instead of scaling every image up to
            # a 736-pixel shorter side: a single line scaled up ~10x gets split into fragments.
            "det_limit_type": "max",
            "det_limit_side_len": _DET_SIDE,
            "max_side_len": _MAX_SIDE,
            "width_height_ratio": -1,
            # Pages come upright; the 180-degree classifier turned some clean lines upside down.
            "use_cls": False,
            # One line at a time: a batch pads its lines to the widest, which cost 30% more time
            # on a page at 6 a batch, and made a line's reading depend on its neighbours.
            "rec_batch_num": 1,
            "text_score": min_score,
        }
        if threads is not None:
            options["intra_op_num_threads"] = threads
        self._ocr: Any = RapidOCR(**options)
        recognizer = getattr(self._ocr, "text_rec", None)
        decoder = getattr(recognizer, "postprocess_op", None)
        if recognizer is not None and _SpaceBiasedDecode.fits(decoder):
            recognizer.postprocess_op = _SpaceBiasedDecode(decoder, _SPACE_BOOST)
        self._lock = threading.Lock()
        self.min_score = min_score

    def lines(self, image: Image.Image) -> list[OcrLine]:
        return self._lines(image)

    def read(self, image: Image.Image, fidelity: Fidelity) -> OcrText:
        return OcrText.of(self._lines(resample(image, fidelity)))

    def close(self) -> None:
        with self._lock:
            self._ocr = None

    def _lines(self, image: Image.Image) -> list[OcrLine]:
        gray, dx, dy = _pad(image)
        results = self._run(np.ascontiguousarray(np.stack([gray] * 3, axis=-1)))
        detections: list[_Detection] = []
        for result in results:
            found = _detection(gray, result)
            if found is not None:
                detections.append(_shift(found, dx, dy, image.width, image.height))
        return _rows(detections)

    def _run(self, bgr: npt.NDArray[np.uint8]) -> list[list[Any]]:
        with self._lock:
            if self._ocr is None:
                raise RuntimeError("RapidOcrEngine is closed")
            # Passing any keyword resets the thresholds on the instance: pass them all.
            out, _ = self._ocr(
                bgr,
                return_word_box=True,
                box_thresh=0.5,
                unclip_ratio=1.6,
                text_score=self.min_score,
            )
        return list(out or [])


class _SpaceBiasedDecode:
    """RapidOCR's greedy CTC decoding (`CTCLabelDecode.__call__`) with the space class's
    probability multiplied by `boost` before each column's class is picked.

    The recognizer is sure a word gap holds no letter, but splits that between blank and space
    and mostly calls it blank, so words run together ("totalamount"). Chosen over finding word
    gaps in the ink (runs of blank columns wider than a fraction of the line height) and over
    spacing the CTC character positions: on rendered lines in six DejaVu faces at 20 and 34 px,
    the ink gaps split monospaced and italic words apart and the character positions split
    ordinary ones, while the boost got the word count right the most often at every fidelity.
    A space's confidence is that of no letter there: blank plus space."""

    def __init__(self, inner: Any, boost: float) -> None:
        self._inner = inner
        self.character: list[str] = inner.character
        self._space = len(self.character) - 1
        self._boost = boost

    @staticmethod
    def fits(decoder: Any) -> bool:
        """Whether `decoder` is the decoder this wraps: a blank first and a space last."""
        character = getattr(decoder, "character", None)
        return (
            callable(getattr(decoder, "decode", None))
            and isinstance(character, list)
            and len(character) > 2
            and character[-1] == " "
        )

    def __call__(
        self, preds: npt.NDArray[np.float32], return_word_box: bool = False, **kwargs: Any
    ) -> list[Any]:
        biased = preds.copy()
        biased[:, :, self._space] *= self._boost
        index = biased.argmax(axis=2)
        prob = np.take_along_axis(preds, index[..., None], axis=2)[..., 0]
        prob = np.where(index == self._space, preds[:, :, 0] + preds[:, :, self._space], prob)
        out: list[Any] = self._inner.decode(index, prob, return_word_box, is_remove_duplicate=True)
        if return_word_box:
            # As the library does: the share of the padded batch width this crop filled.
            for i, rec in enumerate(out):
                rec[2][0] = rec[2][0] * (kwargs["wh_ratio_list"][i] / kwargs["max_wh_ratio"])
        return out


def _pad(image: Image.Image) -> tuple[GrayArray, int, int]:
    """The image in grey on a white margin, at least `_MIN_HEIGHT` high, and the offset of the
    image in it."""
    gray = image.convert("L")
    width = gray.width + 2 * _MARGIN
    height = max(gray.height + 2 * _MARGIN, _MIN_HEIGHT)
    dx, dy = _MARGIN, (height - gray.height) // 2
    out = Image.new("L", (width, height), 255)
    out.paste(gray, (dx, dy))
    return np.asarray(out, dtype=np.uint8), dx, dy


def _detection(gray: GrayArray, result: list[Any]) -> _Detection | None:
    """One RapidOCR result — [polygon, text, score, char boxes, chars, char scores] — as words."""
    polygon = np.asarray(result[0], dtype=np.float64)
    text = str(result[1])
    score = max(0.0, min(1.0, float(result[2])))
    if not text.strip():
        return None
    x0 = max(0, int(np.floor(polygon[:, 0].min())))
    y0 = max(0, int(np.floor(polygon[:, 1].min())))
    x1 = min(gray.shape[1], int(np.ceil(polygon[:, 0].max())) + 1)
    y1 = min(gray.shape[0], int(np.ceil(polygon[:, 1].max())) + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    chars, centers = _char_centers(text, result, x0, x1)
    words = _words(gray[y0:y1, x0:x1], chars, [c - x0 for c in centers], score)
    if not words:
        return None
    moved = tuple(
        OcrWord(w.text, BBox(w.bbox.x + x0, w.bbox.y + y0, w.bbox.w, w.bbox.h), w.confidence)
        for w in words
    )
    return _Detection(moved, BBox.around([w.bbox for w in moved]), score)


def _char_centers(text: str, result: list[Any], x0: int, x1: int) -> tuple[list[str], list[float]]:
    """The recognized characters and the x of each: from the CTC columns that emitted them
    (`return_word_box`), else spread evenly over the box."""
    if len(result) >= 5 and result[3] and len(result[3]) == len(result[4]):
        chars = [str(c) for c in result[4]]
        centers = [float(np.mean([p[0] for p in box])) for box in result[3]]
        if "".join(chars) == text:
            return chars, centers
    step = (x1 - x0) / max(1, len(text))
    return list(text), [x0 + (i + 0.5) * step for i in range(len(text))]


def _words(crop: GrayArray, chars: list[str], centers: list[float], score: float) -> list[OcrWord]:
    """A text box split into words at the recognized spaces, in the crop's pixels: each word's box
    is the ink between the midpoints to its neighbours (the characters' x come from the CTC
    columns that emitted them)."""
    dark = 255.0 - crop.astype(np.float32)
    peak = float(dark.max()) if dark.size else 0.0
    ink: npt.NDArray[np.bool_] = (
        dark > peak * _INK_FRACTION if peak >= _MIN_CONTRAST else np.zeros(crop.shape, bool)
    )
    groups: list[list[int]] = []
    current: list[int] = []
    for i, ch in enumerate(chars):
        if ch.isspace():
            if current:
                groups.append(current)
                current = []
        else:
            current.append(i)
    if current:
        groups.append(current)
    bounds = [0.0]
    for left, right in itertools.pairwise(groups):
        bounds.append((centers[left[-1]] + centers[right[0]]) / 2)
    bounds.append(float(crop.shape[1]))
    return [
        OcrWord("".join(chars[i] for i in group), _word_box(ink, bounds[k], bounds[k + 1]), score)
        for k, group in enumerate(groups)
    ]


def _word_box(ink: npt.NDArray[np.bool_], left: float, right: float) -> BBox:
    """The box of the ink between two x positions, or the whole span when it has none."""
    shape = ink.shape
    a, b = max(0, int(np.floor(left))), min(shape[1], int(np.ceil(right)))
    part = ink[:, a:b]
    cols = np.flatnonzero(part.any(axis=0))
    rows = np.flatnonzero(part.any(axis=1))
    if not cols.size:
        return BBox(a, 0, max(1, b - a), shape[0])
    return BBox(
        a + int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
    )


def _shift(found: _Detection, dx: int, dy: int, width: int, height: int) -> _Detection:
    """A detection in the padded image moved back to the image's own pixels, clipped to it."""

    def clip(box: BBox) -> BBox:
        x, y = (
            min(max(0, box.x - dx), max(0, width - 1)),
            min(max(0, box.y - dy), max(0, height - 1)),
        )
        right, bottom = min(width, box.right - dx), min(height, box.bottom - dy)
        return BBox(x, y, max(1, right - x), max(1, bottom - y))

    words = tuple(OcrWord(w.text, clip(w.bbox), w.confidence) for w in found.words)
    return _Detection(words, BBox.around([w.bbox for w in words]), found.score)


def _rows(detections: list[_Detection]) -> list[OcrLine]:
    """Detections grouped into rows top to bottom, left to right in a row; neighbours on a row
    closer than `_JOIN_GAP` line heights are joined into one line (the detector may split a
    line at a wide space)."""
    rows: list[list[_Detection]] = []
    for det in sorted(detections, key=lambda d: d.center_y):
        if rows:
            anchor = rows[-1][0]
            if abs(det.center_y - anchor.center_y) < 0.5 * min(det.bbox.h, anchor.bbox.h):
                rows[-1].append(det)
                continue
        rows.append([det])
    lines: list[OcrLine] = []
    for row in rows:
        row.sort(key=lambda d: d.bbox.x)
        words = list(row[0].words)
        last = row[0].bbox
        for det in row[1:]:
            if det.bbox.x - last.right <= _JOIN_GAP * max(det.bbox.h, last.h):
                words.extend(det.words)
                last = last.union(det.bbox)
            else:
                lines.append(OcrLine(tuple(words), BBox.around([w.bbox for w in words])))
                words, last = list(det.words), det.bbox
        lines.append(OcrLine(tuple(words), BBox.around([w.bbox for w in words])))
    return lines
