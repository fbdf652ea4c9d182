"""The export cache: one export per weights and options, corrupt or partial entries redone, one exporter at a time."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from traffic.detector_backends import AUTO_ORDER_CPU, AUTO_ORDER_CUDA, choose_backend
from traffic.errors import BackendUnavailable, ExportFailed
from traffic.model_export import MANIFEST, ExportSpec, cached_export, entry_dir, file_digest, verified_artefact

SPEC = ExportSpec("onnx", 640, exporter="ultralytics8.4.190")


def fake_export(weights: Path, spec: ExportSpec) -> Path:
    """Writes ``model.<backend>`` beside the weights (and counts itself in the cache's parent folder)."""
    counter = weights.parents[3] / "exports.log"
    with counter.open("a") as fh:
        fh.write(f"{spec.tag}\n")
    out = weights.with_suffix(f".{spec.backend}")
    out.write_bytes(weights.read_bytes()[::-1] + spec.tag.encode())
    return out


def folder_export(weights: Path, spec: ExportSpec) -> Path:
    """Writes a folder of two files, as the OpenVINO exporter does."""
    out = weights.parent / "model_openvino_model"
    out.mkdir()
    (out / "model.xml").write_text("<net/>")
    (out / "model.bin").write_bytes(b"\0" * 1000)
    return out


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "person.pt"
    path.parent.mkdir()
    path.write_bytes(b"weights" * 1000)
    return path


def exports(tmp_path: Path) -> list[str]:
    log = tmp_path / "exports.log"
    return log.read_text().split() if log.exists() else []


def test_the_entry_is_named_by_the_weights_hash_and_every_option() -> None:
    assert SPEC.tag == "onnx-640-dynamic-b1-ultralytics8.4.190"
    assert ExportSpec("tensorrt", 320, half=True, dynamic=False, batch=8).tag == "tensorrt-320-half-b8"
    base = entry_dir(Path("/c"), Path("/w/best.pt"), SPEC, "ab" * 32)
    assert base == Path("/c/best-abababababababab/onnx-640-dynamic-b1-ultralytics8.4.190")
    assert entry_dir(Path("/c"), Path("/w/best.pt"), SPEC, "cd" * 32) != base


def test_an_export_is_made_once_then_read_from_the_cache(tmp_path: Path, weights: Path) -> None:
    cache = tmp_path / "cache"
    first = cached_export(weights, SPEC, cache, fake_export)
    again = cached_export(weights, SPEC, cache, fake_export)
    assert first.exported and not again.exported and first.path == again.path
    assert exports(tmp_path) == [SPEC.tag]
    manifest = json.loads((first.path.parent / MANIFEST).read_text())
    assert manifest["files"] == {"model.onnx": {"size": first.path.stat().st_size, "sha256": file_digest(first.path)}}
    assert not any(p.name.startswith(".") and p.is_dir() for p in first.path.parents[1].iterdir()), "no scratch left"
    other = cached_export(weights, ExportSpec("onnx", 320), cache, fake_export)
    assert other.exported and other.path != first.path, "other options, another entry"
    weights.write_bytes(b"new weights")
    assert cached_export(weights, SPEC, cache, fake_export).exported, "new weights, new export"


@pytest.mark.parametrize("damage", ["truncate", "flip", "no manifest", "missing file"])
def test_a_partial_or_corrupt_export_is_detected_and_redone(tmp_path: Path, weights: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    made = cached_export(weights, ExportSpec("openvino", 640), cache, folder_export)
    entry = made.path.parent
    binary = made.path / "model.bin"
    if damage == "truncate":
        binary.write_bytes(binary.read_bytes()[:10])
    elif damage == "flip":
        binary.write_bytes(b"\1" + binary.read_bytes()[1:])
    elif damage == "no manifest":
        (entry / MANIFEST).unlink()
    else:
        (made.path / "model.xml").unlink()
    assert verified_artefact(entry) is None
    redone = cached_export(weights, ExportSpec("openvino", 640), cache, folder_export)
    assert redone.exported and verified_artefact(entry) == redone.path
    assert binary.read_bytes() == b"\0" * 1000


def test_a_failed_export_is_a_typed_error_and_leaves_no_entry(tmp_path: Path, weights: Path) -> None:
    def broken(path: Path, spec: ExportSpec) -> Path:
        path.with_suffix(".onnx").write_bytes(b"half")
        raise RuntimeError("exporter crashed")

    with pytest.raises(ExportFailed, match="exporter crashed"):
        cached_export(weights, SPEC, tmp_path / "cache", broken)
    with pytest.raises(ExportFailed, match="wrote nothing usable"):
        cached_export(weights, SPEC, tmp_path / "cache", lambda path, spec: path.with_suffix(".missing"))
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.suffix != ".lock"]
    assert [p.name for p in leftovers] == [f"person-{file_digest(weights)[:16]}"]


def slow_export(weights: Path, spec: ExportSpec) -> Path:
    time.sleep(0.5)
    return fake_export(weights, spec)


def _export_in_a_process(weights: str, cache: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    made = cached_export(Path(weights), SPEC, Path(cache), slow_export)
    queue.put((str(made.path), made.exported))


def test_processes_starting_together_export_once(tmp_path: Path, weights: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    args = (str(weights), str(tmp_path / "cache"), queue)
    procs = [spawn.Process(target=_export_in_a_process, args=args) for _ in range(3)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
    assert len({path for path, _ in results}) == 1
    assert sorted(exported for _, exported in results) == [False, False, True]
    assert exports(tmp_path) == [SPEC.tag]


def test_waiting_for_another_export_is_bounded(tmp_path: Path, weights: Path) -> None:
    import fcntl

    entry = entry_dir(tmp_path / "cache", weights, SPEC, file_digest(weights))
    entry.parent.mkdir(parents=True)
    with (entry.parent / f"{entry.name}.lock").open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ExportFailed, match="another process's export"):
            cached_export(weights, SPEC, tmp_path / "cache", fake_export, lock_timeout_s=0.3)


# --------------------------------------------------------------------------- backends


def test_auto_takes_the_first_installed_backend_of_the_documented_order() -> None:
    everything = lambda name: True  # noqa: E731
    assert choose_backend("auto", cuda=False, installed=everything) == AUTO_ORDER_CPU[0] == "openvino"
    assert choose_backend("auto", cuda=True, installed=everything) == AUTO_ORDER_CUDA[0] == "tensorrt"
    no_openvino = lambda name: name != "openvino"  # noqa: E731
    assert choose_backend("auto", cuda=False, installed=no_openvino) == "onnx"
    torch_only = lambda name: name == "torch"  # noqa: E731
    assert choose_backend("auto", cuda=True, installed=torch_only) == "torch"
    assert choose_backend("auto", cuda=False, installed=torch_only) == "torch"


def test_a_backend_that_cannot_run_here_names_what_is_missing() -> None:
    torch_only = lambda name: name == "torch"  # noqa: E731
    with pytest.raises(BackendUnavailable, match="onnxruntime"):
        choose_backend("onnx", cuda=False, installed=torch_only)
    with pytest.raises(BackendUnavailable, match="openvino"):
        choose_backend("openvino", cuda=False, installed=torch_only)
    with pytest.raises(BackendUnavailable, match="needs a CUDA device"):
        choose_backend("tensorrt", cuda=False, installed=lambda name: True)
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        choose_backend("tensorrt", cuda=True, installed=torch_only)
    assert choose_backend("torch", cuda=False, installed=torch_only) == "torch"
