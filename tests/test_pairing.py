"""The one pairing rule shared by eval and fine-tuning (pure: only names, no audio is opened)."""

from __future__ import annotations

from pathlib import Path

import pytest

from denoise.pairing import audio_files, dns_id, pair_folders


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_dns_id() -> None:
    assert dns_id("clnsp62_birds_413745_6_snr14_tl-33_fileid_81") == "fileid_81"
    assert dns_id("clean_fileid_81") == "fileid_81"
    assert dns_id("p232_001") is None
    assert dns_id("myfileid_3") is None  # the id must be its own underscore-separated field


def test_walker_flat_recursive_patterns(tmp_path: Path) -> None:
    for name in ("b.wav", "a.FLAC", ".hidden.wav", "notes.txt", "kitchen/fan_1.wav", "kitchen/x.mp3"):
        touch(tmp_path / name)
    assert [p.name for p in audio_files(tmp_path)] == ["a.FLAC", "b.wav"]
    assert [p.relative_to(tmp_path).as_posix() for p in audio_files(tmp_path, recursive=True)] == [
        "a.FLAC",
        "b.wav",
        "kitchen/fan_1.wav",
        "kitchen/x.mp3",
    ]
    assert audio_files(tmp_path, recursive=True, patterns=["kitchen/fan_*"]) == [
        tmp_path / "kitchen/fan_1.wav"
    ]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        audio_files(tmp_path / "missing")


def test_pairs_voicebank_and_dns_names(tmp_path: Path) -> None:
    noisy, clean = tmp_path / "noisy", tmp_path / "clean"
    for stem in (
        "p232_001",
        "p257_010",
        "clnsp3_babble_snr5_tl-25_fileid_12",
        "clnsp9_wind_snr0_tl-20_fileid_7",
    ):
        touch(noisy / f"{stem}.wav")
    touch(clean / "p232_001.wav")
    touch(clean / "p257_010.flac")  # the extension does not take part in the match
    touch(clean / "clean_fileid_12.wav")
    touch(clean / "clean_fileid_120.wav")  # fileid_12 must not match fileid_120
    touch(noisy / "readme.txt")
    pairs = {p.name: p.clean for p in pair_folders(noisy, clean)}
    assert pairs == {
        "clnsp3_babble_snr5_tl-25_fileid_12": clean / "clean_fileid_12.wav",
        "clnsp9_wind_snr0_tl-20_fileid_7": None,  # kept: eval scores it with DNSMOS only
        "p232_001": clean / "p232_001.wav",
        "p257_010": clean / "p257_010.flac",
    }


def test_pairs_enhanced_outputs_and_exclusions(tmp_path: Path) -> None:
    noisy, enhanced = tmp_path / "noisy", tmp_path / "enh"
    for stem in ("a_fileid_1", "a_fileid_2", "p232_001"):
        touch(noisy / f"{stem}.wav")
    touch(enhanced / "a_fileid_1.wav")
    touch(enhanced / "enhanced_fileid_2.wav")  # another system's naming, matched by the DNS id
    pairs = pair_folders(noisy, enhanced_dir=enhanced, exclude=["p232_001"])
    assert [(p.noisy.stem, p.clean, p.enhanced.name if p.enhanced else None) for p in pairs] == [
        ("a_fileid_1", None, "a_fileid_1.wav"),
        ("a_fileid_2", None, "enhanced_fileid_2.wav"),
    ]


def test_nothing_is_guessed(tmp_path: Path) -> None:
    noisy, clean = tmp_path / "noisy", tmp_path / "clean"
    touch(noisy / "x_fileid_5.wav")
    touch(clean / "clean_fileid_5.wav")
    touch(clean / "other_fileid_5.wav")  # an id shared by two files identifies neither
    touch(noisy / "spk1" / "a.wav")
    touch(clean / "spk2" / "a.wav")  # same stem in another sub-folder: not the same utterance
    touch(noisy / "spk1" / "b_fileid_9.wav")
    touch(clean / "clean_fileid_9.wav")  # ids match within the same sub-folder only
    touch(noisy / "spk1" / "c.wav")
    touch(clean / "spk1" / "c.flac")
    pairs = {
        p.noisy.relative_to(noisy).as_posix(): p.clean for p in pair_folders(noisy, clean, recursive=True)
    }
    assert pairs == {
        "spk1/a.wav": None,
        "spk1/b_fileid_9.wav": None,
        "spk1/c.wav": clean / "spk1" / "c.flac",
        "x_fileid_5.wav": None,
    }
    assert [p.noisy.name for p in pair_folders(noisy, clean)] == ["x_fileid_5.wav"]  # flat: top level only


def test_same_name_twice_in_one_folder_is_an_error(tmp_path: Path) -> None:
    touch(tmp_path / "noisy" / "a.wav")
    touch(tmp_path / "clean" / "a.wav")
    touch(tmp_path / "clean" / "a.flac")
    with pytest.raises(ValueError, match="two files share the name 'a'"):
        pair_folders(tmp_path / "noisy", tmp_path / "clean")
