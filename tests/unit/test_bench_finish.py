"""A benchmark that measured nothing says so with its exit status, after printing its closing line."""

from __future__ import annotations

import math

import pytest

from bench.common import finish


def test_a_complete_closing_line_exits_normally(capsys: pytest.CaptureFixture[str]) -> None:
    finish({"p50_ms": 1.25, "lost": 0, "pool": "threads"})
    assert capsys.readouterr().out == "p50_ms=1.25 lost=0 pool=threads\n"


@pytest.mark.parametrize("missing", [math.nan, None])
def test_a_figure_that_was_not_measured_fails_the_run(capsys: pytest.CaptureFixture[str], missing: object) -> None:
    with pytest.raises(SystemExit) as ended:
        finish({"p50_ms": missing, "frames": 0})
    assert ended.value.code == 1
    out, err = capsys.readouterr()
    assert out.startswith("p50_ms=") and "measured nothing for: p50_ms" in err
