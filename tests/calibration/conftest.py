"""Simulated benches for calibration tests: the shipped one, and copies with injected faults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from labctl.config import builtin_bench_path

BENCHES = builtin_bench_path("sim").parent


def sim_bench_file(tmp_path: Path, *edits: tuple[str, str], name: str = "bench.toml") -> Path:
    """A copy of the shipped sim bench with regex ``edits`` applied (response files kept)."""
    text = builtin_bench_path("sim").read_text()
    text = text.replace('response_file = "', f'response_file = "{BENCHES}/')
    for pattern, repl in edits:
        new = re.sub(pattern, repl, text, count=1, flags=re.M)
        assert new != text, f"edit {pattern!r} matched nothing"
        text = new
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Small FFTs: threads only add contention on a shared CI machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
