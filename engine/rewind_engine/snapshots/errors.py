"""Errors raised by the snapshot package.

Every failure a user can meet (a wrong URI, an unreachable endpoint, a missing manifest,
a corrupted file, a snapshot from a newer Rewind) surfaces as ONE exception whose message
says what went wrong and where (the URI or file), so that the CLI and the operator can
print it as is. Callers that only care "did the snapshot work" catch `SnapshotError`.
"""

from __future__ import annotations


class SnapshotError(Exception):
    """Base class: a snapshot could not be written, read, listed or deleted."""


class StorageError(SnapshotError):
    """The storage behind a URI failed: unsupported scheme, unreachable endpoint,
    missing bucket, missing credentials, permission denied, I/O error."""


class NotFoundError(StorageError):
    """A file (object) that should exist does not."""


class CorruptSnapshotError(SnapshotError):
    """A snapshot's files do not match its manifest (checksum, size) or the manifest is
    malformed."""


class IncompatibleSnapshotError(SnapshotError):
    """A well-formed snapshot that this engine must not restore: a newer format version,
    or a different `max_parallelism` than the job's."""
