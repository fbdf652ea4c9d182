"""Incident evidence on disk: ``<dir>/<camera folder>/<incident name>.jpg|.webm``, written atomically,
deleted with their incidents, and the bytes used (for the evidence disk-usage metric)."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from traffic.evidence import SNAPSHOT_SUFFIX, camera_folder, evidence_name
from traffic.imaging import CLIP_SUFFIX

log = logging.getLogger(__name__)

FILE_MODE = 0o640
"""Evidence shows people: readable by its owner and group (the processes of a deployment), not by others."""


class EvidenceStore:
    """Files under one directory, named by camera and incident natural key; paths kept relative to it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def snapshot_path(self, camera_id: str, natural_key: str) -> str:
        """Where an incident's snapshot goes (relative to the root)."""
        return f"{camera_folder(camera_id)}/{evidence_name(natural_key)}{SNAPSHOT_SUFFIX}"

    def clip_path(self, camera_id: str, natural_key: str) -> str:
        """Where an incident's clip goes (relative to the root)."""
        return f"{camera_folder(camera_id)}/{evidence_name(natural_key)}{CLIP_SUFFIX}"

    def resolve(self, relative: str) -> Path | None:
        """The absolute path of a stored file, None when it is not under the root or does not exist."""
        path = (self.root / relative).resolve()
        root = self.root.resolve()
        if root not in path.parents or not path.is_file():
            return None
        return path

    def write(self, relative: str, data: bytes) -> None:
        """Write a file atomically (a reader never sees half of it)."""
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def temporary(self, relative: str) -> Path:
        """A temporary path beside ``relative`` for a writer that needs a file name (moved in by ``commit``)."""
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
        os.close(fd)
        return Path(tmp)

    def commit(self, temporary: Path, relative: str) -> None:
        """Move a finished temporary file into place."""
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, self.root / relative)

    def delete(self, paths: Iterable[str]) -> int:
        """Delete stored files (missing ones are fine); how many were there."""
        deleted = 0
        for relative in paths:
            path = self.resolve(relative)
            if path is None:
                continue
            try:
                path.unlink()
                deleted += 1
            except OSError as exc:
                log.warning("could not delete evidence %s: %s", relative, exc)
        return deleted

    def files_older_than(self, cutoff: float) -> list[str]:
        """Stored files (relative paths) last written before ``cutoff`` (epoch s), half-written ones too."""
        found = []
        for folder, _, files in os.walk(self.root):
            for name in files:
                path = Path(folder) / name
                try:
                    if path.stat().st_mtime < cutoff:
                        found.append(path.relative_to(self.root).as_posix())
                except OSError:
                    continue
        return found

    def usage(self) -> tuple[int, int]:
        """Bytes and number of the stored files (0, 0 when the root does not exist)."""
        total = count = 0
        for folder, _, files in os.walk(self.root):
            for name in files:
                if name.startswith(".tmp-"):
                    continue  # being written
                try:
                    total += os.stat(os.path.join(folder, name)).st_size
                    count += 1
                except OSError:
                    continue  # deleted meanwhile
        return total, count
