"""The one folder walker (batch now; eval and fine-tuning at merge): what is an input, what is counted out."""

from __future__ import annotations

from pathlib import Path

from denoise.walk import walk_inputs


def test_exclusion_by_real_folder_links_once_and_counts(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    (root / "sub").mkdir(parents=True)
    for name in ("b.wav", "a.flac", "sub/c.wav", ".d.wav", "e.txt"):
        (root / name).write_bytes(b"RIFF")
    (root / "noext").write_bytes(b"RIFF....WAVE")
    (root / "clean").mkdir()
    (root / "clean" / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "alias").symlink_to(root / "clean")  # the output folder, named through a symlink
    (root / "again").symlink_to(root / "sub")  # the same real folder twice
    walk = walk_inputs(root, exclude=[tmp_path / "alias"])
    assert [p.relative_to(root).as_posix() for p in walk.files] == ["a.flac", "b.wav", "sub/c.wav"]
    assert walk.skip_counts() == {
        "output folder": 1,
        "hidden file": 1,
        "not an audio file name": 1,
        "audio without an extension (add .wav/.flac/... to include it)": 1,
        "folder already walked (symlink loop or repeat)": 1,
    }


def test_a_single_file_is_the_one_input(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    walk = walk_inputs(tmp_path / "a.wav")
    assert walk.files == [tmp_path / "a.wav"] and walk.skipped == []
