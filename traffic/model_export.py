"""Exported detector models: one cache entry per weights hash and export options, exported once, checked on use.

Layout under the cache folder::

    <stem>-<sha256 of the weights, 16 hex>/
        <backend>-<imgsz>[-half][-dynamic]-b<batch>-<exporter version>/   the entry
            model.onnx | model_openvino_model/ | model.engine             what Ultralytics wrote
            export.json                                                   manifest, written last
        <entry name>.lock                                                 serialises exports

An entry is used only when its manifest lists every file with the size and SHA-256 it has now; one
that does not (a crash mid-export, a truncated copy, a hand edit) is removed and exported again.
An export runs in a temporary folder beside the entry and is renamed into place, so a reader never
sees half an entry; an exclusive ``flock`` makes workers that start together export once, the
others waiting for it and then loading the result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from traffic.errors import ExportFailed

log = logging.getLogger(__name__)

MANIFEST = "export.json"
LOCK_POLL_S = 0.2
DEFAULT_LOCK_TIMEOUT_S = 900.0
"""How long a worker waits for another one's export (a TensorRT build can take minutes)."""


@dataclass(frozen=True)
class ExportSpec:
    """What an export is made for: the backend and the options that change its output."""

    backend: str
    imgsz: int
    half: bool = False
    dynamic: bool = True
    """Any batch size and input shape (rectangular letterbox): the fastest on CPU runtimes."""
    batch: int = 1
    """The largest batch a static (non-dynamic) export accepts."""
    exporter: str = ""
    """The exporter's version (Ultralytics): a new one re-exports."""

    @property
    def tag(self) -> str:
        """The entry's folder name."""
        parts = [self.backend, str(self.imgsz)]
        parts += ["half"] if self.half else []
        parts += ["dynamic"] if self.dynamic else []
        parts += [f"b{self.batch}"]
        parts += [self.exporter] if self.exporter else []
        return "-".join(part.replace("/", "_") for part in parts)


@dataclass(frozen=True)
class CachedModel:
    """An export ready to load: ``path`` (a file or a folder); ``exported`` when this call made it."""

    path: Path
    exported: bool


Exporter = Callable[[Path, ExportSpec], Path]
"""(a copy of the weights in a scratch folder, the spec) → the artefact written beside that copy."""


def file_digest(path: Path) -> str:
    """SHA-256 of a file, in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry_dir(cache_dir: Path, weights: Path, spec: ExportSpec, digest: str) -> Path:
    """Where the export of ``weights`` (whose SHA-256 is ``digest``) for ``spec`` lives."""
    return cache_dir / f"{weights.stem}-{digest[:16]}" / spec.tag


def verified_artefact(entry: Path) -> Path | None:
    """The artefact of a complete, unaltered entry; None when it is missing, partial or corrupt."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        files: dict[str, dict[str, object]] = manifest["files"]
        artefact = entry / str(manifest["artefact"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not files or not artefact.exists():
        return None
    for name, facts in files.items():
        path = entry / name
        try:
            if path.stat().st_size != facts.get("size") or file_digest(path) != facts.get("sha256"):
                return None
        except OSError:
            return None
    return artefact


def cached_export(
    weights: Path,
    spec: ExportSpec,
    cache_dir: Path,
    export: Exporter,
    *,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> CachedModel:
    """The export of ``weights`` for ``spec``: from the cache when it is there and intact, else made now."""
    digest = file_digest(weights)
    entry = entry_dir(cache_dir, weights, spec, digest)
    found = verified_artefact(entry)
    if found is not None:
        return CachedModel(found, exported=False)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(entry.parent / f"{entry.name}.lock", lock_timeout_s):
        found = verified_artefact(entry)  # another process may have exported it while we waited
        if found is not None:
            return CachedModel(found, exported=False)
        if entry.exists():
            log.warning("export %s is incomplete or corrupt; exporting it again", entry)
            shutil.rmtree(entry)
        return CachedModel(_export_into(entry, weights, spec, export), exported=True)


def _export_into(entry: Path, weights: Path, spec: ExportSpec, export: Exporter) -> Path:
    """Export in a scratch folder beside ``entry``, write the manifest, rename the folder into place."""
    scratch = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        copy = scratch / f"model{weights.suffix}"
        shutil.copyfile(weights, copy)
        started = time.monotonic()
        try:
            produced = Path(export(copy, spec))
        except Exception as exc:  # noqa: BLE001 - any exporter failure becomes one typed error
            raise ExportFailed(f"exporting {weights.name} to {spec.backend} failed: {exc}") from exc
        if not produced.is_absolute():
            produced = scratch / produced
        if not produced.exists() or scratch not in produced.parents:
            raise ExportFailed(f"the {spec.backend} exporter wrote nothing usable ({produced.name})")
        copy.unlink()
        files = [produced] if produced.is_file() else sorted(p for p in produced.rglob("*") if p.is_file())
        manifest = {
            "artefact": produced.relative_to(scratch).as_posix(),
            "weights": weights.name,
            "spec": spec.tag,
            "files": {
                p.relative_to(scratch).as_posix(): {"size": p.stat().st_size, "sha256": file_digest(p)} for p in files
            },
        }
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        os.rename(scratch, entry)
        log.info("exported %s to %s in %.1f s (%s)", weights.name, spec.backend, time.monotonic() - started, entry)
        return entry / produced.relative_to(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(path: Path, timeout_s: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (waiting at most ``timeout_s``)."""
    with path.open("a") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ExportFailed(f"waited {timeout_s:.0f} s for another process's export ({path})") from None
                time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
