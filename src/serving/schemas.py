"""The API's request and response bodies (they make its OpenAPI document at /docs)."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Annotated, Final

from PIL import Image, UnidentifiedImageError
from pydantic import Base64Bytes, BaseModel, ConfigDict, Field, field_validator

MAX_PHOTO_BYTES: Final = 5 * 1024 * 1024
# The catalogue's photos are 500x500; a larger one costs memory to decode for nothing.
MAX_PHOTO_PIXELS: Final = 4096 * 4096
MAX_TEXT_CHARS: Final = 20_000  # the longest real descriptions are about 12,000 characters
# A title has some text: the schema says it (a character that is no blank), so that a client, or
# schemathesis, never sends a blank title the validator below would refuse.
TITLE_PATTERN: Final = r"\S"
# The photo formats the API takes (PIL's names): what the catalogue's photos are.
PHOTO_FORMATS: Final = frozenset({"JPEG", "PNG"})

# The catalogue's id: what the predictions store keeps (a BIGINT), the same rule on every route.
ProductId = Annotated[
    int, Field(ge=0, le=2**63 - 1, description="The catalogue's id of the product")
]


class Listing(BaseModel):
    """A product as the catalogue lists it: its title, its description and its photo."""

    model_config = ConfigDict(extra="forbid")

    productid: ProductId | None = Field(
        None, description="The catalogue's id, echoed in the answer"
    )
    designation: str = Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        pattern=TITLE_PATTERN,
        description="The product's title (not blank)",
    )
    description: str | None = Field(
        None, max_length=MAX_TEXT_CHARS, description="Its description (HTML is fine)"
    )
    image: Base64Bytes | None = Field(
        None, description="The photo, JPEG or PNG only, base64; without it the text decides alone"
    )

    @field_validator("designation")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("designation is blank")
        return value

    @field_validator("image")
    @classmethod
    def _is_a_photo(cls, value: bytes | None) -> bytes | None:
        if value is None:
            return None
        if len(value) > MAX_PHOTO_BYTES:
            raise ValueError(f"photo of {len(value)} bytes; at most {MAX_PHOTO_BYTES}")
        try:
            with Image.open(io.BytesIO(value), formats=sorted(PHOTO_FORMATS)) as photo:
                width, height = photo.size
                photo.verify()
        except Image.DecompressionBombError:
            raise ValueError(f"photo over {MAX_PHOTO_PIXELS} pixels") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ValueError(f"image is not a readable JPEG or PNG photo: {error}") from None
        if width * height > MAX_PHOTO_PIXELS:
            raise ValueError(f"photo of {width}x{height} pixels; at most {MAX_PHOTO_PIXELS}")
        return value


class PredictRequest(BaseModel):
    """One or a few listings to classify."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "products": [
                        {
                            "productid": 4128438366,
                            "designation": "Piscine tubulaire hors-sol 300 x 200 cm",
                            "description": "<p>Structure acier, liner PVC renforcé.</p>",
                        }
                    ]
                }
            ]
        },
    )

    products: list[Listing] = Field(min_length=1)


class TypeScore(BaseModel):
    """A product type and the model's probability for it."""

    prdtypecode: int
    label: str = Field(description="The type's common name")
    probability: float


class ProductPrediction(TypeScore):
    """The predicted type of one listing, and the three most likely types."""

    productid: ProductId | None
    top3: list[TypeScore]


class ModelInfo(BaseModel):
    """The registered model version that answered."""

    name: str
    version: str
    alias: str | None
    run_id: str | None
    loaded_at: datetime


class PredictResponse(BaseModel):
    """The predictions, in the order of the request's products."""

    model: ModelInfo
    predictions: list[ProductPrediction]


class Readiness(BaseModel):
    """Whether the API can answer /predict, and why not."""

    ready: bool
    model: ModelInfo | None
    problem: str | None


class LabelsUpload(BaseModel):
    """Late labels stored by POST /labels."""

    source: str = Field(description="The file's name under RAKUTEN_INCOMING_DIR/labels/")
    labels: int = Field(description="Labels in the file")
    new: int = Field(description="Labels not stored before from this file")
