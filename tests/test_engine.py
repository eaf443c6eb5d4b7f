"""The engine: chunking and cross-fade, level handling, strength control, ModelScope parity."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import real_clip_16k, shared_path

from denoise.audio import read_audio, resample
from denoise.engine import Denoiser, chunk_spans, working_level_gain

# A private, offline weights store for every test; only tests that load real weights ask for the mirror
# (and skip without the reference data). The plumbing tests pass their own backend and need nothing.
pytestmark = pytest.mark.usefixtures("offline_store")


class ScaleBackend:
    """A transparent 'network' (output = gain x input) to test the engine's plumbing exactly."""

    name, arch, sample_rate, hop_length, min_samples = "scale", "test", 16000, 256, 512
    is_gpu = False

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = gain
        self.calls: list[tuple[int, int]] = []

    def process(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(batch.shape)
        return batch * self.gain


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    n = min(ref.shape[-1], est.shape[-1])
    ref, est = ref[..., :n], est[..., :n]
    return float(10 * np.log10(np.sum(ref**2) / (np.sum((ref - est) ** 2) + 1e-20)))


@pytest.mark.parametrize(
    "total,chunk,overlap,preroll",
    [(100, 40, 10, 0), (95, 40, 10, 0), (41, 40, 10, 0), (1000, 160, 16, 0), (30, 40, 5, 0), (1000, 160, 16, 50),
     (333, 100, 10, 40), (101, 100, 10, 40)],
)  # fmt: skip
def test_chunk_weights_cover_every_sample_exactly_once(
    total: int, chunk: int, overlap: int, preroll: int
) -> None:
    cover = np.zeros(total)
    spans = list(chunk_spans(total, chunk, overlap, preroll))
    for start, stop, weight in spans:
        assert stop - start == min(chunk, total) == len(weight) and 0 <= start < stop <= total
        cover[start:stop] += weight
    np.testing.assert_allclose(cover, 1.0, atol=1e-12)
    assert spans[-1][1] == total, "the last chunk ends at the signal's end (no zero padding)"


def test_engine_is_transparent_across_chunks_channels_and_rates() -> None:
    # band-limited: the subject is chunking (the full-band stage is tested in test_fullband_engine.py)
    d = Denoiser(
        model="gtcrn",
        chunk_seconds=0.5,
        overlap_seconds=0.1,
        batch_size=3,
        full_band=False,
        backend=ScaleBackend(),
    )
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((3, 44100 * 2))).astype(np.float32)  # 2 s, 3 channels, 44.1 kHz
    y = d.enhance(x, 44100)
    assert y.shape == x.shape and y.dtype == np.float32
    # resampling to 16 kHz and back removes content above 8 kHz; compare within that band
    band = resample(resample(x, 44100, 16000), 16000, 44100)
    assert snr_db(band, y) > 60
    # batch_size > 1: every call is exactly [3, width] (zero rows fill the last; denoise.engine.batching)
    calls = d.backend.inner.calls
    assert len(calls) > 3 and all(c[0] == 3 for c in calls)


def test_level_is_restored_for_a_model_with_a_working_level() -> None:
    d = Denoiser(model="gtcrn", backend=ScaleBackend())
    d.defaults = type(d.defaults)(chunk_seconds=1.0, preroll_seconds=0.2, working_level_dbfs=-25.0)
    x = (0.001 * np.sin(np.arange(32000) / 7.0)).astype(np.float32)  # a quiet -63 dBFS tone
    y = d.enhance(x, 16000)
    np.testing.assert_allclose(y, x, atol=1e-6)


def test_attenuation_limit_bounds_suppression() -> None:
    d = Denoiser(model="gtcrn", atten_lim_db=12.0, backend=ScaleBackend(gain=0.0))  # removes everything
    x = (0.1 * np.random.default_rng(1).standard_normal(16000)).astype(np.float32)
    y = d.enhance(x, 16000)
    attenuation = 20 * np.log10(np.sqrt(np.mean(x**2)) / np.sqrt(np.mean(y**2)))
    assert attenuation == pytest.approx(12.0, abs=0.01)


def test_output_never_clips() -> None:
    d = Denoiser(model="gtcrn", backend=ScaleBackend(gain=4.0))
    x = (0.5 * np.sin(np.arange(16000) / 5.0)).astype(np.float32)
    out = d.enhance_report(x[None], 16000)
    assert np.max(np.abs(out.samples)) < 1.0
    assert any("avoid clipping" in n for n in out.notes)


def test_gtcrn_chunked_matches_whole_file_on_a_60s_real_clip(weights_mirror) -> None:
    clip = real_clip_16k(60)
    whole = Denoiser(model="gtcrn", chunk_seconds=61.0).enhance(clip, 16000)
    chunked = Denoiser(model="gtcrn").enhance(clip, 16000)  # default settings: carried state, any block size
    snr = snr_db(whole, chunked)
    print(f"GTCRN chunked (default settings) vs whole file: {snr:.1f} dB")
    assert snr >= 60.0  # the whole-file engine's cross-faded chunks reached ~30 dB; carried state is exact


def test_working_level_gain_matches_modelscope_audio_norm() -> None:
    x = np.load(shared_path("fixtures", "frcrn", "parity_input.npy")).astype(np.float64)
    normed = np.load(shared_path("fixtures", "frcrn", "pipeline_normed_input.npy"))
    np.testing.assert_allclose(
        (x * working_level_gain(x, -25.0)).astype(np.float32), normed, rtol=1e-6, atol=1e-7
    )


def test_compat_modelscope_reproduces_the_pipeline_int16() -> None:
    """Tolerance: +-1 LSB where the reference float output lies in [-1, 1); where ModelScope's int16 cast
    wrapped around (7 samples in this fixture) we clip instead."""
    fixtures = shared_path("fixtures", "frcrn")
    ref_int16 = np.load(fixtures / "pipeline_output_int16.npy").astype(np.int32)
    ref_float = np.load(fixtures / "pipeline_output_float.npy")
    d = Denoiser(model="frcrn", weights=str(fixtures / "frcrn_testweights_seed0.pt"), compat="modelscope")
    audio = read_audio(fixtures / "parity_input.wav")
    out = d.enhance_report(audio.samples, audio.sample_rate)
    assert out.sample_rate == 16000 and out.subtype == "PCM_16"
    ours = np.round(out.samples[0] * 32768).astype(np.int32)
    assert ours.shape == ref_int16.shape
    inside = (ref_float >= -1.0) & (ref_float < 1.0)
    assert np.max(np.abs(ours[inside] - ref_int16[inside])) <= 1
    wrapped = ~inside
    assert wrapped.sum() == 7
    np.testing.assert_array_equal(ours[wrapped], np.where(ref_float[wrapped] > 0, 32767, -32768))
