"""The CPUs a process may use: affinity, capped by a cgroup quota (v2 or v1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra.host_cpus import cgroup_quota, visible_cpus


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_cgroup_v2_quota_is_rounded_up_and_max_means_none(tmp_path: Path) -> None:
    missing = (tmp_path / "q", tmp_path / "p")
    assert cgroup_quota(write(tmp_path / "cpu.max", "150000 100000\n"), missing) == 2
    assert cgroup_quota(write(tmp_path / "cpu.max", "50000 100000\n"), missing) == 1
    assert cgroup_quota(write(tmp_path / "cpu.max", "max 100000\n"), missing) is None


def test_a_cgroup_v1_quota_counts_and_minus_one_means_none(tmp_path: Path) -> None:
    v1 = (write(tmp_path / "quota", "300000"), write(tmp_path / "period", "100000"))
    assert cgroup_quota(tmp_path / "absent", v1) == 3
    v1 = (write(tmp_path / "quota", "-1"), v1[1])
    assert cgroup_quota(tmp_path / "absent", v1) is None
    assert cgroup_quota(tmp_path / "absent", (tmp_path / "a", tmp_path / "b")) is None


def test_visible_cpus_follow_the_affinity_mask() -> None:
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no affinity API on this platform")
    mask = os.sched_getaffinity(0)
    assert 1 <= visible_cpus() <= len(mask)
    try:
        os.sched_setaffinity(0, {min(mask)})
        assert visible_cpus() == 1
    finally:
        os.sched_setaffinity(0, mask)
