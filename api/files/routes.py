"""``/api/files``: the data library (upload FITS, list, get, download, delete), and the signed
download links of the local storage backend (``/api/storage/<key>``)."""

from __future__ import annotations

import datetime as dt
import posixpath
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Response, request, send_file
from flask.views import MethodView
from flask_smorest import Blueprint
from werkzeug.datastructures import FileStorage
from werkzeug.utils import secure_filename

from api.auth.guards import BEARER, caller, require_roles
from api.auth.models import Role
from api.context import ctx
from api.envelope import envelope, ok
from api.errors import Forbidden, NotFound, PayloadTooLarge, ValidationFailed
from api.files import service
from api.files.links import LINK_PATH
from api.files.schemas import DownloadSchema, FileListArgs, FileSchema, FileUploadSchema
from api.files.thumbnails import queue_thumbnail
from api.multipart import MULTIPART, MultipartBlueprint
from api.pagination import pagination
from storage import ObjectNotFound, ObjectTooLarge, StorageError
from storage.signing import verify

blp = MultipartBlueprint("files", __name__, url_prefix="/api/files", description="Your data library of FITS files.")
links_blp = Blueprint("storage-links", __name__, url_prefix=LINK_PATH.rstrip("/"),
                      description="Signed download links (local storage backend).")

OWNERS = (Role.USER, Role.ADMIN)
#: Multipart framing around the file: boundaries, part headers, the optional name field.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
DEFAULT_UPLOAD_NAME = "upload.fits"

F = TypeVar("F", bound=Callable[..., Any])


def upload_limit(view: F) -> F:
    """Raise this request's body limit to the upload limit, and refuse an oversized upload
    from its Content-Length before reading a byte of it."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        limit = ctx().settings.max_upload_bytes
        request.max_content_length = limit + MULTIPART_OVERHEAD_BYTES
        if request.content_length is not None and request.content_length > limit + MULTIPART_OVERHEAD_BYTES:
            raise _too_large(limit)
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"max_upload_bytes: files are limited to {limit} bytes",
                           details={"limit": "max_upload_bytes", "max": limit})


def _clean_name(given: str | None) -> str:
    name = secure_filename(given or "")[:200]
    return name or DEFAULT_UPLOAD_NAME


@blp.route("")
class Files(MethodView):
    @require_roles(*OWNERS)
    @blp.arguments(FileListArgs, location="query")
    @blp.response(200, envelope(FileSchema, many=True))
    @blp.doc(security=BEARER)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List your files (admins: everyone's) with sizes; ``meta.pagination``."""
        with ctx().transaction() as conn:
            files, total = service.list_files(conn, caller(), args["page"], args["limit"], args["sort"], args["q"])
        return ok(files, {"pagination": pagination(args["page"], args["limit"], total)})

    @upload_limit
    @require_roles(*OWNERS)
    @blp.arguments(FileUploadSchema, location=MULTIPART)
    @blp.response(201, envelope(FileSchema))
    @blp.alt_response(413, description="The file is larger than max_upload_bytes (GET /api/jobs/limits).")
    @blp.alt_response(422, description="No `file` part, or it is not a FITS file.")
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Upload a FITS file (multipart/form-data, part ``file``). It is streamed to storage;
        jobs then name it as ``{"file_id": …}``. A ``fits.thumbnail`` job is queued for it (the
        console's quick-look picture; ``SKYFLEET_FILE_THUMBNAILS=false`` turns that off)."""
        c, who = ctx(), caller()
        upload: FileStorage = body["file"]
        head = upload.stream.read(2880)
        if not service.looks_like_fits(head):
            raise ValidationFailed("file: not a FITS file (it must start with a SIMPLE = T header card)",
                                   details={"location": "files", "fields": {"file": ["not a FITS file"]}})
        upload.stream.seek(0)
        name = _clean_name(body.get("name") or upload.filename)
        key = service.upload_key(who.user_id, uuid.uuid4().hex, name)
        try:
            stored = c.storage.put(key, upload.stream, "application/fits", max_bytes=c.settings.max_upload_bytes)
        except ObjectTooLarge:
            raise _too_large(c.settings.max_upload_bytes) from None
        try:
            with c.transaction() as conn:
                row = service.record_file(conn, who.user_id, name, stored)
                if c.settings.file_thumbnails:
                    queue_thumbnail(conn, who.user_id, row["id"])
        except BaseException:
            c.storage.delete(key)  # never leave an object no row points at
            raise
        return ok(row), 201


@blp.route("/<int:file_id>")
class FileDetail(MethodView):
    @require_roles(*OWNERS)
    @blp.response(200, envelope(FileSchema))
    @blp.alt_response(404, description="No such file, or not yours.")
    @blp.doc(security=BEARER)
    def get(self, file_id: int) -> dict[str, Any]:
        """One file's metadata."""
        with ctx().transaction() as conn:
            return ok(service.get_file(conn, caller(), file_id))

    @require_roles(*OWNERS)
    @blp.response(200, envelope(FileSchema))
    @blp.alt_response(404, description="No such file, or not yours.")
    @blp.alt_response(409, description="An active job reads this file.")
    @blp.doc(security=BEARER)
    def delete(self, file_id: int) -> dict[str, Any]:
        """Delete a file (refused while a pending or running job reads it)."""
        c = ctx()
        with c.transaction() as conn:
            row = service.get_file(conn, caller(), file_id)
            key = service.delete_file(conn, caller(), file_id)
        c.storage.delete(key)
        return ok(row)


@blp.route("/<int:file_id>/download")
class FileDownload(MethodView):
    @require_roles(*OWNERS)
    @blp.response(200, envelope(DownloadSchema))
    @blp.alt_response(404, description="No such file, or not yours.")
    @blp.doc(security=BEARER)
    def get(self, file_id: int) -> dict[str, Any]:
        """A URL that downloads the file until ``expires_at`` (no token needed to fetch it)."""
        c = ctx()
        with c.transaction() as conn:
            row = service.get_file(conn, caller(), file_id)
        return ok(download_entry(row["storage_key"], row["name"], row["size"], row["sha256"], row["content_type"]))


def download_entry(key: str, name: str, size: int | None, sha256: str | None,
                   content_type: str | None) -> dict[str, Any]:
    """One file of a download listing, with its URL and expiry."""
    url, expires_at = ctx().linker.link(key, request.url_root, name)
    return {"name": name, "key": key, "size": size, "sha256": sha256, "content_type": content_type,
            "url": url, "expires_at": dt.datetime.fromtimestamp(expires_at, dt.UTC)}


@links_blp.route("/<path:key>")
class SignedLink(MethodView):
    @links_blp.response(200, description="The object's bytes.")
    @links_blp.alt_response(403, description="The signature is invalid or the link expired.")
    @links_blp.alt_response(404, description="The object is gone.")
    def get(self, key: str) -> Response:
        """Download an object through a signed link (from a ``download`` endpoint; no token)."""
        c = ctx()
        try:
            expires_at = int(request.args.get("expires", ""))
        except ValueError:
            raise Forbidden("invalid or expired download link") from None
        if not verify(key, expires_at, request.args.get("signature", ""), c.linker.secret):
            raise Forbidden("invalid or expired download link")
        try:
            path = c.storage.local_path(key)
            if path is None or not path.is_file():
                raise ObjectNotFound(key)
        except StorageError:
            raise NotFound("the file no longer exists") from None
        return send_file(path, as_attachment=True, download_name=posixpath.basename(key), conditional=True,
                         max_age=0)
