"""The synthetic catalogue: the hub's layout, real proportions, realistic mess, determinism."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from src.cli.main import app
from src.data import synth
from src.data.classes import PRDTYPECODES, TRAIN_COUNTS
from src.data.layout import X_TEST_FILE as X_TEST
from src.data.layout import X_TRAIN_FILE as X_TRAIN
from src.data.layout import Y_TRAIN_FILE as Y_TRAIN
from src.data.synth import Shift, class_allocation, synthesize
from src.errors import RakutenError

IMAGE_NAME = re.compile(r"^image_(\d+)_product_(\d+)\.jpg$")


def _tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _read_x(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, index_col=0)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic catalogue with photos and the zip, made once for the module."""
    out = tmp_path_factory.mktemp("synth") / "catalogue"
    synthesize(out, rows=1500, test_rows=200, image_size=96, seed=7, images_zip=True, workers=2)
    return out


def test_same_columns_dtypes_and_dialect_as_the_real_sample(
    catalogue: Path, rakuten_sample: Path
) -> None:
    for name in (X_TRAIN, Y_TRAIN, X_TEST):
        made, real = _read_x(catalogue / name), _read_x(rakuten_sample / name)
        assert list(made.columns) == list(real.columns)
        assert made.index.dtype == real.index.dtype
        assert made.dtypes.to_dict() == real.dtypes.to_dict()
        made_bytes, real_bytes = (
            (catalogue / name).read_bytes(),
            (rakuten_sample / name).read_bytes(),
        )
        assert made_bytes.splitlines()[0] == real_bytes.splitlines()[0]  # ",designation,..."
        assert b"\r\n" not in made_bytes and not made_bytes.startswith(b"\xef\xbb\xbf")
        made_bytes.decode("utf-8")
        # Writing back the way the originals were written reproduces the file byte for byte.
        assert made.to_csv(lineterminator="\n").encode() == made_bytes


def test_layout_ids_and_images(catalogue: Path) -> None:
    x_train, x_test = _read_x(catalogue / X_TRAIN), _read_x(catalogue / X_TEST)
    y_train = _read_x(catalogue / Y_TRAIN)
    assert len(x_train) == 1500 and len(x_test) == 200
    assert (y_train.index == x_train.index).all()
    assert list(x_test.index) == list(range(1500, 1700))  # the test index follows the train's
    both = pd.concat([x_train, x_test])
    assert both["productid"].is_unique and both["imageid"].is_unique
    for split, frame in (("train", x_train), ("test", x_test)):
        files = {p.name for p in (catalogue / "images" / f"image_{split}").iterdir()}
        expected = {f"image_{r.imageid}_product_{r.productid}.jpg" for r in frame.itertuples()}
        assert files <= expected and all(IMAGE_NAME.match(name) for name in files)
        assert 0 < len(expected - files) < 0.05 * len(frame)  # a few photos are missing
    with zipfile.ZipFile(catalogue / "images_low.zip") as archive:
        names = archive.namelist()
        assert len(names) == sum(1 for _ in (catalogue / "images").rglob("*.jpg"))
        first = names[0]
        assert archive.read(first) == (catalogue / first).read_bytes()


def test_photos_decode_at_the_asked_size_except_a_few_corrupt(catalogue: Path) -> None:
    broken = 0
    for path in (catalogue / "images" / "image_train").iterdir():
        try:
            with Image.open(path) as image:
                image.load()
                assert image.size == (96, 96) and image.mode == "RGB"
        except OSError:
            broken += 1
    assert 0 < broken < 20


def test_class_shares_at_20000_rows_are_within_a_point_of_the_real_ones(tmp_path: Path) -> None:
    synthesize(tmp_path / "big", rows=20_000, test_rows=0, images=False, seed=1)
    counts = _read_x(tmp_path / "big" / Y_TRAIN)["prdtypecode"].value_counts()
    real_total = sum(TRAIN_COUNTS.values())
    assert set(counts.index) == set(PRDTYPECODES)
    for code, real in TRAIN_COUNTS.items():
        assert abs(counts[code] / 20_000 - real / real_total) < 0.01


@pytest.mark.parametrize("rows", [1, 27, 1000, 84_916])
def test_class_allocation_sums_to_the_rows(rows: int) -> None:
    allocation = class_allocation(rows)
    assert sum(allocation.values()) == rows
    if rows == 84_916:
        assert allocation == TRAIN_COUNTS


def test_same_seed_gives_the_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    kwargs = {"rows": 700, "test_rows": 50, "image_size": 32, "images_zip": True}
    synthesize(tmp_path / "a", seed=3, workers=1, **kwargs)  # type: ignore[arg-type]
    synthesize(tmp_path / "b", seed=3, workers=2, **kwargs)  # type: ignore[arg-type]
    synthesize(tmp_path / "c", seed=4, workers=2, **kwargs)  # type: ignore[arg-type]
    first = _tree_digest(tmp_path / "a")
    assert first == _tree_digest(tmp_path / "b")
    assert first[X_TRAIN] != _tree_digest(tmp_path / "c")[X_TRAIN]


@pytest.mark.slow
def test_text_is_messy_like_the_real_catalogue(tmp_path: Path) -> None:
    synthesize(tmp_path / "t", rows=5000, test_rows=0, images=False, seed=5)
    x = _read_x(tmp_path / "t" / X_TRAIN)
    description = x["description"]
    text = x["designation"] + " " + description.fillna("")
    assert 0.31 < description.isna().mean() < 0.39
    assert 0.40 < text.str.contains(r"<[a-z/]+|&[a-z#0-9]+;").mean() < 0.56
    assert 0.005 < text.str.contains("¿|Ã").mean() < 0.06  # mojibake
    german = text.str.contains(r"\b(?:mit|für|und|Spiel|Buch)\b", case=False)
    assert 0.02 < german.mean() < 0.15


def _naive_bayes_weighted_accuracy(texts: pd.Series, labels: pd.Series) -> float:
    """A bag-of-words multinomial naive Bayes, trained on 80% and scored on the rest."""
    tokens = texts.str.lower().str.findall(r"\w+")
    vocabulary = {w: i for i, w in enumerate(sorted({w for ws in tokens for w in ws}))}
    classes = sorted(labels.unique())
    split = int(0.8 * len(texts))
    counts = np.ones((len(classes), len(vocabulary)))
    for words, label in zip(tokens[:split], labels[:split], strict=True):
        for word in words:
            counts[classes.index(label), vocabulary[word]] += 1
    log_likelihood = np.log(counts / counts.sum(axis=1, keepdims=True))
    log_prior = np.log(labels[:split].value_counts().reindex(classes).fillna(0).to_numpy() + 1)
    hits = 0
    for words, label in zip(tokens[split:], labels[split:], strict=True):
        scores = log_prior + sum(log_likelihood[:, vocabulary[w]] for w in words)
        hits += classes[int(np.argmax(scores))] == label
    return hits / (len(texts) - split)


def test_copies_repeat_a_title_under_new_productids(tmp_path: Path) -> None:
    synthesize(tmp_path / "c", rows=2000, test_rows=0, images=False, copies=0.2, seed=3, workers=1)
    x = _read_x(tmp_path / "c" / X_TRAIN)
    y = _read_x(tmp_path / "c" / Y_TRAIN)["prdtypecode"]
    assert x["productid"].is_unique
    repeated = x["designation"].duplicated(keep="first")
    assert 0.1 < repeated.mean() < 0.25
    assert (y.groupby(x["designation"]).nunique() == 1).all()  # a copy keeps its product type
    descriptions = x.assign(d=x["description"].fillna(""))[
        repeated | x["designation"].duplicated(keep=False)
    ]
    same = descriptions.groupby("designation")["d"].nunique() == 1
    assert 0.2 < same.mean() < 0.9  # half keep the description, half have their own
    synthesize(tmp_path / "n", rows=300, test_rows=0, images=False, seed=3, workers=1)
    synthesize(tmp_path / "z", rows=300, test_rows=0, images=False, copies=0.0, seed=3, workers=1)
    assert _tree_digest(tmp_path / "n") == _tree_digest(tmp_path / "z")


@pytest.mark.slow
def test_text_is_learnable_but_not_trivial(tmp_path: Path) -> None:
    synthesize(tmp_path / "t", rows=6000, test_rows=0, images=False, seed=11)
    x, y = _read_x(tmp_path / "t" / X_TRAIN), _read_x(tmp_path / "t" / Y_TRAIN)["prdtypecode"]
    accuracy = _naive_bayes_weighted_accuracy(
        x["designation"] + " " + x["description"].fillna(""), y
    )
    assert 0.55 < accuracy < 0.95


@pytest.mark.slow
def test_photos_carry_the_product_type(tmp_path: Path) -> None:
    synthesize(tmp_path / "i", rows=2500, test_rows=0, image_size=32, seed=2)
    x, y = _read_x(tmp_path / "i" / X_TRAIN), _read_x(tmp_path / "i" / Y_TRAIN)["prdtypecode"]
    features, labels = [], []
    for row, code in zip(x.itertuples(), y, strict=True):
        path = (
            tmp_path
            / "i"
            / "images"
            / "image_train"
            / f"image_{row.imageid}_product_{row.productid}.jpg"
        )
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32) / 255
        except (FileNotFoundError, OSError):
            continue
        features.append(pixels.ravel())
        labels.append(code)
    data, target = np.stack(features), np.array(labels)
    shuffled = np.random.default_rng(0).permutation(target)
    accuracy = _nearest_centroid_accuracy(data, target)
    chance = _nearest_centroid_accuracy(data, shuffled)
    assert accuracy > chance + 0.05  # well above what the same model finds in shuffled labels


def _nearest_centroid_accuracy(data: np.ndarray, target: np.ndarray) -> float:
    """Accuracy of a nearest-class-mean classifier fitted on 80% and scored on the rest."""
    split = int(0.8 * len(data))
    classes = np.unique(target[:split])
    centroids = np.stack([data[:split][target[:split] == c].mean(axis=0) for c in classes])
    distances = ((data[split:, None, :] - centroids[None]) ** 2).sum(axis=2)
    return float((classes[distances.argmin(axis=1)] == target[split:]).mean())


def test_a_failed_run_leaves_the_previous_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    synthesize(out, rows=300, test_rows=0, images=False, seed=1)
    before = _tree_digest(out)
    calls = 0
    make_chunk = synth._make_chunk

    def failing(chunk: synth._Chunk) -> list[synth._Row]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("disk full")
        return make_chunk(chunk)

    monkeypatch.setattr(synth, "_make_chunk", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        synthesize(out, rows=900, test_rows=0, images=False, seed=2, workers=1, overwrite=True)
    assert _tree_digest(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_refuses_to_overwrite_without_being_asked(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(RakutenError, match="not empty"):
        synthesize(tmp_path, rows=10, test_rows=0, images=False)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_cli_takes_defaults_from_params_and_prints_a_json_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("synthetic:\n  rows: 120\n  test_rows: 30\n  images: false\n  seed: 9\n")
    monkeypatch.setenv("RAKUTEN_PARAMS_FILE", str(params))
    from src.config import get_settings

    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "o")])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 120 and summary["test_rows"] == 30
    assert len(_read_x(tmp_path / "o" / X_TEST)) == 30
    assert not (tmp_path / "o" / "images").exists()


def test_cli_reports_a_bad_output_folder_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("occupied")
    rakuten = Path(sys.executable).parent / "rakuten"
    done = subprocess.run(
        [str(rakuten), "data", "synth", "--out", str(tmp_path), "--rows", "5", "--no-images"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in done.stderr


def test_a_shifted_catalogue_skews_the_classes_and_drops_descriptions_and_photos(
    tmp_path: Path,
) -> None:
    shift = Shift(skew_classes=(10, 40), skew_share=0.8, no_description=0.9, missing_photos=0.9)
    summary = synthesize(
        tmp_path / "shifted", rows=1000, test_rows=0, image_size=8, seed=5, workers=1, shift=shift
    )
    labels = pd.read_csv(tmp_path / "shifted" / Y_TRAIN, index_col=0)["prdtypecode"]
    shares = labels.value_counts(normalize=True)
    assert shares[10] + shares[40] == pytest.approx(0.8 + 0.2 * 0.066, abs=0.01)
    listings = pd.read_csv(tmp_path / "shifted" / X_TRAIN, index_col=0)
    assert listings["description"].isna().mean() == pytest.approx(0.9, abs=0.04)
    assert summary.images_missing / 1000 == pytest.approx(0.9, abs=0.04)


def test_a_shift_refuses_unknown_types_and_shares_outside_0_1() -> None:
    with pytest.raises(RakutenError, match="unknown prdtypecode"):
        Shift(skew_classes=(11,))
    with pytest.raises(RakutenError, match="between 0 and 1"):
        Shift(no_description=1.5)
