"""The demo camera's input: the street video when Debian's opencv-doc is installed, its geometry."""

from __future__ import annotations

from pathlib import Path

import yaml

from stack.demo import STREET_GEOMETRY, demo_clip, write_demo_geometry
from traffic.geometry_config import geometry_from_mapping


def test_the_street_video_is_copied_into_the_run_directory(tmp_path: Path) -> None:
    video = tmp_path / "src" / "vtest.avi"
    video.parent.mkdir()
    video.write_bytes(b"RIFF....AVI ")
    clip, real = demo_clip(tmp_path / "demo", street_video=video)
    assert real and clip == tmp_path / "demo" / "vtest.avi" and clip.read_bytes() == video.read_bytes()
    assert demo_clip(tmp_path / "demo", street_video=video) == (clip, True)  # already there: kept


def test_the_demo_geometry_is_valid_for_the_street_video(tmp_path: Path) -> None:
    path = write_demo_geometry(tmp_path / "geometry.yaml", "demo")
    (camera,) = geometry_from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
    assert camera.camera_id == "demo" and camera.image_size == (768, 576)
    assert [line.name for line in camera.lines] == ["middle"] and [z.name for z in camera.zones] == ["foreground"]
    assert "{camera_id}" in STREET_GEOMETRY
