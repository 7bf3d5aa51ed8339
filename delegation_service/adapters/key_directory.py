"""A directory of rotating signing keys, shared by every service process that signs for one issuer.

One file per key, ``key-<generation>.json``: the generation (its place in the sequence), its creation
time, algorithm, kid and the private key as PKCS#8 PEM. Files never change once they exist, so each is
parsed once per process.

Why a directory rather than Redis: the private keys stay out of the token store (Redis is replicated,
written to AOF files and their backups, and readable by anything that can reach it), signing never
depends on the store being up, and a directory is what secret volumes and file permissions already
protect. Processes on several hosts share it as a shared volume (NFS, a Kubernetes ReadWriteMany claim).

Several processes agree without any lock service: a key is written to a temporary file, flushed, then
published with ``link(2)`` under its generation's name. ``link`` fails when the name exists, on a local
file system and on NFS alike, so exactly one process creates each generation (the first to link); the
others see ``FileExistsError``, drop their temporary file and read the winner's. Unlike an ``O_EXCL``
create of the final name, a reader never sees a half-written key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from delegation_service.adapters.keys import SigningKey, generate_signing_key, load_signing_key
from delegation_service.domain.rotation import KeyRecord

log = logging.getLogger(__name__)

FILE_NAME = re.compile(r"^key-(\d{8})\.json$")
_FORMAT = 1


class KeyDirectoryError(Exception):
    """Raised when the key directory cannot be read or written, or holds a file that is not a key."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class StoredKey:
    """A key of the directory: its schedule record, the parsed key and its file."""

    record: KeyRecord
    key: SigningKey
    path: Path


def file_name(generation: int) -> str:
    """The file name of a generation's key."""
    return f"key-{generation:08d}.json"


class KeyDirectory:
    """The key files of one directory, each parsed once; created atomically, one per generation."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._parsed: dict[str, StoredKey] = {}
        self._warned = False

    def ensure(self) -> None:
        """Create the directory (mode 0700) if it does not exist; warn once if others may read it."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            mode = stat.S_IMODE(self.path.stat().st_mode)
        except OSError as error:
            raise KeyDirectoryError(self.path, f"cannot create the key directory: {error.strerror}") from None
        if mode & 0o077 and not self._warned:
            self._warned = True
            log.warning(
                "other users can list the key directory (each key file is 0600); make it 0700",
                extra={"event": "key_directory_permissions", "path": str(self.path), "mode": oct(mode)},
            )

    def load(self) -> list[StoredKey]:
        """Every key now in the directory, in generation order."""
        try:
            names = sorted(name for name in os.listdir(self.path) if FILE_NAME.match(name))
        except OSError as error:
            raise KeyDirectoryError(self.path, f"cannot list the key directory: {error.strerror}") from None
        keys = []
        for name in names:
            stored = self._parsed.get(name)
            if stored is None:
                try:
                    stored = self._read(self.path / name)
                except FileNotFoundError:
                    continue  # retired and removed by another process since the listing
                self._parsed[name] = stored
            keys.append(stored)
        for gone in self._parsed.keys() - set(names):
            del self._parsed[gone]
        return keys

    def create(self, generation: int, algorithm: str) -> bool:
        """Try to create the key of ``generation``; ``False`` when another process created it first."""
        key = generate_signing_key(algorithm)
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        document = {
            "format": _FORMAT,
            "generation": generation,
            "created_at": self._clock(),
            "alg": key.alg,
            "kid": key.kid,
            "private_key_pem": pem.decode("ascii"),
        }
        final = self.path / file_name(generation)
        try:
            descriptor, temporary = tempfile.mkstemp(dir=self.path, prefix=".tmp-", suffix=".json")  # 0600
        except OSError as error:
            raise KeyDirectoryError(self.path, f"cannot write a key: {error.strerror}") from None
        try:
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                json.dump(document, handle)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, final)
            except FileExistsError:
                return False
            except OSError as error:
                raise KeyDirectoryError(final, f"cannot publish the key: {error.strerror}") from None
            self._sync_directory()
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    def remove(self, stored: StoredKey) -> None:
        """Delete a key's file (a retired key: its private half is only a liability now)."""
        with contextlib.suppress(FileNotFoundError):  # another process removed it first
            stored.path.unlink()
        self._parsed.pop(stored.path.name, None)

    def _sync_directory(self) -> None:
        """Make the new name durable, so a crash cannot lose a key that may already have been published."""
        with contextlib.suppress(OSError):  # not every file system can open a directory
            descriptor = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    def _read(self, path: Path) -> StoredKey:
        try:
            document = json.loads(path.read_text(encoding="ascii"))
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise KeyDirectoryError(path, f"not a readable key file ({type(error).__name__})") from None
        match = FILE_NAME.match(path.name)
        if not isinstance(document, dict) or match is None:
            raise KeyDirectoryError(path, "not a key file")
        generation = document.get("generation")
        created_at = document.get("created_at")
        alg = document.get("alg")
        pem = document.get("private_key_pem")
        if (
            document.get("format") != _FORMAT
            or generation != int(match.group(1))
            or not isinstance(created_at, int | float)
            or isinstance(created_at, bool)
            or not isinstance(alg, str)
            or not isinstance(pem, str)
        ):
            raise KeyDirectoryError(path, "not a key file of this service (format, generation, fields)")
        try:
            key = load_signing_key(pem.encode("ascii"), alg)
        except (ValueError, UnicodeEncodeError) as error:
            raise KeyDirectoryError(path, str(error)) from None
        if document.get("kid") != key.kid:
            raise KeyDirectoryError(path, "the kid does not match the key")
        return StoredKey(KeyRecord(generation, float(created_at), key.kid), key, path)
