"""Storage by URI: one small interface over a local folder and an S3 prefix.

Bytes flow through here between the snapshot writer/reader and the place a snapshot
lives. A `Storage` is rooted at a folder URI (`file:///abs/path`, `s3://bucket/prefix`,
or a plain path, which means `file://`); every key is a relative, `/`-separated path
under that root. What must stay true:

- `put` is atomic: a reader sees the whole new content or nothing (temp file + rename
  on `file://`; a single PUT or a completed multipart upload on S3).
- keys never escape the root (no `..`, no absolute keys): manifests are untrusted input.
- every failure is a `StorageError` whose message names the URI and the cause.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Protocol

from .errors import StorageError

FILE_SCHEME = "file"
S3_SCHEME = "s3"

S3_SETTING_NAMES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_MAX_ATTEMPTS",
    "REWIND_S3_CONNECT_TIMEOUT_SECONDS",
    "REWIND_S3_READ_TIMEOUT_SECONDS",
)
"""The variables that configure S3 storage (boto3 also reads its files, ~/.aws/...).
The last three bound every request: see `s3_storage.S3Timeouts`."""

_s3_overlay: ContextVar[Mapping[str, str] | None] = ContextVar("rewind_s3", default=None)


@contextlib.contextmanager
def s3_settings(variables: Mapping[str, str] | None) -> Iterator[None]:
    """Within the block, S3 storage opened in this context (this thread or asyncio task)
    uses `variables` (names of `S3_SETTING_NAMES`, as in the environment) laid over the
    environment; `os.environ` is never changed. Other names are ignored."""
    wanted = {k: v for k, v in (variables or {}).items() if k in S3_SETTING_NAMES}
    token = _s3_overlay.set(wanted)
    try:
        yield
    finally:
        _s3_overlay.reset(token)


def current_settings() -> dict[str, str]:
    """The S3 settings in effect here: the environment with any `s3_settings` over it."""
    settings = {name: os.environ[name] for name in S3_SETTING_NAMES if name in os.environ}
    settings.update(_s3_overlay.get() or {})
    return settings


class Storage(Protocol):
    """A folder of files (objects) addressed by relative keys."""

    @property
    def uri(self) -> str:
        """The root's URI, without a trailing slash."""
        ...

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        """Write `data` to `key` atomically, replacing any previous content."""
        ...

    def get(self, key: str) -> bytes:
        """The whole content of `key`; `NotFoundError` if it does not exist."""
        ...

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes of `key` from `offset`; fewer if the file is shorter."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Every key under the folder `prefix` (recursively), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Delete one key; no error if it does not exist."""
        ...

    def delete_prefix(self, prefix: str = "") -> None:
        """Delete every key under the folder `prefix` ("" = the whole root)."""
        ...

    def exists(self, key: str) -> bool:
        """Whether `key` exists."""
        ...

    def size(self, key: str) -> int:
        """Size of `key` in bytes; `NotFoundError` if it does not exist."""
        ...


_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def split_scheme(uri: str) -> tuple[str, str]:
    """(`scheme`, rest) of a URI; a plain path is `file`. Raises for other schemes."""
    match = _SCHEME_RE.match(uri)
    if match is None:
        if not uri:
            raise StorageError("empty snapshot URI: use file:///path or s3://bucket/prefix")
        return FILE_SCHEME, uri
    scheme = match.group(1).lower()
    if scheme not in (FILE_SCHEME, S3_SCHEME):
        raise StorageError(
            f"unsupported scheme '{match.group(1)}' in '{uri}', use file:// or s3://"
        )
    return scheme, uri[match.end() :]


def join_uri(base: str, *parts: str) -> str:
    """`base/part/part`, with exactly one slash between the pieces."""
    pieces = [base.rstrip("/")] + [p.strip("/") for p in parts if p.strip("/")]
    return "/".join(pieces)


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative key, else raise `StorageError`."""
    if not key or key.startswith("/") or "\\" in key:
        raise StorageError(f"invalid file key {key!r}: keys are relative '/'-separated paths")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise StorageError(f"invalid file key {key!r}: no empty, '.' or '..' components")
    return key


def folder_prefix(prefix: str) -> str:
    """Normalise a folder prefix: "" stays "", "a/b" becomes "a/b/"."""
    prefix = prefix.strip("/")
    if not prefix:
        return ""
    check_key(prefix)
    return prefix + "/"


def open_storage(uri: str) -> Storage:
    """The storage rooted at `uri` (`file://`, `s3://` or a plain path)."""
    scheme, _ = split_scheme(uri)
    # Imported here: boto3 takes a while to import, and file:// users never need it.
    if scheme == S3_SCHEME:
        from .s3_storage import S3Storage  # noqa: PLC0415

        return S3Storage.from_uri(uri)
    from .file_storage import FileStorage  # noqa: PLC0415 - it imports this module

    return FileStorage.from_uri(uri)
