"""python -m posemb plot writes every picture, and none is blank."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_every_picture_is_written_and_not_blank(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    from posemb import __main__ as cli

    bench_json = ROOT / "bench" / "results" / "cpu-2026-12-02.json"
    assert cli.main(["plot", "--out", str(tmp_path), "--bench", str(bench_json)]) == 0
    names = ["encoding", "similarity", "accuracy", "bench_sinusoidal_add", "bench_rotary"]
    for name in names:
        path = tmp_path / f"{name}.png"
        assert path.stat().st_size > 20_000, name
        pixels = image.imread(str(path))[..., :3]
        assert pixels.std() > 0.05, f"{name} is (nearly) one colour"
        # Something is drawn beyond the axes: more than a few distinct colours.
        assert len({tuple(p) for p in pixels.reshape(-1, 3)[::97].tolist()}) > 20, name
