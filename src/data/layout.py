"""The hub's file layout, shared by every data step (generator, ingest, contract, dataset)."""

from __future__ import annotations

from typing import Final

X_TRAIN_FILE: Final = "X_train_update.csv"
Y_TRAIN_FILE: Final = "Y_train_CVw08PX.csv"
X_TEST_FILE: Final = "X_test_update.csv"
TEXT_FILES: Final = (X_TRAIN_FILE, Y_TRAIN_FILE, X_TEST_FILE)
X_COLUMNS: Final = ("designation", "description", "productid", "imageid")
# The hub ships its photos as images_low.zip; the official challenge called it images.zip.
IMAGE_ZIPS: Final = ("images_low.zip", "images.zip")
IMAGES_DIR: Final = "images"
IMAGE_SETS: Final = ("image_train", "image_test")
TRAIN_IMAGE_DIR: Final = f"{IMAGES_DIR}/image_train"
TEST_IMAGE_DIR: Final = f"{IMAGES_DIR}/image_test"
MANIFEST_FILE: Final = "MANIFEST.json"
# Labelled datasets uploaded over the API, under the incoming folder: `datasets/<purpose>/<id>/`.
DATASETS_DIR: Final = "datasets"
TRAINING_DATASETS_DIR: Final = f"{DATASETS_DIR}/training"
