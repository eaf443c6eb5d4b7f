"""The streaming engine: block-by-block results equal whole-signal ones, memory does not follow the
length, levels and peaks are handled without the whole file, live streams equal file mode."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import real_clip_16k, shared_path

from denoise.audio import AudioError, read_audio
from denoise.engine import Denoiser, DenoiserConfig, chunk_spans, working_level_gain
from denoise.engine.chunks import ChunkRunner
from denoise.engine.levels import CEILING, LoudStats, PeakLimiter, PowerStats


class ChunkSensitiveBackend:
    """A 'network' whose output depends on the whole chunk it sees (like FRCRN's pooling), so any
    difference in where chunks start, end or cross-fade shows up in the result."""

    name, arch, sample_rate, hop_length, min_samples, is_gpu = "chunky", "test", 16000, 256, 512, False

    def __init__(self, is_gpu: bool = False) -> None:
        self.is_gpu = is_gpu
        self.widths: list[int] = []

    def process(self, batch: np.ndarray) -> np.ndarray:
        self.widths.append(batch.shape[1])
        return batch * (1.0 + np.mean(np.abs(batch), axis=1, keepdims=True)) + 0.01 * np.tanh(batch)


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / (np.sum((ref - est) ** 2) + 1e-30)))


def whole_array_chunking(backend, x: np.ndarray, chunk: int, overlap: int, preroll: int) -> np.ndarray:
    """The previous engine's chunking over a whole array (reference): margins, spans, overlap-add."""
    if chunk <= 2 * preroll:
        preroll = chunk // 4
    overlap = min(overlap, (chunk - preroll) // 3)
    margin = 2 * backend.hop_length
    padded = np.pad(x, [(0, 0), (margin, margin)])
    total = padded.shape[1]
    if total <= chunk + preroll + overlap:
        chunk = total
    out = np.zeros(padded.shape)
    for start, stop, weight in chunk_spans(total, chunk, overlap, preroll):
        out[:, start:stop] += backend.process(padded[:, start:stop]) * weight
    return out[:, margin:-margin].astype(np.float32)


def random_blocks(x: np.ndarray, rng: np.random.Generator, largest: int):
    at = 0
    while at < x.shape[1]:
        n = int(rng.integers(1, largest))
        yield x[:, at : at + n]
        at += n


@pytest.mark.parametrize("length", [300, 9000, 20000, 21000, 47_123])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_streamed_chunks_equal_whole_array_chunks(length: int, batch_size: int) -> None:
    rng = np.random.default_rng(length)
    x = (0.3 * rng.standard_normal((2, length))).astype(np.float32)
    backend = ChunkSensitiveBackend()
    chunk, overlap, preroll = 8000, 800, 1000
    ref = whole_array_chunking(backend, x, chunk, overlap, preroll)
    runner = ChunkRunner(
        backend, 2, chunk=chunk, overlap=overlap, preroll=preroll, batch_size=batch_size, gains=np.ones(2)
    )
    got, held = [], 0
    for block in random_blocks(x, rng, 3000):
        got.append(runner.push(block))
        held = max(held, runner._x.shape[1], runner._acc.shape[1])
        assert held < 3 * chunk + 3000  # the chunks in flight, never the signal
    got.append(runner.finish())
    y = np.concatenate(got, axis=1)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, ref, atol=2e-6)


def test_file_mode_equals_array_mode_and_keeps_the_file_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = (0.2 * rng.standard_normal((2, 44100 * 3))).astype(np.float32)
    x[1] = 0.0  # a silent channel stays silent
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(src, x.T, 44100, subtype="PCM_24")
    x = read_audio(src).samples
    d = Denoiser(model="gtcrn", chunk_seconds=1.0, overlap_seconds=0.2, backend=ChunkSensitiveBackend())
    want = d.enhance_report(x, 44100)
    got = d.enhance_file(src, dst)
    info = sf.info(dst)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (44100, 2, x.shape[1], "PCM_24")
    assert got.frames == x.shape[1] and got.notes == want.notes == ["1 silent channel(s) left silent"]
    y = read_audio(dst).samples
    assert np.all(y[1] == 0.0)
    assert np.max(np.abs(y[0] - want.samples[0])) <= 2.0**-23  # the 24-bit quantisation step


def test_memory_does_not_grow_with_length(tmp_path: Path) -> None:
    d = Denoiser(model="gtcrn", chunk_seconds=1.0, overlap_seconds=0.1, backend=ChunkSensitiveBackend())
    rng = np.random.default_rng(0)
    peaks = []
    for seconds in (6, 30):
        src = tmp_path / f"{seconds}.wav"
        sf.write(src, (0.1 * rng.standard_normal((seconds * 48000, 2))).astype(np.float32), 48000, "PCM_24")
        tracemalloc.start()
        d.enhance_file(src, tmp_path / f"{seconds}.out.wav")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    short, long = peaks
    copy_growth = 24 * 48000 * 2 * 4  # what one float32 copy of the file would add from 6 s to 30 s
    print(f"peak Python allocations: 6 s {short / 1e6:.2f} MB, 30 s {long / 1e6:.2f} MB")
    assert long - short < 0.1 * copy_growth


def test_stateful_gtcrn_stream_equals_file_mode_at_any_block_size() -> None:
    rng = np.random.default_rng(1)
    d = Denoiser(model="gtcrn")
    assert d.stateful
    x = (0.1 * rng.standard_normal((2, 44100 * 2))).astype(np.float32)
    want = d.enhance(x, 44100)
    for largest in (300, 9000):
        live = d.stream(44100, 2)
        blocks = list(random_blocks(x, rng, largest))
        out = [live.process(b) for b in blocks]
        assert [o.shape for o in out] == [b.shape for b in blocks]
        y = np.concatenate([*out, live.flush()], axis=1)
        assert y.shape[1] == x.shape[1] + live.latency and live.underruns == 0
        assert np.all(y[:, : live.latency] == 0.0)
        assert snr_db(want, y[:, live.latency :]) > 60


def test_stream_returns_as_many_frames_as_it_gets_and_refuses_after_flush() -> None:
    d = Denoiser(model="gtcrn", chunk_seconds=1.0, backend=ChunkSensitiveBackend())
    live = d.stream(48000, 1)
    for n in (1, 480, 0, 7000, 33):
        assert live.process(np.zeros((1, n), np.float32)).shape == (1, n)
    assert live.flush().shape == (1, live.latency)
    with pytest.raises(RuntimeError, match="flushed"):
        live.process(np.zeros((1, 10), np.float32))
    with pytest.raises(ValueError, match=r"\[2, frames\]"):
        d.stream(16000, 2).process(np.zeros((1, 10), np.float32))


@pytest.mark.slow
def test_gtcrn_stateful_output_equals_whole_file_on_a_60s_real_clip() -> None:
    clip = real_clip_16k(60)
    d = Denoiser(model="gtcrn")
    whole = d.backend.process(np.pad(clip, 512)[None])[0, 512:-512]  # one forward over the whole clip
    for block in (4000, 48_000):  # 0.25 s and 3 s blocks
        live = d.stream(16000, 1)
        out = [live.process(clip[None, at : at + block]) for at in range(0, clip.size, block)]
        y = np.concatenate([*out, live.flush()], axis=1)[0, live.latency :]
        snr = snr_db(whole, y)
        print(f"GTCRN streamed in {block / 16000:g} s blocks vs one whole-clip forward: {snr:.1f} dB")
        assert snr >= 60.0


def test_streamed_working_level_equals_modelscope_audio_norm() -> None:
    x = np.load(shared_path("fixtures", "frcrn", "parity_input.npy")).astype(np.float32)[None]
    power = PowerStats(1)
    for at in range(0, x.shape[1], 1000):
        power.add(x[:, at : at + 1000])
    loud = LoudStats(power.mean)
    for at in range(0, x.shape[1], 777):
        loud.add(x[:, at : at + 777])
    assert loud.gains(-25.0)[0] == pytest.approx(working_level_gain(x[0], -25.0), rel=1e-9)


def test_limiter_touches_only_samples_near_overshoots_and_never_exceeds_the_ceiling() -> None:
    rate, lookahead = 16000, 32
    x = (0.5 * np.sin(np.arange(rate) / 9.0)).astype(np.float32)[None].repeat(2, axis=0)
    x[0, 5000] = 1.7  # one spike in one channel: both channels are limited together
    x[1, 9000:9100] *= 2.5  # a loud burst
    limiter = PeakLimiter(2, lookahead)
    rng = np.random.default_rng(0)
    y = np.concatenate([*(limiter.process(b) for b in random_blocks(x, rng, 700)), limiter.flush()], axis=1)
    assert y.shape == x.shape and np.max(np.abs(y)) <= CEILING
    changed = np.flatnonzero(np.any(y != x, axis=0))
    over = np.flatnonzero(np.any(np.abs(x) > CEILING, axis=0))
    assert np.all(np.min(np.abs(changed[:, None] - over[None]), axis=1) <= 2 * lookahead)
    assert limiter.overshoots == int(np.count_nonzero(np.abs(x) > CEILING))
    assert "avoid clipping" in limiter.notes()[0]


def test_compat_refuses_a_file_longer_than_modelscope_handles(tmp_path: Path) -> None:
    src = tmp_path / "long.wav"
    sf.write(src, np.zeros(121 * 8000, np.int16), 8000)
    d = Denoiser(model="frcrn", compat="modelscope", backend=ChunkSensitiveBackend())
    with pytest.raises(AudioError, match="up to 120 s"):
        d.enhance_file(src, tmp_path / "out.wav")
    assert not (tmp_path / "out.wav").exists()


def test_backend_options_are_validated_and_the_batch_follows_the_device() -> None:
    with pytest.raises(ValueError, match="torch backend"):
        DenoiserConfig(precision="bf16", backend="onnx")
    with pytest.raises(ValueError, match="CUDA"):
        DenoiserConfig(precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="CUDA"):
        Denoiser(model="gtcrn", precision="bf16", backend=ChunkSensitiveBackend())
    assert Denoiser(model="gtcrn", backend=ChunkSensitiveBackend(is_gpu=True)).batch_size == 8
    assert Denoiser(model="gtcrn", backend=ChunkSensitiveBackend()).batch_size == 1
