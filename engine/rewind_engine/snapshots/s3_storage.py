"""`s3://bucket/prefix` storage through boto3, configured by the environment.

Settings come from the standard AWS variables and files (`AWS_ENDPOINT_URL` or
`AWS_ENDPOINT_URL_S3` for MinIO, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
`AWS_REGION`, `~/.aws/...`), so MinIO and AWS work unchanged. The region defaults to
us-east-1; a custom endpoint gets path-style addressing (MinIO has no virtual hosts).

A process that serves several owners of storage (the operator: one Secret per app)
lays an owner's variables over the environment for a block of code with
`storage.s3_settings(...)`: a context variable, seen by the storage objects made in
that context (in this thread or task only), never written to `os.environ`.

What must stay true:
- every request has a connect and a read timeout and bounded retries (`S3Timeouts`):
  an unreachable endpoint fails in seconds and a hung one within a minute or two, never
  blocks for ever, with one `StorageError` that names the endpoint;
- large files go up as a multipart upload whose parts are sent in parallel, and come
  down as parallel ranged GETs; small files take one request either way;
- a failed multipart upload is aborted, so no half object is ever visible.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from .errors import NotFoundError, StorageError
from .storage import (
    S3_SCHEME,
    S3_SETTING_NAMES,
    check_key,
    current_settings,
    folder_prefix,
    split_scheme,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

T = TypeVar("T")


@dataclass(frozen=True)
class S3Timeouts:
    """How long one S3 request may take, from the settings in effect (environment or
    `s3_settings`). A store that is down fails at connect; a store that hangs (paused,
    behind a partition or a stuck load balancer) accepts the connection and never
    answers, and only the read timeout ends that. Worst case of one request: about
    `max_attempts * (connect_s + read_s)` plus botocore's short back-off."""

    connect_s: float = 5.0
    """Seconds to open a connection (`REWIND_S3_CONNECT_TIMEOUT_SECONDS`). An endpoint on
    a LAN answers in milliseconds and a far region in tens of them; 5 s is patient with
    a loaded endpoint yet lets a dead one fail within seconds."""

    read_s: float = 30.0
    """Seconds to wait for the next bytes of a response once connected
    (`REWIND_S3_READ_TIMEOUT_SECONDS`). It is the longest silence, not the longest
    transfer: an 8 MiB part on a slow link still streams. 30 s survives a store's GC pause
    and ends a hung one."""

    max_attempts: int = 3
    """Attempts per request, the first included (`AWS_MAX_ATTEMPTS`, the standard AWS
    variable; botocore "standard" retry mode with back-off). 3 rides out a dropped
    connection without multiplying a hang."""

    @classmethod
    def from_settings(cls, settings: Mapping[str, str]) -> S3Timeouts:
        """The timeouts named in `settings`; a bad value is a `StorageError` naming it."""
        default = cls()

        def number(name: str, fallback: float) -> float:
            text = settings.get(name)
            if text is None or not text.strip():
                return fallback
            try:
                value = float(text)
            except ValueError:
                value = -1.0
            if value <= 0:
                raise StorageError(f"{name}={text!r}: give a positive number of seconds")
            return value

        attempts = number("AWS_MAX_ATTEMPTS", default.max_attempts)
        if attempts != int(attempts):
            raise StorageError(f"AWS_MAX_ATTEMPTS={attempts:g}: give a whole number")
        return cls(
            connect_s=number("REWIND_S3_CONNECT_TIMEOUT_SECONDS", default.connect_s),
            read_s=number("REWIND_S3_READ_TIMEOUT_SECONDS", default.read_s),
            max_attempts=int(attempts),
        )


PART_SIZE = 8 * 1024 * 1024
"""Multipart part size and ranged-GET chunk size (S3 needs parts >= 5 MiB)."""
MULTIPART_THRESHOLD = 16 * 1024 * 1024
"""Files at least this large are uploaded in parallel parts."""
TRANSFER_THREADS = 8
"""Parallel part uploads/downloads per process: S3 gives 85-90 MB/s per connection."""

_clients: dict[tuple[str | None, ...], S3Client] = {}
_clients_lock = threading.Lock()
_transfer_pool: ThreadPoolExecutor | None = None


def s3_client(settings: Mapping[str, str] | None = None) -> S3Client:
    """A client for `settings` (default: `current_settings()`); cached: clients are
    thread-safe and slow to build, and other settings get another one."""
    settings = current_settings() if settings is None else settings
    files = (os.environ.get("AWS_CONFIG_FILE"), os.environ.get("AWS_SHARED_CREDENTIALS_FILE"))
    cache_key = (*(settings.get(name) for name in S3_SETTING_NAMES), *files)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            client = _build_client(settings)
            _clients[cache_key] = client
        return client


def _build_client(settings: Mapping[str, str]) -> S3Client:
    # A fresh session (the default one is not thread-safe), given the settings that
    # `s3_settings` may have changed. A key without its secret is left to boto3's own
    # lookup (environment, files), which reports it as partial credentials.
    key_id, secret = settings.get("AWS_ACCESS_KEY_ID"), settings.get("AWS_SECRET_ACCESS_KEY")
    explicit = bool(key_id and secret)
    session = boto3.session.Session(
        aws_access_key_id=key_id if explicit else None,
        aws_secret_access_key=secret if explicit else None,
        aws_session_token=settings.get("AWS_SESSION_TOKEN") if explicit else None,
        region_name=settings.get("AWS_REGION") or settings.get("AWS_DEFAULT_REGION"),
        profile_name=settings.get("AWS_PROFILE"),
    )
    region = session.region_name or "us-east-1"
    endpoint = settings.get("AWS_ENDPOINT_URL_S3") or settings.get("AWS_ENDPOINT_URL")
    timeouts = S3Timeouts.from_settings(settings)

    def make(addressing: Literal["auto", "path"]) -> S3Client:
        config = Config(
            region_name=region,
            connect_timeout=timeouts.connect_s,
            read_timeout=timeouts.read_s,
            # total_max_attempts counts the first one (botocore's max_attempts does not).
            retries={"total_max_attempts": timeouts.max_attempts, "mode": "standard"},
            max_pool_connections=TRANSFER_THREADS * 4,
            s3={"addressing_style": addressing},
            # Checksums only where S3 requires them: sha256 of every file is ours already.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return session.client("s3", config=config, endpoint_url=endpoint)

    client = make("auto")
    if "amazonaws.com" not in (client.meta.endpoint_url or ""):
        client = make("path")  # MinIO and other custom endpoints: no virtual-host buckets
    return client


def _pool() -> ThreadPoolExecutor:
    global _transfer_pool  # noqa: PLW0603 - one lazily created pool per process
    with _clients_lock:
        if _transfer_pool is None:
            _transfer_pool = ThreadPoolExecutor(TRANSFER_THREADS, thread_name_prefix="rewind-s3")
        return _transfer_pool


class S3Storage:
    """Storage rooted at `s3://bucket/prefix`."""

    def __init__(self, bucket: str, prefix: str, client: S3Client | None = None) -> None:
        self.bucket = bucket
        self.prefix = folder_prefix(prefix)
        self._client = client
        # Taken now, in the caller's context: the client may first be needed in a
        # worker thread, where an `s3_settings` block of the caller is not in effect.
        self._settings = current_settings()
        self._bucket_checked = False

    @classmethod
    def from_uri(cls, uri: str) -> S3Storage:
        scheme, rest = split_scheme(uri)
        if scheme != S3_SCHEME:
            raise StorageError(f"not an s3:// URI: {uri!r}")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StorageError(f"no bucket in '{uri}': use s3://bucket/prefix")
        return cls(bucket, prefix)

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = s3_client(self._settings)
        return self._client

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, action: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (BotoCoreError, ClientError) as exc:
            raise self._translate(exc, action, key) from exc

    def _translate(self, exc: Exception, action: str, key: str) -> StorageError:
        where = f"{self.uri}/{key}" if key else self.uri
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            return StorageError(
                f"cannot reach the S3 endpoint {self.endpoint} to {action} {where}: {exc} "
                "(check AWS_ENDPOINT_URL and that the server is running)"
            )
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StorageError(
                f"no AWS credentials to {action} {where}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or configure ~/.aws/credentials)"
            )
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            message = error.get("Message", "")
            if code == "NoSuchBucket":
                return StorageError(
                    f"bucket '{self.bucket}' does not exist at {self.endpoint} "
                    f"(trying to {action} {where})"
                )
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFoundError(f"no such file: {where}")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return StorageError(
                    f"the S3 endpoint {self.endpoint} rejected the credentials "
                    f"(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) to {action} {where}: {code}"
                )
            if code in ("AccessDenied", "403", "Forbidden"):
                return StorageError(f"access denied to {action} {where}: {message or code}")
            return StorageError(f"S3 error to {action} {where}: {code} {message}".rstrip())
        return StorageError(f"S3 failure to {action} {where}: {exc}")

    def _check_bucket(self, action: str, key: str) -> None:
        """A HEAD on a missing bucket says only "404": tell a missing bucket apart from a
        missing file, once per storage."""
        if self._bucket_checked:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(
                    f"bucket '{self.bucket}' does not exist at {self.endpoint} "
                    f"(trying to {action} {self.uri}/{key})"
                ) from exc
            raise self._translate(exc, action, key) from exc
        except BotoCoreError as exc:
            raise self._translate(exc, action, key) from exc
        self._bucket_checked = True

    # -- writes ---------------------------------------------------------------------

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        full = self._key(key)
        view = memoryview(data).cast("B")
        if view.nbytes < MULTIPART_THRESHOLD:
            self._call(
                "write",
                key,
                lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=bytes(view)),
            )
            return
        self._put_multipart(key, full, view)

    def _put_multipart(self, key: str, full: str, view: memoryview) -> None:
        created = self._call(
            "write",
            key,
            lambda: self.client.create_multipart_upload(Bucket=self.bucket, Key=full),
        )
        upload_id = created["UploadId"]

        def send(number: int, start: int) -> CompletedPartTypeDef:
            body = bytes(view[start : start + PART_SIZE])
            response = self.client.upload_part(
                Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body
            )
            return {"PartNumber": number, "ETag": response["ETag"]}

        futures = [
            _pool().submit(send, number, start)
            for number, start in enumerate(range(0, view.nbytes, PART_SIZE), start=1)
        ]
        try:
            parts = [future.result() for future in futures]
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except (BotoCoreError, ClientError) as exc:
            for future in futures:
                future.cancel()
            # Best-effort: if this fails too, the bucket's lifecycle rules reclaim the parts.
            with contextlib.suppress(BotoCoreError, ClientError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            raise self._translate(exc, "write", key) from exc

    def delete(self, key: str) -> None:
        full = self._key(key)
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=full))

    def delete_prefix(self, prefix: str = "") -> None:
        keys = [self.prefix + key for key in self.list(prefix)]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch: list[ObjectIdentifierTypeDef] = [
                {"Key": key} for key in keys[start : start + 1000]
            ]
            response = self._call(
                "delete",
                prefix,
                lambda batch=batch: self.client.delete_objects(  # type: ignore[misc]
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                ),
            )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise StorageError(
                    f"cannot delete {len(errors)} file(s) under {self.uri}/{prefix}: "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".rstrip()
                )

    # -- reads ----------------------------------------------------------------------

    def _get_object_range(self, key: str, full: str, first: int, last: int) -> tuple[bytes, int]:
        """Bytes first..last (inclusive) and the object's total size."""
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=full, Range=f"bytes={first}-{last}"
            )
            body = response["Body"].read()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "InvalidRange":  # the range starts past the end: a short file
                return b"", -1
            if code in ("NoSuchKey", "404"):
                self._check_bucket("read", key)
            raise self._translate(exc, "read", key) from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "read", key) from exc
        total = response.get("ContentRange", "").rpartition("/")[2]
        return body, int(total) if total.isdigit() else len(body)

    def get(self, key: str) -> bytes:
        full = self._key(key)
        # One request for small files; the first chunk tells the size of large ones,
        # whose remaining chunks are fetched in parallel.
        head, total = self._get_object_range(key, full, 0, PART_SIZE - 1)
        if total <= len(head):
            return head
        futures: list[Future[tuple[bytes, int]]] = [
            _pool().submit(
                self._get_object_range, key, full, start, min(start + PART_SIZE, total) - 1
            )
            for start in range(PART_SIZE, total, PART_SIZE)
        ]
        chunks = [head] + [future.result()[0] for future in futures]
        return b"".join(chunks)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"invalid range offset={offset} length={length}")
        if length == 0:
            return b""
        full = self._key(key)
        if length <= MULTIPART_THRESHOLD:
            return self._get_object_range(key, full, offset, offset + length - 1)[0]
        end = offset + length
        futures = [
            _pool().submit(
                self._get_object_range, key, full, start, min(start + PART_SIZE, end) - 1
            )
            for start in range(offset, end, PART_SIZE)
        ]
        return b"".join(future.result()[0] for future in futures)

    def list(self, prefix: str = "") -> list[str]:
        base = self.prefix + folder_prefix(prefix)

        def run() -> list[str]:
            keys: list[str] = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
            return sorted(keys)

        return self._call("list", prefix, run)

    def _head(self, key: str) -> int | None:
        full = self._key(key)
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                self._check_bucket("read", key)
                return None
            raise self._translate(exc, "read", key) from exc
        except BotoCoreError as exc:
            raise self._translate(exc, "read", key) from exc
        return int(response["ContentLength"])

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        size = self._head(key)
        if size is None:
            raise NotFoundError(f"no such file: {self.uri}/{key}")
        return size
