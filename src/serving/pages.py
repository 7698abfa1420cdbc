"""Pages for people (server-rendered Jinja2, no front-end build): sign in, try the model, run the
model's lifecycle. They call what the API's routes call.

A person signs in with an API key; the session cookie (signed, HttpOnly, SameSite=Strict) then
holds the key's id, which is checked again as API keys are (a revoked key ends the session).
Every form carries the session's CSRF token, and a POST without it is refused (403).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.middleware.sessions import SessionMiddleware

from src.db.api_keys import ADMIN, PREDICT
from src.db.datasets import list_datasets
from src.db.models import DatasetPurpose
from src.registry.lifecycle import champion_history
from src.serving.auth import ANONYMOUS, Caller, KeyChecker, check_key
from src.serving.datasets import UploadError, store_upload
from src.serving.lifecycle_routes import (
    model_versions,
    promote_version,
    registry_client,
    rollback_champion,
    start_validation,
)
from src.serving.schemas import MAX_PHOTO_BYTES, Listing

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))
SESSION_COOKIE: Final = "rakuten_session"
SESSION_SECONDS: Final = 8 * 3600  # a working day; then sign in again
CSRF_FIELD: Final = "csrf_token"


def mount(app: FastAPI, secret: bytes | None) -> None:
    """Add the signed session cookie the pages use (its key derived from the API key secret)."""
    key = (
        hmac.new(secret, b"rakuten pages session", hashlib.sha256).hexdigest()
        if secret is not None
        else secrets.token_hex(32)  # auth off: sessions only carry CSRF tokens, per process
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=key,
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_SECONDS,
        same_site="strict",  # Starlette always sets HttpOnly on it
    )


async def upload_listing(
    designation: str, description: str | None, photo: UploadFile | None
) -> Listing:
    """A listing from a form, checked as /predict's are (the photo read up to its limit);
    a `ValidationError` names what is wrong."""
    fields: dict[str, Any] = {"designation": designation, "description": description or None}
    if photo is not None and photo.filename:
        # Listing takes base64 (what /predict's JSON carries): one set of checks for both.
        fields["image"] = base64.b64encode(await photo.read(MAX_PHOTO_BYTES + 1))
    return Listing.model_validate(fields)


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use)."""
    token: str | None = request.session.get("csrf")
    if token is None:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, sent: str) -> None:
    """Refuse a form whose CSRF token is not the session's (403)."""
    expected = request.session.get("csrf")
    if not expected or not hmac.compare_digest(str(expected), sent):
        raise HTTPException(403, "the form's CSRF token is missing or stale: reload the page")


class SignInNeededError(Exception):
    """The page needs a signed-in key: the handler redirects to the sign-in page."""


def _keys(request: Request) -> KeyChecker:
    keys: KeyChecker = request.app.state.keys
    return keys


def signed_in(request: Request, scope: str) -> Caller:
    """The session's key, with `scope`; SignInNeededError if none, 403 without the scope."""
    keys = _keys(request)
    if not keys.enabled:
        return ANONYMOUS
    key_id = request.session.get("key_id")
    caller = None if key_id is None else keys.by_id(int(key_id))
    if caller is None:
        request.session.pop("key_id", None)
        raise SignInNeededError
    if not caller.allows(scope):
        raise HTTPException(403, f"the key you signed in with lacks the scope {scope!r}")
    return caller


def _render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    who = None
    key_id = request.session.get("key_id")
    if key_id is not None:
        who = request.session.get("key_name")
    return templates.TemplateResponse(
        request,
        template,
        {"csrf_token": csrf_token(request), "who": who, **context},
        status_code=status,
    )


def _to_sign_in(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/ui/login?next={quote(request.url.path)}", status_code=303)


def _flash(request: Request, kind: str, text: str) -> None:
    request.session["flash"] = {"kind": kind, "text": text}


@router.get("", response_class=RedirectResponse)
def home() -> RedirectResponse:
    """The pages start at the predict form."""
    return RedirectResponse("/ui/predict", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/ui/predict") -> HTMLResponse:
    """The sign-in form: an API key."""
    return _render(request, "login.html", next=next if next.startswith("/ui/") else "/ui/predict")


@router.post("/login", response_model=None)
def login(
    request: Request,
    key: Annotated[str, Form(max_length=200)],
    sent_csrf: Annotated[str, Form(alias=CSRF_FIELD)],
    next: Annotated[str, Form()] = "/ui/predict",
) -> Response:
    """Check the key; on success the session holds its id (never the key)."""
    check_csrf(request, sent_csrf)
    target = next if next.startswith("/ui/") else "/ui/predict"
    try:
        caller = check_key(_keys(request), key.strip())
    except HTTPException as error:
        if error.status_code != 401:
            raise
        return _render(request, "login.html", 401, next=target, error="Unknown or revoked key.")
    request.session.clear()  # a new session on sign-in: a fixed session is no use to anyone
    request.session.update(
        {"key_id": caller.key_id, "key_name": caller.name, "csrf": secrets.token_urlsafe(32)}
    )
    logger.info("pages: API key %s (%s) signed in", caller.key_id, caller.name)
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
def logout(request: Request, sent_csrf: Annotated[str, Form(alias=CSRF_FIELD)]) -> RedirectResponse:
    """End the session."""
    check_csrf(request, sent_csrf)
    request.session.clear()
    return RedirectResponse("/ui/login", status_code=303)


@router.get("/predict", response_model=None)
def predict_page(request: Request) -> Response:
    """The form where a person tries the model: title, description, photo."""
    try:
        signed_in(request, PREDICT)
    except SignInNeededError:
        return _to_sign_in(request)
    return _render(request, "predict.html")


@router.post("/predict", response_model=None)
async def predict_form(
    request: Request,
    designation: Annotated[str, Form(max_length=20_000)],
    sent_csrf: Annotated[str, Form(alias=CSRF_FIELD)],
    description: Annotated[str | None, Form(max_length=20_000)] = None,
    photo: UploadFile | None = None,
) -> Response:
    """Classify the form's listing; show the top 3 with probabilities beside the photo."""
    try:
        who = signed_in(request, PREDICT)
    except SignInNeededError:
        return _to_sign_in(request)
    check_csrf(request, sent_csrf)
    try:
        listing = await upload_listing(designation, description, photo)
    except ValidationError as error:
        text = "; ".join(problem["msg"] for problem in error.errors())
        return _render(
            request, "predict.html", 422, error=text, sent=listing_fields(designation, description)
        )
    service = request.app.state.service
    try:
        answer = await service.answer([listing], who, "/ui/predict")
    except HTTPException as error:  # no model loaded yet: say so on the page
        return _render(
            request,
            "predict.html",
            error.status_code,
            error=str(error.detail),
            sent=listing_fields(designation, description),
        )
    photo_uri = None
    if listing.image is not None:
        photo_uri = "data:image;base64," + base64.b64encode(listing.image).decode()
    return _render(
        request,
        "predict.html",
        answer=answer,
        photo=photo_uri,
        sent=listing_fields(designation, description),
    )


def listing_fields(designation: str, description: str | None) -> dict[str, str]:
    """What the form sent, to show it again."""
    return {"designation": designation, "description": description or ""}


@router.get("/models", response_model=None)
def models_page(request: Request) -> Response:
    """Versions, scores, gate reasons, champion history; buttons to validate, promote, roll back."""
    try:
        signed_in(request, ADMIN)
    except SignInNeededError:
        return _to_sign_in(request)
    client = registry_client(request.app.state.service.settings)
    flash = request.session.pop("flash", None)
    return _render(
        request,
        "models.html",
        versions=model_versions(client),
        history=list(reversed(champion_history(client))),
        validation_sets=list_datasets(request.app.state.service.engine, DatasetPurpose.VALIDATION),
        flash=flash,
    )


@router.post("/models/{version}/validate", response_model=None)
def validate_form(
    request: Request,
    version: str,
    sent_csrf: Annotated[str, Form(alias=CSRF_FIELD)],
    dataset_id: Annotated[int | None, Form()] = None,  # the select's empty choice: none
) -> Response:
    """Start the gate on a version (a background job), then back to the models page."""

    def move(who: Caller) -> str:
        job = start_validation(request, version, who, dataset_id)
        return f"Gate of version {version} started (job {job.id}); reload later."

    return _admin_move(request, sent_csrf, "Not validated", move)


@router.post("/models/{version}/promote", response_model=None)
def promote_form(
    request: Request, version: str, sent_csrf: Annotated[str, Form(alias=CSRF_FIELD)]
) -> Response:
    """Promote a version (refused with the reason unless its gate passed)."""

    def move(who: Caller) -> str:
        result = promote_version(request.app.state.service.settings, version, who)
        text = "is now champion" if result["promoted"] else f"not promoted: {result['reason']}"
        return f"Version {version} {text}."

    return _admin_move(request, sent_csrf, "Not promoted", move)


@router.post("/models/rollback", response_model=None)
def rollback_form(
    request: Request,
    sent_csrf: Annotated[str, Form(alias=CSRF_FIELD)],
    reason: Annotated[str, Form(min_length=1, max_length=500)] = "rollback from the models page",
) -> Response:
    """Move @champion back to the previous champion."""

    def move(who: Caller) -> str:
        result = rollback_champion(request.app.state.service.settings, who, reason)
        return f"Champion back to version {result['version']}."

    return _admin_move(request, sent_csrf, "Not rolled back", move)


def _admin_move(
    request: Request, sent_csrf: str, refused: str, move: Callable[[Caller], str]
) -> Response:
    """A models-page form: an admin signed in, its CSRF token, then `move(who)`; the message it
    returns (or the refusal's reason) is flashed on the models page it goes back to."""
    try:
        who = signed_in(request, ADMIN)
    except SignInNeededError:
        return _to_sign_in(request)
    check_csrf(request, sent_csrf)
    try:
        message = move(who)
    except HTTPException as error:
        _flash(request, "error", f"{refused}: {error.detail}")
    else:
        _flash(request, "info", message)
    return RedirectResponse("/ui/models", status_code=303)


@router.get("/datasets", response_model=None)
def datasets_page(request: Request) -> Response:
    """The upload form (X CSV, Y CSV, photo zip, purpose) and the uploaded datasets."""
    try:
        signed_in(request, ADMIN)
    except SignInNeededError:
        return _to_sign_in(request)
    return _render(
        request,
        "datasets.html",
        datasets=list_datasets(request.app.state.service.engine),
        purposes=[purpose.value for purpose in DatasetPurpose],
        flash=request.session.pop("flash", None),
    )


@router.post("/datasets", response_model=None)
def upload_form(
    request: Request,
    sent_csrf: Annotated[str, Form(alias=CSRF_FIELD)],
    purpose: Annotated[DatasetPurpose, Form()],
    x_file: UploadFile,
    y_file: UploadFile,
    photos: UploadFile | None = None,
) -> Response:
    """Store an uploaded dataset as POST /datasets does, then back to the list."""
    try:
        who = signed_in(request, ADMIN)
    except SignInNeededError:
        return _to_sign_in(request)
    check_csrf(request, sent_csrf)
    service = request.app.state.service
    zipped = photos.file if photos is not None and photos.filename else None
    try:
        record, _ = store_upload(
            service.settings, purpose, x_file.file, y_file.file, zipped, service.engine, who.key_id
        )
    except UploadError as error:
        _flash(request, "error", f"Not stored: {error}")
    else:
        _flash(
            request,
            "info",
            f"Dataset {record.id} stored: {record.rows} rows, {record.quarantined} quarantined, "
            f"{record.photos} photos.",
        )
    return RedirectResponse("/ui/datasets", status_code=303)
