"""The full-band stage inside the real engine: GTCRN (default weights) on 44.1/48/96 kHz input.

What the user gets by default above 16 kHz: the 0-8 kHz band is exactly the band-limited engine's output
(``full_band=False``), the band above keeps the clean speech and loses noise, nothing moves in time, and
``Denoiser.stream`` gives what file mode gives.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from denoise.audio import resample
from denoise.engine import Denoiser
from denoise.metrics_fullband import fullband_scores, high_band

GUIDE_TOP_HZ = 7400.0  # below this the resampler passes everything: the network's band (as test_fullband)
RNG = np.random.default_rng(48)


def _dev_file(kind: str, name: str = "fbdev_01") -> tuple[np.ndarray, int]:
    root = Path(os.environ.get("DENOISE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
    path = root / "eval" / "fullband48k_dev" / kind / f"{name}.wav"
    if not path.is_file():
        pytest.skip(f"the full-band dev set is not at {path.parent.parent} (set DENOISE_SHARED)")
    x, sr = sf.read(path, dtype="float32")
    return x, sr


@pytest.fixture(scope="module")
def engines() -> tuple[Denoiser, Denoiser]:
    """GTCRN, default weights: (full band, the default; band-limited)."""
    try:
        return Denoiser(model="gtcrn"), Denoiser(model="gtcrn", full_band=False)
    except Exception as exc:  # weights not in the mirror / cache
        pytest.skip(f"GTCRN default weights unavailable: {exc}")


@pytest.fixture(scope="module")
def dev_48k(engines) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
    """(noisy, clean, rate, full-band output, band-limited output) of one real 48 kHz mixture."""
    full, limited = engines
    x, sr = _dev_file("noisy")
    s, _ = _dev_file("clean")
    return x, s, sr, full.enhance(x, sr), limited.enhance(x, sr)


def low_band_match_db(reference: np.ndarray, out: np.ndarray, sr: int) -> float:
    """How far below ``reference`` the difference is over 0-7.4 kHz, in dB (the worst channel)."""
    worst = np.inf
    for ref, est in zip(np.atleast_2d(reference), np.atleast_2d(out), strict=True):
        difference = (est - ref) - high_band(est - ref, sr, GUIDE_TOP_HZ)
        worst = min(worst, float(10 * np.log10(np.sum(ref**2) / np.sum(difference**2))))
    return worst


def test_speech_above_8k_is_kept_and_the_network_band_untouched(dev_48k) -> None:
    _, s, sr, full, limited = dev_48k
    deleted, kept = fullband_scores(limited, s, sr), fullband_scores(full, s, sr)
    assert deleted["hf_energy_db"] < -40.0  # band-limited: the band is gone
    assert abs(kept["hf_energy_db"]) < 3.0  # full band: the clean's high-band energy, within 3 dB
    assert kept["hf_lsd"] < deleted["hf_lsd"] - 4.0
    assert kept["fb_si_sdr"] > deleted["fb_si_sdr"] - 0.5
    assert low_band_match_db(limited, full, sr) > 60.0


def test_no_delay(dev_48k) -> None:
    _, _, sr, full, limited = dev_48k
    a = full - high_band(full, sr, GUIDE_TOP_HZ)
    b = limited - high_band(limited, sr, GUIDE_TOP_HZ)
    lags = np.arange(-200, 201)
    xcorr = [np.dot(a[max(0, k) : a.size + min(0, k)], b[max(0, -k) : b.size + min(0, -k)]) for k in lags]
    assert lags[int(np.argmax(xcorr))] == 0


def test_noise_only_above_8k_is_suppressed(engines) -> None:
    full, _ = engines
    s, sr = _dev_file("clean")
    s = s[: 2 * sr]
    speech = s - high_band(s, sr, 7000.0)  # speech with nothing above 7 kHz
    spectrum = np.fft.rfft(RNG.standard_normal(s.size))
    spectrum[np.fft.rfftfreq(s.size, 1 / sr) < 8500] = 0.0
    noise = np.fft.irfft(spectrum, n=s.size)
    noise *= 0.3 * np.std(speech) / np.std(noise)  # only 10 dB below the speech, all of it above 8 kHz
    out = full.enhance((speech + noise).astype(np.float32), sr)

    def high_db(v: np.ndarray) -> float:
        return float(10 * np.log10(np.sum(high_band(v, sr, 8500.0) ** 2)))

    assert high_db(out) < high_db(noise) - 12.0


@pytest.mark.parametrize("sr", [44100, 96000])
def test_other_rates_keep_their_high_band(engines, sr: int) -> None:
    full, limited = engines
    x48, _ = _dev_file("noisy")
    s48, _ = _dev_file("clean")
    x, s = (resample(v[: 2 * 48000], 48000, sr) for v in (x48, s48))
    out, reference = full.enhance(x, sr), limited.enhance(x, sr)
    assert out.shape == x.shape and np.isfinite(out).all()
    assert low_band_match_db(reference, out, sr) > 60.0
    assert abs(fullband_scores(out, s, sr)["hf_energy_db"]) < 4.0


def test_stream_equals_file_mode_per_channel_with_a_limit(engines) -> None:
    """Stereo (a silent channel stays silent), random block sizes, the attenuation limit after the stage."""
    x, sr = _dev_file("noisy")
    x = np.stack([x[: 2 * sr], np.zeros(2 * sr, np.float32)])
    denoiser = Denoiser(model="gtcrn", atten_lim_db=12.0)
    file_mode = denoiser.enhance(x, sr)
    assert not file_mode[1].any()
    stream = denoiser.stream(sr, 2)
    assert stream.latency == Denoiser(model="gtcrn", full_band=False).stream(sr, 2).latency + (
        stream.pipeline.full_band.latency
    )
    bounds = np.cumsum([0, 1, 7, *RNG.integers(1, 4000, size=60)])
    outs = [stream.process(x[:, a:b]) for a, b in itertools.pairwise(bounds)]
    outs += [stream.process(x[:, bounds[-1] :]), stream.flush()]
    streamed = np.concatenate(outs, axis=1)[:, stream.latency :]
    assert stream.underruns == 0 and streamed.shape == x.shape
    error = np.sum((streamed[0] - file_mode[0]) ** 2)
    assert 10 * np.log10(np.sum(file_mode[0] ** 2) / max(error, 1e-30)) > 60.0


def test_16k_input_is_unchanged_by_the_option(engines) -> None:
    full, limited = engines
    x, sr = _dev_file("noisy")
    x16 = resample(x[: 2 * sr], sr, 16000)
    assert np.array_equal(full.enhance(x16, 16000), limited.enhance(x16, 16000))
    assert full.stream(16000, 1).pipeline.full_band is None


def test_band_limit_option_reaches_the_engine() -> None:
    import argparse

    from denoise.commands.engine_options import add_engine_arguments, engine_config
    from denoise.manifest import engine_settings

    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    default, limited = (engine_config(parser.parse_args(a)) for a in ([], ["--band-limit"]))
    assert default.full_band and not limited.full_band
    assert engine_settings(default)["full_band"] is True and engine_settings(limited)["full_band"] is False


@pytest.mark.slow  # ~10 s on a shared CPU: FRCRN, three passes
def test_frcrn_chunked_path_keeps_the_network_band_and_streams_like_file_mode() -> None:
    """FRCRN (chunks, cross-fades; random weights: the plumbing, not the quality): stage on the same path."""
    noisy, sr = _dev_file("noisy")
    x = np.stack([noisy[: sr // 2], noisy[sr : sr + sr // 2]])  # two different channels, 0.5 s
    # 20 ms fades: a cut mid-speech starts with a step, broadband at both edges (the resampler's and the
    # brick-wall measurement filter's edge effects, not the stage's).
    fade = np.sin(0.5 * np.pi * np.arange(sr // 50) / (sr // 50)) ** 2
    x[:, : fade.size] *= fade
    x[:, -fade.size :] *= fade[::-1]
    options = {"model": "frcrn", "weights": None, "chunk_seconds": 0.25, "overlap_seconds": 0.05}
    full = Denoiser(keep_level=False, **options)
    limited = Denoiser(keep_level=False, full_band=False, backend=full.backend, **options)
    out = full.enhance(x, sr)
    assert low_band_match_db(limited.enhance(x, sr), out, sr) > 60.0
    assert all(np.sum(high_band(channel, sr, 8500.0) ** 2) > 0.0 for channel in out)
    stream = full.stream(sr, 2)
    outs = [stream.process(x[:, a : a + 3001]) for a in range(0, x.shape[1], 3001)] + [stream.flush()]
    streamed = np.concatenate(outs, axis=1)[:, stream.latency :]
    error = max(float(np.sum((streamed - out) ** 2)), 1e-30)  # usually exactly 0
    assert 10 * np.log10(np.sum(out**2) / error) > 60.0
