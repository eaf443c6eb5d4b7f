"""GTCRN's exported graph carries the network's state: exact chunking and live audio on ONNX Runtime.

The graph is ``GTCRN.stream_step`` with its state as inputs and outputs (``denoise.export``): from zero state it
is the offline network, and a signal run through it in pieces of any size gives the whole-signal output. These
tests check that contract at every level a user meets it: the backend's stream, the engine's file mode (chunks
change nothing), ``Denoiser.stream`` (live equals file mode) and ``denoise stream``, which picks this backend
for GTCRN on a CPU. Measured values: stream vs one call ~123 dB SNR, ONNX vs torch ~120 dB.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import shared_path

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def gtcrn_graph(tmp_path_factory: pytest.TempPathFactory):
    """The cached FP32 export of the real GTCRN weights, in a private store fed from the shared mirror."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DENOISE_WEIGHTS_DIR", str(tmp_path_factory.mktemp("store")))
    mp.setenv("DENOISE_WEIGHTS_MIRROR", str(shared_path("weights")))
    from denoise.export import ensure_onnx

    yield ensure_onnx("gtcrn", "default")
    mp.undo()


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    from denoise.audio import read_audio

    audio = read_audio(shared_path("fixtures", "gtcrn", "mix.wav"))
    return audio.samples[:, : 12 * audio.sample_rate], audio.sample_rate


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    err = np.sum((reference.astype(np.float64) - estimate) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(err, 1e-30)))


def streamed(stream, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    """``x [B, T]`` through ``stream.process`` in blocks cycling through ``sizes``, then ``flush``."""
    parts, at, i = [], 0, 0
    while at < x.shape[1]:
        n = sizes[i % len(sizes)]
        parts.append(stream.process(x[:, at : at + n]))
        at, i = at + n, i + 1
    parts.append(stream.flush())
    return np.concatenate(parts, axis=1)


def test_graph_declares_its_state_and_old_graphs_run_chunked(gtcrn_graph) -> None:
    from denoise.backends.onnx_backend import OnnxBackend
    from denoise.onnx_metadata import OnnxMetadata, read_metadata

    meta = read_metadata(gtcrn_graph)
    assert len(meta.state) == 16 and meta.export_version == 2
    backend = OnnxBackend("gtcrn", onnx_path=gtcrn_graph, device="cpu", threads=1)
    assert backend.stateful and [s.shape[0] for s in backend.zero_state(3)] == [3] * 16
    # a graph exported before state existed has no "state" in its record: it is run chunked, as then
    old = json.loads(meta.to_json())
    del old["state"]
    assert OnnxMetadata.from_json(json.dumps(old)).state == ()


def test_backend_stream_equals_one_call_and_torch(gtcrn_graph, speech) -> None:
    from denoise.backends.onnx_backend import OnnxBackend
    from denoise.backends.torch_backend import TorchBackend

    x16 = np.ascontiguousarray(np.concatenate([speech[0][:, :70000], speech[0][:, 70000:140000] * 0.5]))
    backend = OnnxBackend("gtcrn", onnx_path=gtcrn_graph, device="cpu", threads=1)
    whole = backend.process(x16)
    assert snr_db(TorchBackend("gtcrn", "default", device="cpu").process(x16), whole) >= 90.0
    for sizes in ([1], [256], [1000], [7, 300, 2049, 1, 4096]):
        stream = backend.open_stream(2)
        y = streamed(stream, x16, sizes)
        assert y.shape == (2, x16.shape[1] + stream.delay)
        assert snr_db(whole, y[:, stream.delay :]) >= 90.0, sizes


def test_engine_on_onnx_carries_state_so_chunks_change_nothing(gtcrn_graph, speech) -> None:
    from denoise.engine import Denoiser

    x = speech[0]
    x48 = np.repeat(x, 3, axis=1)  # a 48 kHz signal: resampling, full band and levels in the path
    reference = Denoiser(model="gtcrn", device="cpu").enhance(x48, 48000)  # torch, carried state
    onnx = Denoiser(model="gtcrn", backend="onnx", device="cpu", threads=1, chunk_seconds=2.0)
    assert onnx.stateful
    assert snr_db(reference, onnx.enhance(x48, 48000)) >= 60.0


def test_live_stream_on_onnx_equals_file_mode(gtcrn_graph, speech) -> None:
    from denoise.engine import Denoiser

    x, rate = speech
    denoiser = Denoiser(model="gtcrn", backend="onnx", device="cpu", threads=1)
    file_mode = denoiser.enhance(x, rate)
    stream = denoiser.stream(rate, 1)
    hop = rate * 16 // 1000  # a sound card's 16 ms blocks
    y = streamed(stream, x, [hop])[:, stream.latency :]
    assert y.shape == file_mode.shape
    assert snr_db(file_mode, y) >= 60.0


def test_int8_graph_keeps_its_state(gtcrn_graph, speech, tmp_path) -> None:
    from denoise.backends.onnx_backend import OnnxBackend
    from denoise.export import quantize_onnx

    q = quantize_onnx(gtcrn_graph, tmp_path / "gtcrn.int8.onnx", "int8")
    backend = OnnxBackend("gtcrn", onnx_path=q, device="cpu", threads=1)
    assert backend.stateful
    x16 = np.ascontiguousarray(speech[0][:, :48000])
    stream = backend.open_stream(1)
    # Dynamic INT8 scales each call's activations by that call's range, so hop-sized calls round differently
    # from one whole-signal call (measured ~57 dB; INT8 against FP32 is ~49 dB): close, not bit-equal.
    assert snr_db(backend.process(x16), streamed(stream, x16, [256])[:, stream.delay :]) >= 45.0


def test_auto_backend_is_onnx_for_gtcrn_on_cpu() -> None:
    from denoise.engine import resolve_backend

    assert resolve_backend("auto", "gtcrn", "cpu") == "onnx"
    assert resolve_backend("auto", "frcrn", "cpu") == "torch"  # FRCRN has no state to carry
    assert resolve_backend("torch", "gtcrn", "cpu") == "torch"  # an explicit choice is kept
    assert resolve_backend("auto", "gtcrn", "cuda") == "torch"


def test_denoise_stream_pipes_through_onnx_by_default(gtcrn_graph, speech, tmp_path) -> None:
    """``denoise stream --model gtcrn`` (no --backend) runs the stateful graph and equals file mode."""
    import os

    from denoise.engine import Denoiser

    x, rate = speech
    pcm = (np.clip(x[0, : 4 * rate], -1, 1) * 32767).astype("<i2")
    cmd = [sys.executable, "-m", "denoise", "stream", "--model", "gtcrn", "--device", "cpu"]
    cmd += ["--format", "s16le", "--rate", str(rate), "--channels", "1"]
    run = subprocess.run(cmd, input=pcm.tobytes(), capture_output=True, timeout=300, env=dict(os.environ))
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert "onnx:cpu" in run.stderr.decode()
    out = np.frombuffer(run.stdout, dtype="<i2").astype(np.float32) / 32768
    expected = Denoiser(model="gtcrn", backend="onnx", device="cpu").enhance(pcm[None] / 32768, rate)[0]
    assert out.shape == expected.shape
    assert snr_db(expected, out) >= 35.0  # both sides are 16-bit PCM: quantisation noise, not model error
