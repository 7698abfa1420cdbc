"""Trains both neural branches data-parallel over two CPU devices, in a fresh process.

Run by tests/models/test_devices.py with KERAS_BACKEND set: under JAX, XLA_FLAGS splits the host
into two devices; under TensorFlow, the CPU is split into two logical devices. The two CPUs
stand in for two GPUs (devices.GPU_PREFIXES), so `placement` chooses the backend's strategy.
Prints the summaries as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd

if os.environ["KERAS_BACKEND"] == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from src.config import ImageCnnParams, TextCnnParams
from src.data.layout import TRAIN_IMAGE_DIR, X_TRAIN_FILE, Y_TRAIN_FILE
from src.data.synth import synthesize
from src.models import devices
from src.models.data import products_from_listings
from src.models.image_cnn import ImageBranch
from src.models.text_neural import NeuralTextBranch

devices.GPU_PREFIXES = ("cpu",)  # the two CPU devices play two GPUs
raw = Path(sys.argv[1])
synthesize(raw, rows=61, test_rows=1, image_size=64, seed=0, workers=1)
listings = pd.read_csv(raw / X_TRAIN_FILE, index_col=0)
products = products_from_listings(listings, images_dir=raw / TRAIN_IMAGE_DIR)
products["prdtypecode"] = pd.read_csv(raw / Y_TRAIN_FILE, index_col=0)["prdtypecode"]
train, val = products.iloc[:45], products.iloc[45:]
image = ImageBranch(
    ImageCnnParams(
        image_size=32, conv_filters=(4, 8), batch_size=4, epochs=2, workers=1, mixed_precision=False
    )
)
text = NeuralTextBranch(
    TextCnnParams(vocab_size=200, sequence_length=12, embedding_dim=4, filters=4, batch_size=4,
                  epochs=2, mixed_precision=False)
)  # fmt: skip
summaries = {"image_cnn": image.fit(train, val), "text_cnn": text.fit(train, val)}
summaries["predicted"] = {
    "image_cnn": int((~pd.isna(image.predict_proba(val)[:, 0])).sum()),
    "text_cnn": len(text.predict_proba(val)),
}
print(json.dumps(summaries, default=str))
