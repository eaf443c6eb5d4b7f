"""Full-band metrics: pure-math properties (never skip) and the dev set's published reference values."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from denoise.metrics_fullband import (
    FULLBAND_METRICS,
    fullband_columns,
    fullband_pair_scores,
    fullband_scores,
    high_band,
    high_band_energy_db,
    high_band_lsd,
    high_band_segsnr,
    low_band_si_sdr,
    si_sdr,
)

SR = 48000
RNG = np.random.default_rng(5)


def white(n: int = SR) -> np.ndarray:
    return RNG.standard_normal(n)


def test_si_sdr_identity_scale_and_known_ratio() -> None:
    s = white()
    assert si_sdr(s, s) > 150.0
    noise = white()
    estimate = s + 0.3 * noise
    assert si_sdr(s, -3.0 * estimate + 0.2) == pytest.approx(
        si_sdr(s, estimate), abs=1e-9
    )  # gain, sign, offset
    noise -= np.dot(noise, s) / np.dot(s, s) * s  # exactly orthogonal to s
    noise *= np.sqrt(np.sum(s**2) / np.sum(noise**2)) * 10 ** (-10 / 20)
    assert si_sdr(s, s + noise) == pytest.approx(10.0, abs=0.05)
    with pytest.raises(ValueError, match="differ in length"):
        si_sdr(s, s[:-1])


def test_high_band_is_a_brick_wall_at_8k() -> None:
    t = np.arange(SR) / SR
    low, high = np.sin(2 * np.pi * 5000 * t), np.sin(2 * np.pi * 12000 * t)
    np.testing.assert_allclose(high_band(low + high, SR), high, atol=1e-9)
    x = white()
    assert np.sum(high_band(x, SR) ** 2) / np.sum(x**2) == pytest.approx(16 / 24, abs=0.02)


def test_low_band_si_sdr_ignores_the_high_band() -> None:
    s = white()
    assert low_band_si_sdr(s, s + 0.5 * high_band(white(), SR), SR) > 50.0
    assert si_sdr(s, s + 0.5 * high_band(white(), SR)) < 10.0


def test_high_band_segsnr_reference_points() -> None:
    s = white()
    no_high = s - high_band(s, SR)
    assert high_band_segsnr(s, no_high, SR) == pytest.approx(0.0, abs=1e-6)  # the documented 0 dB
    assert high_band_segsnr(s, s, SR) == 35.0  # clipped at the top
    assert high_band_segsnr(s, s + high_band(white(), SR), SR) == pytest.approx(0.0, abs=0.3)
    assert high_band_segsnr(s, s + 10 * high_band(white(), SR), SR) == -10.0  # clipped at the bottom


def test_high_band_lsd_and_energy() -> None:
    s = white()
    assert high_band_lsd(s, s, SR) == 0.0
    half = s - 0.5 * high_band(s, SR)  # the high band 6.02 dB down, the rest untouched
    assert high_band_lsd(s, half, SR) == pytest.approx(6.02, abs=0.05)
    assert high_band_energy_db(s, half, SR) == pytest.approx(-6.02, abs=0.01)
    assert high_band_energy_db(s, s - high_band(s, SR), SR) < -150.0  # muffled: the guard's floor
    assert high_band_energy_db(s, 2 * s, SR) == pytest.approx(6.02, abs=0.01)


def test_fullband_scores_at_other_rates_and_below() -> None:
    for sr in (44100, 96000):
        s = white(sr)
        scores = fullband_scores(s, s, sr)
        assert list(scores) == list(FULLBAND_METRICS)
        assert scores["hf_lsd"] == 0.0 and scores["hf_energy_db"] == 0.0
    with pytest.raises(ValueError, match="above 16000 Hz"):
        fullband_scores(white(16000), white(16000), 16000)


# ------------------------------------------------------------------- the dev set's published values


def _dev_set() -> Path:
    root = Path(os.environ.get("DENOISE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
    folder = root / "eval" / "fullband48k_dev"
    if not (folder / "MANIFEST.tsv").is_file():
        pytest.skip(f"the full-band dev set is not at {folder} (set DENOISE_SHARED)")
    return folder


# From the dev set README: per file (noisy as the output) SI-SDR 0-24 kHz, HF segSNR, HF energy re clean,
# and the means over the ten files of all five metrics.
README_PER_FILE = {
    "fbdev_01": (-0.9, -8.7, 10.6),
    "fbdev_03": (7.1, -5.4, 5.0),
    "fbdev_06": (11.6, -9.3, 8.8),
    "fbdev_08": (13.8, 18.5, 0.0),
}
README_MEANS = {
    "fb_si_sdr": 6.13,
    "lb_si_sdr": 6.34,
    "hf_segsnr": -1.19,
    "hf_lsd": 11.44,
    "hf_energy_db": 3.26,
}


def test_dev_set_noisy_scores_match_the_readme() -> None:
    import soundfile as sf

    folder = _dev_set()
    with open(folder / "MANIFEST.tsv", newline="") as f:
        names = [row["file"] for row in csv.DictReader(f, delimiter="\t")]
    assert len(names) == 10
    rows = {}
    for name in names:
        noisy, sr = sf.read(folder / "noisy" / name)
        clean, _ = sf.read(folder / "clean" / name)
        rows[Path(name).stem] = fullband_scores(noisy, clean, sr)
    for stem, (fb, segsnr, energy) in README_PER_FILE.items():
        got = rows[stem]
        assert (round(got["fb_si_sdr"], 1), round(got["hf_segsnr"], 1)) == (fb, segsnr), stem
        assert round(got["hf_energy_db"], 1) == pytest.approx(energy, abs=0.051), stem
    for metric, value in README_MEANS.items():
        assert np.mean([r[metric] for r in rows.values()]) == pytest.approx(value, abs=0.005), metric


def test_pair_scores_for_the_evaluator() -> None:
    clean = white()
    noisy = clean + 0.5 * white()
    enhanced = clean + 0.1 * white()
    scores = fullband_pair_scores(noisy, enhanced[:-100], clean, SR)  # trimmed to the common length
    assert list(scores) == fullband_columns()
    assert scores["delta_fb_si_sdr"] == pytest.approx(
        si_sdr(clean[:-100], enhanced[:-100]) - si_sdr(clean[:-100], noisy[:-100])
    )
    assert scores["delta_fb_si_sdr"] == pytest.approx(20 * np.log10(5), abs=0.2)  # 6 dB -> 20 dB
