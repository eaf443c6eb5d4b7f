"""Stateful GTCRN: streamed and chunked output equals the whole-file output; the mask is exposed.

The random-weight tests need nothing from the shared folder (they never skip); the real-clip tests use the
released ``gtcrn_dns3_stream`` checkpoint and 60 s of real DNS-Challenge noisy speech from it.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import shared_path

from denoise.backends import FixedDelayStream
from denoise.backends.torch_backend import TorchBackend
from denoise_models.gtcrn import GTCRN, GTCRNStream
from denoise_models.spec import spec_of

DELAY = spec_of("gtcrn").stream_delay
BLOCK_SIZES = [1, 255, 256, 1000, 16000]


def _snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    err = np.sum((reference - estimate) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(np.sum(reference**2) / err))


def _stream(backend: TorchBackend, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    """``x [B, T]`` through ``backend.open_stream`` in consecutive blocks of ``sizes`` (cycled), then flush."""
    stream = backend.open_stream(x.shape[0])
    assert stream.delay == DELAY
    out, start, i = [], 0, 0
    while start < x.shape[1]:
        block = x[:, start : start + sizes[i % len(sizes)]]
        y = stream.process(block)
        assert y.shape == block.shape and y.dtype == np.float32
        out.append(y)
        start, i = start + block.shape[1], i + 1
    tail = stream.flush()
    assert tail.shape == (x.shape[0], DELAY)
    return np.concatenate([*out, tail], axis=1)


def _random_net() -> GTCRN:
    """Random weights with non-trivial BatchNorm statistics (the defaults would hide normalisation bugs)."""
    torch.manual_seed(0)
    net = GTCRN().eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return net


@pytest.fixture(scope="module")
def random_backend() -> TorchBackend:
    backend = TorchBackend("gtcrn", None, device="cpu")
    backend.net = _random_net()
    return backend


@pytest.fixture(scope="module")
def speechlike() -> np.ndarray:
    """Two 1.25 s rows: a gliding tone in noise, and noise with a silent stretch."""
    rng = np.random.default_rng(0)
    t = np.arange(20_000) / 16_000
    tone = 0.3 * np.sin(2 * np.pi * (200 + 100 * np.sin(2 * np.pi * 0.5 * t)) * t)
    rows = np.stack([tone + 0.05 * rng.standard_normal(t.size), 0.1 * rng.standard_normal(t.size)])
    rows[1, 5_000:10_000] = 0.0
    return rows.astype(np.float32)


# ---- contract of the backend stream, random weights


def test_spec_states_the_stream_facts() -> None:
    spec = spec_of("gtcrn")
    assert spec.stateful and spec.stream_delay == GTCRN.stream_delay == GTCRN.n_fft - 1
    assert not spec_of("frcrn").stateful and spec_of("frcrn").stream_delay is None


@pytest.mark.parametrize("block", BLOCK_SIZES)
def test_any_block_size_equals_offline(
    random_backend: TorchBackend, speechlike: np.ndarray, block: int
) -> None:
    offline = random_backend.process(speechlike)
    streamed = _stream(random_backend, speechlike, [block])
    assert streamed.shape == (2, speechlike.shape[1] + DELAY)
    assert not streamed[:, :DELAY].any()  # the delay is silence, then the model's output
    for row in range(2):
        assert _snr_db(offline[row], streamed[row, DELAY:]) >= 100.0


def test_irregular_blocks_and_short_inputs(random_backend: TorchBackend) -> None:
    """Odd block sizes, empty blocks, and lengths around the minimum input and the hop."""
    rng = np.random.default_rng(1)
    for length in (1, 100, 256, 257, 300, 511, 512, 513, 5_000):
        x = (0.1 * rng.standard_normal((2, length))).astype(np.float32)
        streamed = _stream(random_backend, x, [0, 7, 300, 1, 64])
        np.testing.assert_allclose(streamed[:, DELAY:], random_backend.process(x), rtol=0, atol=1e-6)


def test_empty_stream_and_misuse(random_backend: TorchBackend) -> None:
    stream = random_backend.open_stream(1)
    assert stream.process(np.zeros((1, 0), np.float32)).shape == (1, 0)
    assert stream.flush().shape == (1, DELAY)
    with pytest.raises(RuntimeError, match="flushed"):
        stream.process(np.zeros((1, 10), np.float32))
    with pytest.raises(ValueError, match=r"\[2, samples\]"):
        random_backend.open_stream(2).process(np.zeros((1, 10), np.float32))


def test_delay_is_the_smallest_fixed_one() -> None:
    """After 256 m + 255 samples exactly 511 fewer outputs are final: no fixed delay below 511 exists."""
    with torch.inference_mode():
        for m in (2, 3, 10):
            n_in = 256 * m + 255
            n_out = GTCRNStream(GTCRN().eval(), 1).push(torch.zeros(1, n_in)).shape[1]
            assert n_in - n_out == DELAY


def test_fixed_delay_stream_pads_and_crops_like_offline() -> None:
    """FixedDelayStream ends the input as Backend.process does: zero-pad to whole hops, crop back."""
    pushed: list[np.ndarray] = []

    def push(x: np.ndarray) -> np.ndarray:  # a producer without lag: its output is its input
        pushed.append(x)
        return x

    stream = FixedDelayStream(
        push, lambda: np.full((1, 5), 7, np.float32), batch=1, delay=3, hop_length=256, min_samples=257
    )
    np.testing.assert_array_equal(stream.process(np.ones((1, 300), np.float32)), [[0] * 3 + [1] * 297])
    np.testing.assert_array_equal(stream.flush(), [[1, 1, 1]])  # padding and extra output cropped off
    assert pushed[-1].shape == (1, 512 - 300) and not pushed[-1].any()

    lagging = FixedDelayStream(
        lambda x: x[:, :0], lambda: np.zeros((1, 0)), batch=1, delay=4, hop_length=256, min_samples=257
    )
    with pytest.raises(RuntimeError, match="lags more than its delay"):
        lagging.process(np.ones((1, 300), np.float32))


# ---- the network itself


def test_stream_step_frame_by_frame_equals_forward_spec() -> None:
    net = _random_net()
    spec = torch.randn(2, 257, 40, 2)
    with torch.inference_mode():
        whole = net.forward_spec(spec)
        state = net.stream_init(2)
        empty, state = net.stream_step(spec[:, :, :0], state)
        assert empty.shape == (2, 257, 0, 2)
        pieces = []
        for start, stop in [(0, 1), (1, 2), (2, 9), (9, 10), (10, 40)]:
            out, state = net.stream_step(spec[:, :, start:stop], state)
            pieces.append(out)
        torch.testing.assert_close(torch.cat(pieces, dim=2), whole, rtol=0, atol=1e-5)
        # Without the carried state the later frames differ: the state is what makes it exact.
        restarted, _ = net.stream_step(spec[:, :, 10:], net.stream_init(2))
        assert (restarted - whole[:, :, 10:]).abs().max() > 1e-3


def test_stream_too_short_raises() -> None:
    stream = GTCRNStream(GTCRN().eval(), 1)
    stream.push(torch.zeros(1, GTCRN.min_samples - 1))
    with pytest.raises(ValueError, match=f"at least {GTCRN.min_samples} samples"):
        stream.finish()


def test_forward_outputs_expose_the_mask() -> None:
    net = _random_net()
    wav = 0.1 * torch.randn(2, 8_000)
    with torch.inference_mode():
        out = net.forward_outputs(wav)
        assert torch.equal(out.wav, net(wav))
        assert torch.equal(out.spec, net.forward_spec(net.stft(wav)))
    noisy = torch.view_as_complex(net.stft(wav))
    applied = torch.view_as_complex(out.mask.contiguous()) * noisy
    torch.testing.assert_close(torch.view_as_real(applied), out.spec, rtol=1e-5, atol=1e-6)
    assert out.mask.shape == out.spec.shape == (2, 257, 1 + 8_000 // 256, 2)
    assert out.mask.abs().max() <= 1.0 + 1e-6 < out.spec.abs().max()  # tanh mask, not the spectrum


# ---- real weights, 60 s of real noisy speech


@pytest.fixture(scope="module")
def real_backend() -> TorchBackend:
    return TorchBackend("gtcrn", shared_path("weights", "gtcrn_dns3_stream.tar"), device="cpu")


@pytest.fixture(scope="module")
def real_clip() -> np.ndarray:
    """The six 10 s DNS no_reverb noisy files of the shared eval set, back to back: 60 s at 16 kHz."""
    files = sorted(shared_path("eval", "dns_noreverb", "noisy").glob("*.wav"))[:6]
    parts = [sf.read(f, dtype="float32")[0] for f in files]
    clip = np.concatenate(parts)[None]
    assert clip.shape[1] >= 60 * 16_000
    return clip[:, : 60 * 16_000]


@pytest.fixture(scope="module")
def real_offline(real_backend: TorchBackend, real_clip: np.ndarray) -> np.ndarray:
    return real_backend.process(real_clip)


@pytest.mark.parametrize(
    "sizes",
    [
        [16_000],
        pytest.param([4_801, 333, 16_000, 1], marks=pytest.mark.slow),
        pytest.param([1_000], marks=pytest.mark.slow),
        pytest.param([255], marks=pytest.mark.slow),
    ],
)
def test_real_clip_streamed_equals_whole_file(
    real_backend: TorchBackend, real_clip: np.ndarray, real_offline: np.ndarray, sizes: list[int]
) -> None:
    streamed = _stream(real_backend, real_clip, sizes)
    snr = _snr_db(real_offline[0], streamed[0, DELAY:])
    print(f"blocks {sizes}: {snr:.1f} dB vs whole file")
    assert snr >= 60.0
    assert _snr_db(real_offline[0], real_clip[0]) < 30.0  # and the network did enhance something


def test_official_streaming_graph_opens_the_same_stream(real_clip: np.ndarray) -> None:
    """The ONNX streaming backend's open_stream keeps the same contract (same delay, equals its process)."""
    from denoise.backends.gtcrn_stream import GtcrnStreamBackend

    backend = GtcrnStreamBackend(onnx_path=shared_path("weights", "gtcrn_simple_stream.onnx"))
    assert backend.stateful
    x = np.concatenate([real_clip[:, :40_000], real_clip[:, 16_000:56_000]])  # two rows
    stream = backend.open_stream(2)
    out = [stream.process(x[:, i : i + 1_000]) for i in range(0, x.shape[1], 1_000)]
    streamed = np.concatenate([*out, stream.flush()], axis=1)
    assert streamed.shape == (2, x.shape[1] + DELAY)
    offline = backend.process(x)
    for row in range(2):
        assert _snr_db(offline[row], streamed[row, DELAY:]) >= 100.0
