"""Synthetic Rakuten catalogue in the hub's exact layout, for demos, tests and full-size benchmarks.

Every row is drawn from a random generator seeded by (seed, split, chunk), so the output is
byte-identical for a seed whatever the number of worker processes. Rows are made in chunks by a
process pool and streamed to disk in order, so memory stays flat in the number of rows.
"""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import os
import shutil
import zipfile
from collections import deque
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from src.data.classes import PRDTYPECODES, TRAIN_COUNTS
from src.data.layout import IMAGE_ZIPS, X_COLUMNS, X_TEST_FILE, X_TRAIN_FILE, Y_TRAIN_FILE
from src.data.synth_vocabulary import (
    CLASS_WORDS,
    FAMILY_WORDS,
    FILLER_DE,
    FILLER_EN,
    FILLER_FR,
    SENTENCES_DE,
    SENTENCES_EN,
    SENTENCES_FR,
)
from src.errors import RakutenError

logger = logging.getLogger(__name__)


CHUNK_ROWS: Final = 256
_SPLITS: Final = ("train", "test")
# Ids come from an affine permutation modulo a prime: unique without remembering any of them.
_ID_PRIME: Final = 4_294_967_291
_ZIP_DATE: Final = (1980, 1, 1, 0, 0, 0)

# How often the messy parts of real listings show up (DESIGN §5).
P_NO_DESCRIPTION: Final = 0.35
P_HTML_DESCRIPTION: Final = 0.72
P_HTML_DESIGNATION: Final = 0.04
P_GERMAN: Final = 0.04
P_ENGLISH: Final = 0.04
P_MOJIBAKE: Final = 0.03
P_TEXT_FROM_SIBLING: Final = 0.08  # text written like a neighbouring type's (real ambiguity)
P_TEXT_FROM_ANY: Final = 0.02
P_IMAGE_MISSING: Final = 0.015
P_IMAGE_CORRUPT: Final = 0.003
P_IMAGE_UNINFORMATIVE: Final = 0.12

_FAMILIES: Final = tuple(FAMILY_WORDS)
_SIBLINGS: Final = {
    code: tuple(c for c, w in CLASS_WORDS.items() if w.family == words.family and c != code)
    for code, words in CLASS_WORDS.items()
}
_HTML_ENTITIES: Final = {"é": "&eacute;", "è": "&egrave;", "à": "&agrave;", "ê": "&ecirc;"}
_PATTERN_GRID: Final = 64


@dataclass(frozen=True)
class SynthSummary:
    """What a generation wrote."""

    out_dir: str
    rows: int
    test_rows: int
    images_written: int
    images_missing: int
    images_corrupt: int


@dataclass(frozen=True)
class Shift:
    """A catalogue shifted from the real one, to make drift on purpose (demos, tests).

    `skew_classes` get `skew_share` of the rows between them, evenly (the rest keeps the real
    mix); `no_description` and `missing_photos` replace the real rates of missing descriptions
    and photos. None keeps the real behaviour.
    """

    skew_classes: tuple[int, ...] = ()
    skew_share: float = 0.8
    no_description: float | None = None
    missing_photos: float | None = None

    def __post_init__(self) -> None:
        unknown = [c for c in self.skew_classes if c not in TRAIN_COUNTS]
        if unknown:
            raise RakutenError(f"unknown prdtypecode(s) to skew towards: {unknown}")
        for name in ("skew_share", "no_description", "missing_photos"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise RakutenError(f"{name} must be a share between 0 and 1 (got {value})")


NO_SHIFT: Final = Shift()


class _Chunk(NamedTuple):
    split: int
    number: int  # the chunk's position within its split
    start: int  # first row of the chunk within its split
    labels: tuple[int, ...]
    seed: int
    images: bool
    image_size: int
    id_offset: int  # rows before this split, so ids stay unique across splits
    copies: float  # share of rows that copy an earlier row's text (see `_copy_of`)
    shift: Shift = NO_SHIFT


class _Row(NamedTuple):
    designation: str
    description: str
    productid: int
    imageid: int
    prdtypecode: int
    image: bytes | None
    image_corrupt: bool


def class_allocation(rows: int) -> dict[int, int]:
    """Rows per product type for `rows` rows, in the real proportions (largest remainder)."""
    total = sum(TRAIN_COUNTS.values())
    exact = {code: rows * count / total for code, count in TRAIN_COUNTS.items()}
    counts = {code: int(share) for code, share in exact.items()}
    by_remainder = sorted(exact, key=lambda code: (counts[code] - exact[code], code))
    for code in by_remainder[: rows - sum(counts.values())]:
        counts[code] += 1
    return counts


def _labels(rows: int, seed: int, split: int, shift: Shift = NO_SHIFT) -> np.ndarray:
    """Product types of a split's rows: the real proportions (or a skewed mix), seeded order."""
    skewed = round(rows * shift.skew_share) if shift.skew_classes else 0
    allocation = (
        class_allocation(rows - skewed) if rows > skewed else dict.fromkeys(TRAIN_COUNTS, 0)
    )
    for position, code in enumerate(shift.skew_classes):
        allocation[code] += skewed // len(shift.skew_classes) + (
            position < skewed % len(shift.skew_classes)
        )
    labels = np.repeat(
        np.array(PRDTYPECODES, dtype=np.int64), [allocation[c] for c in PRDTYPECODES]
    )
    np.random.default_rng([seed, split, 0xC0DE]).shuffle(labels)
    return labels


def _ids(seed: int, position: int) -> tuple[int, int]:
    """The (productid, imageid) of the row at a global position: unique for every position."""
    rng = np.random.default_rng([seed, 0x1D])
    a_product, b_product, a_image, b_image = (int(v) for v in rng.integers(1, _ID_PRIME, 4))
    productid = 1 + (a_product * position + b_product) % _ID_PRIME
    imageid = 1 + (a_image * position + b_image) % _ID_PRIME
    return productid, imageid


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(len(words)))]


def _text_class(rng: np.random.Generator, code: int) -> int:
    """The type whose words a listing uses: mostly its own, sometimes a neighbour's or any."""
    draw = rng.random()
    if draw < P_TEXT_FROM_ANY:
        return PRDTYPECODES[int(rng.integers(len(PRDTYPECODES)))]
    if draw < P_TEXT_FROM_ANY + P_TEXT_FROM_SIBLING:
        return _pick_code(rng, _SIBLINGS[code]) if _SIBLINGS[code] else code
    return code


def _pick_code(rng: np.random.Generator, codes: tuple[int, ...]) -> int:
    return codes[int(rng.integers(len(codes)))]


def _word(rng: np.random.Generator, code: int, language: str) -> str:
    """One word of a listing of type `code`: its own, its family's, a sibling's or filler."""
    words = CLASS_WORDS[code]
    draw = rng.random()
    if language != "fr":
        own = words.en if language == "en" else words.de
        filler = FILLER_EN if language == "en" else FILLER_DE
        return _pick(rng, own) if draw < 0.6 else _pick(rng, filler)
    if draw < 0.5:
        return _pick(rng, words.fr)
    if draw < 0.7:
        return _pick(rng, FAMILY_WORDS[words.family])
    if draw < 0.8 and _SIBLINGS[code]:
        return _pick(rng, CLASS_WORDS[_pick_code(rng, _SIBLINGS[code])].fr)
    return _pick(rng, FILLER_FR)


def _designation(rng: np.random.Generator, code: int, language: str) -> str:
    """A product title: a few words, title-cased, sometimes with a reference or a size."""
    words = [_word(rng, code, language) for _ in range(int(rng.integers(3, 10)))]
    title = " ".join(w[:1].upper() + w[1:] for w in words)
    extra = rng.random()
    if extra < 0.2:
        title += f" - Réf. {int(rng.integers(100, 99999))}"
    elif extra < 0.35:
        title += f" {int(rng.integers(10, 200))} Cm"
    return title


def _description(rng: np.random.Generator, code: int, language: str) -> str:
    """A description of 1 to 5 sentences made from templates."""
    templates = {"fr": SENTENCES_FR, "en": SENTENCES_EN, "de": SENTENCES_DE}[language]
    family = FAMILY_WORDS[CLASS_WORDS[code].family]
    filler = {"fr": FILLER_FR, "en": FILLER_EN, "de": FILLER_DE}[language]
    sentences = []
    for _ in range(int(rng.integers(1, 6))):
        first = _word(rng, code, language)
        sentences.append(
            _pick(rng, templates).format(
                c=_word(rng, code, language),
                C=first[:1].upper() + first[1:],
                f=_pick(rng, family),
                x=_pick(rng, filler),
                n=int(rng.integers(5, 120)),
                ref=f"{int(rng.integers(1000, 99999))}",
            )
        )
    return " ".join(sentences)


def _with_html(rng: np.random.Generator, text: str) -> str:
    """Mark a text up as scraped listings are: tags, line breaks and HTML entities."""
    sentences = text.split(". ")
    tag = _pick(rng, ("p", "b", "li", "span"))
    marked = "<br />".join(sentences) if rng.random() < 0.5 else "<br>".join(sentences)
    marked = f"<{tag}>{marked}</{tag}>"
    if rng.random() < 0.6:
        for char, entity in _HTML_ENTITIES.items():
            marked = marked.replace(char, entity)
    if rng.random() < 0.4:
        marked = marked.replace("'", "&#39;").replace(" & ", " &amp; ") + "&nbsp;"
    return marked


def _with_mojibake(rng: np.random.Generator, text: str) -> str:
    """Corrupt the encoding as some real rows are: `¿` for œ/ô, or UTF-8 read as Latin-1."""
    if rng.random() < 0.6:
        return text.replace("œ", "¿").replace("ô", "¿")
    return text.encode("utf-8").decode("latin-1")


def _pattern(code: int, grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The type's texture in [0, 1]: the family's members get different kinds and frequencies."""
    family = CLASS_WORDS[code].family
    members = sorted(c for c, w in CLASS_WORDS.items() if w.family == family)
    position = members.index(code)
    kind = position % 6
    base = 7.0 + 3.0 * (position % 3) + 5.0 * (position // 6)  # periods over the object
    frequency = base * (1 + 0.08 * rng.standard_normal())
    angle = np.pi * ((PRDTYPECODES.index(code) * 0.37) % 1.0) + 0.15 * rng.standard_normal()
    phase = rng.uniform(0, 2 * np.pi)
    x, y = grid
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    r = np.hypot(x, y)
    if kind == 0:  # stripes
        value = np.sin(frequency * u + phase)
    elif kind == 1:  # checkerboard
        value = np.sin(frequency * u + phase) * np.sin(frequency * v)
    elif kind == 2:  # rings
        value = np.sin(2 * frequency * r + phase)
    elif kind == 3:  # dots
        value = (np.sin(frequency * u) * np.sin(frequency * v)) ** 2 * 2 - 1
    elif kind == 4:  # waves
        value = np.sin(frequency * u + 2.0 * np.sin(frequency * v * 0.5) + phase)
    else:  # spiral
        value = np.sin(frequency * r * 1.5 + 3 * np.arctan2(y, x) + phase)
    return np.asarray((value + 1) / 2)


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    """One colour from HSV to RGB in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    return np.asarray(value - value * saturation * np.clip(np.minimum(k, 4 - k), 0, 1))


def _image(rng: np.random.Generator, code: int, size: int) -> bytes:
    """A product photo: an object on a light background, coloured by family, textured by type."""
    n = _PATTERN_GRID
    axis = np.linspace(-1, 1, n)
    grid = np.stack(np.meshgrid(axis, axis))
    shown = code
    if rng.random() < P_IMAGE_UNINFORMATIVE:
        shown = PRDTYPECODES[int(rng.integers(len(PRDTYPECODES)))]
    family_index = _FAMILIES.index(CLASS_WORDS[shown].family)
    hue = (family_index / len(_FAMILIES) + 0.05 * rng.standard_normal()) % 1.0
    foreground = _hsv_to_rgb(hue, rng.uniform(0.45, 0.95), rng.uniform(0.45, 0.95))
    second = _hsv_to_rgb(
        (hue + rng.uniform(-0.1, 0.1)) % 1.0, rng.uniform(0.1, 0.5), rng.uniform(0.2, 1)
    )
    texture = _pattern(shown, grid, rng)[..., None]
    centre = rng.uniform(-0.25, 0.25, 2)
    radius = rng.uniform(0.45, 0.9, 2)
    offset = (grid - centre[:, None, None]) / radius[:, None, None]
    inside = (np.abs(offset).max(axis=0) if rng.random() < 0.5 else np.hypot(*offset)) < 1
    background = 1 - rng.uniform(0, 0.12) * rng.random(3)
    pixels = np.where(inside[..., None], texture * foreground + (1 - texture) * second, background)
    if rng.random() < 0.3:  # a distractor: another object, label or shadow
        x0, y0 = rng.integers(0, n - 12, 2)
        pixels[y0 : y0 + int(rng.integers(6, 20)), x0 : x0 + int(rng.integers(6, 20))] = rng.random(
            3
        )
    pixels = pixels + rng.normal(0, rng.uniform(0.03, 0.15), pixels.shape)
    small = Image.fromarray(np.clip(pixels * 255, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    small.resize((size, size), Image.Resampling.BILINEAR).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def _image_file(
    rng: np.random.Generator, code: int, size: int, p_missing: float = P_IMAGE_MISSING
) -> tuple[bytes | None, bool]:
    """A product's photo file and whether it is corrupt: mostly a JPEG, some none or broken."""
    draw = rng.random()
    if draw < p_missing:
        return None, False
    photo = _image(rng, code, size)
    if draw < p_missing + P_IMAGE_CORRUPT:
        return (photo[: len(photo) // 3] if rng.random() < 0.5 else rng.bytes(2048)), True
    return photo, False


def _make_chunk(chunk: _Chunk) -> list[_Row]:
    """Make one chunk of rows with its own seeded generator (so workers change nothing)."""
    rng = np.random.default_rng([chunk.seed, chunk.split, chunk.number])
    rows: list[_Row] = []
    for offset, code in enumerate(chunk.labels):
        productid, imageid = _ids(chunk.seed, chunk.id_offset + chunk.start + offset)
        language = "fr"
        draw = rng.random()
        if draw < P_GERMAN:
            language = "de"
        elif draw < P_GERMAN + P_ENGLISH:
            language = "en"
        text_code = _text_class(rng, code)
        designation = _designation(rng, text_code, language)
        description = ""
        no_description = chunk.shift.no_description
        if rng.random() >= (P_NO_DESCRIPTION if no_description is None else no_description):
            description = _description(rng, text_code, language)
            if rng.random() < P_HTML_DESCRIPTION:
                description = _with_html(rng, description)
        if rng.random() < P_HTML_DESIGNATION:
            designation = designation.replace(" ", " &amp; ", 1)
        if rng.random() < P_MOJIBAKE:
            designation, description = (_with_mojibake(rng, t) for t in (designation, description))
        if chunk.copies:  # no draw without copies: the same seed still gives the same bytes
            designation, description = _copy_of(rng, rows, code, chunk.copies, description) or (
                designation,
                description,
            )
        missing = chunk.shift.missing_photos
        p_missing = P_IMAGE_MISSING if missing is None else missing
        image, corrupt = (
            _image_file(rng, code, chunk.image_size, p_missing) if chunk.images else (None, False)
        )
        rows.append(_Row(designation, description, productid, imageid, code, image, corrupt))
    return rows


def _copy_of(
    rng: np.random.Generator, earlier: list[_Row], code: int, copies: float, description: str
) -> tuple[str, str] | None:
    """With probability `copies`, the title of an earlier row of the same type in the chunk.

    A copy is the same product listed again under another productid, as the real catalogue has
    them: the same title, with the same description half of the time (its own, `description`,
    otherwise).
    """
    if rng.random() >= copies:
        return None
    same_type = [row for row in earlier if row.prdtypecode == code]
    if not same_type:
        return None
    original = same_type[int(rng.integers(len(same_type)))]
    keep_description = rng.random() < 0.5
    return original.designation, original.description if keep_description else description


def _chunks(
    rows: int,
    test_rows: int,
    seed: int,
    images: bool,
    image_size: int,
    copies: float,
    shift: Shift = NO_SHIFT,
) -> Iterator[_Chunk]:
    """The work, in output order: the train split's chunks, then the test split's."""
    for split, (count, id_offset) in enumerate(((rows, 0), (test_rows, rows))):
        labels = _labels(count, seed, split, shift)
        for index, start in enumerate(range(0, count, CHUNK_ROWS)):
            chunk_labels = tuple(int(c) for c in labels[start : start + CHUNK_ROWS])
            yield _Chunk(
                split,
                index,
                start,
                chunk_labels,
                seed,
                images,
                image_size,
                id_offset,
                copies,
                shift,
            )


def _in_order(chunks: Iterator[_Chunk], workers: int) -> Iterator[tuple[_Chunk, list[_Row]]]:
    """Made chunks in submission order, with at most 2 x workers chunks in flight (flat memory)."""
    if workers <= 1:
        for chunk in chunks:
            yield chunk, _make_chunk(chunk)
        return
    # spawn, not fork: tqdm's monitor thread must not be forked mid-lock.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pending: deque[tuple[_Chunk, AsyncResult[list[_Row]]]] = deque()
        for chunk in chunks:
            pending.append((chunk, pool.apply_async(_make_chunk, (chunk,))))
            if len(pending) >= 2 * workers:
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()


def _zip_entry(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    """Add a stored (JPEG needs no deflate) entry with a fixed date, for byte-identical zips."""
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.external_attr = 0o644 << 16
    archive.writestr(info, data, compress_type=zipfile.ZIP_STORED)


def synthesize(
    out_dir: Path,
    *,
    rows: int,
    test_rows: int,
    images: bool = True,
    image_size: int = 500,
    seed: int = 0,
    copies: float = 0.0,
    images_zip: bool = False,
    workers: int | None = None,
    overwrite: bool = False,
    shift: Shift = NO_SHIFT,
) -> SynthSummary:
    """Write a synthetic catalogue in the hub's layout to `out_dir`, atomically.

    The files appear in `out_dir` only once all are written; a failed run leaves what was there.
    `shift` makes a catalogue that drifted from the real one (see `Shift`).
    """
    if rows <= 0 or test_rows < 0:
        raise RakutenError(f"rows must be > 0 and test rows >= 0 (got {rows}, {test_rows})")
    if not 0 <= copies < 1:
        raise RakutenError(f"the share of copies must be in [0, 1) (got {copies})")
    if image_size < 8:
        raise RakutenError(f"image size must be at least 8 pixels (got {image_size})")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise RakutenError(f"{out_dir} is not empty; pass --overwrite to replace it")
    workers = workers or os.cpu_count() or 1
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images" / "image_train").mkdir(parents=True)
    (staging / "images" / "image_test").mkdir()
    written = missing = corrupt = 0
    try:
        with (
            (staging / X_TRAIN_FILE).open("w", encoding="utf-8", newline="") as x_train,
            (staging / Y_TRAIN_FILE).open("w", encoding="utf-8", newline="") as y_train,
            (staging / X_TEST_FILE).open("w", encoding="utf-8", newline="") as x_test,
            zipfile.ZipFile(staging / IMAGE_ZIPS[0], "w")
            if images_zip
            else nullcontext() as zipped,
            tqdm(total=rows + test_rows, unit="rows", desc="synth", disable=None) as progress,
        ):
            x_writers = [csv.writer(f, lineterminator="\n") for f in (x_train, x_test)]
            y_writer = csv.writer(y_train, lineterminator="\n")
            for writer in x_writers:
                writer.writerow(("", *X_COLUMNS))
            y_writer.writerow(("", "prdtypecode"))
            for chunk, made in _in_order(
                _chunks(rows, test_rows, seed, images, image_size, copies, shift), workers
            ):
                split_name = _SPLITS[chunk.split]
                for offset, row in enumerate(made):
                    index = chunk.id_offset + chunk.start + offset
                    x_writers[chunk.split].writerow(
                        (index, row.designation, row.description, row.productid, row.imageid)
                    )
                    if chunk.split == 0:
                        y_writer.writerow((index, row.prdtypecode))
                    if not images:
                        continue
                    if row.image is None:
                        missing += 1
                        continue
                    name = f"image_{split_name}/image_{row.imageid}_product_{row.productid}.jpg"
                    (staging / "images" / name).write_bytes(row.image)
                    if zipped is not None:
                        _zip_entry(zipped, f"images/{name}", row.image)
                    written += 1
                    corrupt += row.image_corrupt
                progress.update(len(made))
        if not images:
            shutil.rmtree(staging / "images")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    summary = SynthSummary(str(out_dir), rows, test_rows, written, missing, corrupt)
    logger.info("synthetic catalogue written: %s", asdict(summary))
    return summary
