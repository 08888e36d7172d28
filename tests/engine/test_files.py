"""The one atomic write: all or nothing, never a truncated file, nothing left behind."""

from __future__ import annotations

import pytest

from engine.files import replacing, write_atomically


def test_a_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "deep" / "image.png"
    write_atomically(path, b"first")
    write_atomically(path, b"second, longer")
    assert path.read_bytes() == b"second, longer"
    assert [p.name for p in path.parent.iterdir()] == ["image.png"]


def test_a_write_that_fails_leaves_the_old_file_and_no_partial(tmp_path):
    path = tmp_path / "state.pt"
    write_atomically(path, b"the old state")
    with pytest.raises(RuntimeError), replacing(path) as f:
        f.write(b"half of the new st")
        raise RuntimeError("stopped mid-write")
    assert path.read_bytes() == b"the old state"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
