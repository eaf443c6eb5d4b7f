"""Fine-tuning data: indexing, streaming reads, on-the-fly mixing, pairs, splits, sampler."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import shared_path
from torch.utils.data import DataLoader

from denoise.audio import resample
from denoise.finetune.datasets import (
    MixingDataset,
    PairedDataset,
    index_audio,
    match_pairs,
    read_segment,
    segment_length,
    split_files,
)
from denoise.finetune.distributed import ResumableSampler
from denoise.pairing import audio_files

SR = 16000


def _tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _speech(seconds: float, seed: int) -> np.ndarray:
    """Harmonic, amplitude-modulated signal: enough like speech for level/SNR arithmetic."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(100, 200)
    wav = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 10))
    return (0.1 * wav * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture
def pools(tmp_path: Path) -> tuple[Path, Path]:
    clean, noise = tmp_path / "clean", tmp_path / "noise"
    clean.mkdir()
    noise.mkdir()
    for i in range(6):
        sf.write(clean / f"utt{i}.wav", _speech(1.0 + 0.3 * i, i), SR)
    # Noise whose first 80 % is a 500 Hz tone and last 20 % a 3 kHz tone: tells which span was used.
    sf.write(noise / "hum.wav", np.concatenate([_tone(500, 8.0), _tone(3000, 2.0)]), SR)
    return clean, noise


def _dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.argmax(spectrum) * SR / len(x))


# ---------------------------------------------------------------------------------- index/read


def test_index_skips_bad_files_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sf.write(tmp_path / "good.wav", _tone(440, 0.5), SR)
    (tmp_path / "garbage.wav").write_bytes(b"RIFF not really a wave file" * 10)
    (tmp_path / "empty.flac").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not audio")
    sf.write(tmp_path / "tiny.wav", _tone(440, 0.01), SR)
    with caplog.at_level(logging.WARNING, logger="denoise.finetune.datasets"):
        entries = index_audio(audio_files(tmp_path, recursive=True))
    assert [e.path.name for e in entries] == ["good.wav"]
    logged = caplog.text
    assert "garbage.wav" in logged and "empty.flac" in logged and "tiny.wav" in logged
    assert "notes.txt" not in logged  # not an audio name: never considered


def test_read_segment_resamples_and_mixes_to_mono(tmp_path: Path) -> None:
    left, right = _tone(300, 3.0, 44100), _tone(1200, 3.0, 44100, amp=0.1)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    (entry,) = index_audio([tmp_path / "stereo.wav"])
    assert entry.sample_rate == 44100 and entry.samples_16k == 48000
    expected = resample((left + right) / 2, 44100, SR)
    for start in (0, 12345, 40000):
        seg = read_segment(entry, start, 4000)
        n = min(4000, len(expected) - start)
        np.testing.assert_allclose(seg[:n], expected[start : start + n], atol=1e-4)
        assert np.all(seg[n:] == 0.0)  # zero-padded past the end
    assert np.all(read_segment(entry, 10**6, 100) == 0.0)


def test_items_stream_only_their_segment(pools: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    clean, noise = pools
    ds = MixingDataset(
        index_audio(audio_files(clean, recursive=True)),
        index_audio(audio_files(noise, recursive=True)),
        segment=8000,
        items=4,
    )
    assert not any(isinstance(v, np.ndarray) for v in vars(ds).values())  # an index, not audio
    sizes: list[int] = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        sizes.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    ds[0]
    assert sizes and all(0 < s <= 8000 + 1 for s in sizes)  # never the whole 10 s noise file


# --------------------------------------------------------------------------------------- mixing


def test_mixing_is_deterministic_and_changes_with_the_epoch(pools: tuple[Path, Path]) -> None:
    clean, noise = (index_audio(audio_files(p, recursive=True)) for p in pools)
    a = MixingDataset(clean, noise, segment=8000, items=6, seed=3)
    b = MixingDataset(clean, noise, segment=8000, items=6, seed=3)
    for i in range(6):
        assert all(torch.equal(x, y) for x, y in zip(a[i], b[i], strict=True))
    first = a[2][0].clone()
    a.set_epoch(1)
    assert not torch.equal(a[2][0], first)
    assert not torch.equal(MixingDataset(clean, noise, segment=8000, items=6, seed=4)[2][0], first)
    # workers see the same items as the main process
    b.set_epoch(1)
    loader = DataLoader(b, batch_size=3, num_workers=2)
    batches = list(loader)
    torch.testing.assert_close(batches[0][0][2], a[2][0], rtol=0, atol=0)


def test_mixture_snr_level_and_no_clipping(pools: tuple[Path, Path]) -> None:
    clean, noise = (index_audio(audio_files(p, recursive=True)) for p in pools)
    ds = MixingDataset(
        clean, noise, segment=16000, items=40, seed=0, snr_db=(0.0, 10.0), level_dbfs=(-30, -20)
    )
    for i in range(40):
        noisy, target = (t.numpy().astype(np.float64) for t in ds[i])
        residual = noisy - target
        active = target != 0.0
        snr = 10 * np.log10(np.mean(target[active] ** 2) / np.mean(residual**2))
        assert -0.5 <= snr <= 10.5  # active-speech SNR within the configured range
        level = 10 * np.log10(np.mean(noisy**2))
        assert -30.1 <= level <= -19.9 or np.max(np.abs(noisy)) == pytest.approx(0.99, abs=1e-3)
        assert np.max(np.abs(noisy)) <= 0.99 + 1e-6


def test_validation_uses_held_out_files_and_noise_span(pools: tuple[Path, Path]) -> None:
    clean, noise = (index_audio(audio_files(p, recursive=True)) for p in pools)
    train_clean, val_clean = split_files(clean, 0.34)
    assert len(val_clean) == 2 and not {e.path for e in train_clean} & {e.path for e in val_clean}
    held = {e.path for e in val_clean}
    assert {e.path for e in split_files(list(reversed(clean)), 0.34)[1]} == held  # not the folder order
    common = dict(segment=8000, items=8, snr_db=(0.0, 0.0))
    train = MixingDataset(train_clean, noise, noise_span=(0.0, 0.8), **common)
    val = MixingDataset(val_clean, noise, noise_span=(0.8, 1.0), fixed=True, **common)
    for i in range(8):
        assert _dominant_hz((train[i][0] - train[i][1]).numpy()) == pytest.approx(500, abs=5)
        assert _dominant_hz((val[i][0] - val[i][1]).numpy()) == pytest.approx(3000, abs=5)
    before = val[0][0].clone()
    val.set_epoch(5)
    assert torch.equal(val[0][0], before)  # validation mixtures never change


def test_bad_file_at_read_time_is_skipped(pools: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    clean_dir, noise_dir = pools
    clean, noise = (
        index_audio(audio_files(clean_dir, recursive=True)),
        index_audio(audio_files(noise_dir, recursive=True)),
    )
    for entry in clean[:3]:  # damaged after indexing (e.g. a network share went away)
        entry.path.write_bytes(b"garbage")
    ds = MixingDataset(clean, noise, segment=4000, items=20, seed=1)
    with caplog.at_level(logging.WARNING, logger="denoise.finetune.datasets"):
        items = [ds[i] for i in range(20)]
    assert all(torch.isfinite(x).all() and x.shape == (4000,) for pair in items for x in pair)
    assert "skipping bad file" in caplog.text


def test_room_impulse_responses(pools: tuple[Path, Path], tmp_path: Path) -> None:
    clean, noise = (index_audio(audio_files(p, recursive=True)) for p in pools)
    rir_dir = tmp_path / "rirs"
    rir_dir.mkdir()
    rng = np.random.default_rng(0)
    rir = np.zeros(8000, dtype=np.float32)
    rir[100] = 1.0
    rir[101:] = 0.3 * rng.standard_normal(7899) * np.exp(-np.arange(7899) / 1500)
    sf.write(rir_dir / "room.wav", rir, SR)
    rirs = index_audio(audio_files(rir_dir, recursive=True))
    dry = MixingDataset(clean, noise, segment=8000, items=2, seed=0, snr_db=(30, 30))
    wet = MixingDataset(
        clean, noise, segment=8000, items=2, seed=0, snr_db=(30, 30), rirs=rirs, rir_probability=1
    )
    noisy_w, target_w = wet[0]
    noisy_d, target_d = dry[0]
    assert torch.isfinite(noisy_w).all() and noisy_w.shape == (8000,)

    def residual_db(noisy: torch.Tensor, target: torch.Tensor) -> float:
        return float(10 * torch.log10((noisy - target).pow(2).sum() / target.pow(2).sum()))

    # The target keeps the direct path and early reflections; the late reverberation is left in the
    # mixture as something to remove, so the wet residual is far above the 30 dB SNR noise.
    assert residual_db(noisy_d, target_d) < -25.0
    assert residual_db(noisy_w, target_w) > residual_db(noisy_d, target_d) + 6.0


# ---------------------------------------------------------------------------------------- pairs


def test_paired_dataset_matches_by_relative_path_then_name(tmp_path: Path, caplog) -> None:
    noisy_dir, clean_dir = tmp_path / "noisy", tmp_path / "clean"
    (noisy_dir / "spk1").mkdir(parents=True)
    (clean_dir / "spk1").mkdir(parents=True)
    for name in ("spk1/a", "b"):
        speech = _speech(1.2, hash(name) % 100)
        sf.write(clean_dir / f"{name}.wav", speech, SR)
        sf.write(noisy_dir / f"{name}.flac", 0.5 * speech, SR)  # other container: matched by name
    sf.write(noisy_dir / "orphan.wav", _tone(300, 1.0), SR)
    with caplog.at_level(logging.WARNING, logger="denoise.finetune.datasets"):
        pairs = match_pairs(noisy_dir, clean_dir)
    assert sorted(n.path.stem for n, _ in pairs) == ["a", "b"]
    assert "orphan.wav" in caplog.text
    ds = PairedDataset(pairs, segment=8000, items=6, seed=0)
    for i in range(6):
        noisy, clean = ds[i]
        torch.testing.assert_close(noisy, 0.5 * clean, atol=1e-4, rtol=0)  # segments stay aligned
    val = PairedDataset(pairs, segment=32000, items=2, fixed=True)
    assert val[0][1][19200:].abs().max() == 0.0  # 1.2 s file, zero-padded to 2 s


# -------------------------------------------------------------------------------------- sampler


def test_sampler_shards_and_resumes() -> None:
    shards = [list(ResumableSampler(10, seed=1, rank=r, world=2)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(10))
    sampler = ResumableSampler(10, seed=1)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_epoch(3, skip=4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_epoch(4)
    assert list(sampler) != full
    assert segment_length(2.0, 320) == 32000 and segment_length(1.01, 256) % 256 == 0


# ---------------------------------------------------------------------------------- shared pools


def test_shared_pools_mix() -> None:
    clean = index_audio(audio_files(shared_path("audio", "clean_speech"), recursive=True))
    noise = index_audio(audio_files(shared_path("audio", "noise"), recursive=True))
    assert len(clean) >= 20 and len(noise) >= 10
    assert {e.sample_rate for e in clean + noise} >= {16000, 44100}  # resampling is exercised
    ds = MixingDataset(clean, noise, segment=32000, items=4, seed=0)
    for i in range(4):
        noisy, target = ds[i]
        assert noisy.shape == target.shape == (32000,)
        assert torch.isfinite(noisy).all() and noisy.abs().max() <= 0.99 + 1e-6
