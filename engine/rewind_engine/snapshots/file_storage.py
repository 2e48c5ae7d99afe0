"""`file://` storage: a folder on a local (or mounted) file system.

Writes go to a hidden temp file in the target folder, are fsynced, then renamed over
the target and the folder is fsynced: after `put` returns the file survives a crash,
and a reader never sees a half-written file. Temp files (`.*.tmp-*`) are invisible to
`list` so that a crash mid-write cannot make a partial file look like data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from .errors import NotFoundError, StorageError
from .storage import FILE_SCHEME, check_key, folder_prefix, split_scheme

_TMP_MARK = ".tmp-"


class FileStorage:
    """Storage rooted at a local folder (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()

    @classmethod
    def from_uri(cls, uri: str) -> FileStorage:
        scheme, rest = split_scheme(uri)
        if scheme != FILE_SCHEME:
            raise StorageError(f"not a file:// URI: {uri!r}")
        if not rest:
            raise StorageError(f"no path in '{uri}': use file:///absolute/path")
        return cls(Path(rest))

    @property
    def uri(self) -> str:
        return f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _fail(self, action: str, key: str, exc: OSError) -> StorageError:
        where = f"{self.uri}/{key}" if key else self.uri
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileNotFoundError):
            return NotFoundError(f"no such file: {where}")
        return StorageError(f"cannot {action} {where}: {reason}")

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}{_TMP_MARK}{uuid.uuid4().hex[:12]}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StorageError(f"cannot write {self.uri}/{key}: {exc.strerror or exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise self._fail("read", key, exc) from exc

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"invalid range offset={offset} length={length}")
        try:
            with open(self._path(key), "rb") as handle:
                handle.seek(offset)
                return handle.read(length)
        except OSError as exc:
            raise self._fail("read", key, exc) from exc

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / folder_prefix(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        keys: list[str] = []
        try:
            for folder, _dirs, files in os.walk(base):
                rel = Path(folder).relative_to(self.root)
                for name in files:
                    if name.startswith(".") and _TMP_MARK in name:
                        continue  # an unfinished (or crashed) put
                    keys.append((rel / name).as_posix())
        except OSError as exc:
            raise self._fail("list", prefix, exc) from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise self._fail("delete", key, exc) from exc

    def delete_prefix(self, prefix: str = "") -> None:
        target = self.root / folder_prefix(prefix) if prefix else self.root
        try:
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        except OSError as exc:
            raise self._fail("delete", prefix, exc) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except OSError as exc:
            raise self._fail("stat", key, exc) from exc


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; not every file system supports it, hence best-effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
