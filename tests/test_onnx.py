"""ONNX export -> load -> run, against torch: FRCRN on its test weights, GTCRN on its real weights.

Tolerances (measured values in docs/benchmarks.md):
* FP32: max abs error <= 1e-4 against the torch network on the same input (measured ~1e-6 .. 7e-5).
* INT8 (dynamic): FRCRN test weights are random, so only the numerical error means anything: SI-SNR against
  torch >= 25 dB (measured ~33 dB with 7-bit weights on an AVX2 CPU). GTCRN real weights: SI-SNR >= 30 dB
  (measured ~46 dB) and mean PESQ
  change against the torch output <= 0.1 on two VoiceBank-DEMAND pairs.
* Streaming GTCRN graph with our framing: >= 60 dB SNR against torch on the official mix.wav.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import shared_path

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

FRCRN_TEST_WEIGHTS = ("fixtures", "frcrn", "frcrn_testweights_seed0.pt")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """A private weights store fed from the shared GTCRN mirror (no network)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DENOISE_WEIGHTS_DIR", str(tmp_path_factory.mktemp("store")))
    mp.setenv("DENOISE_WEIGHTS_MIRROR", str(shared_path("weights")))
    yield
    mp.undo()


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    err = np.sum((reference.astype(np.float64) - estimate) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(err, 1e-30)))


# ----------------------------------------------------------------------------------------- pieces


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"),
    [((5, 2), (2, 1), (0, 1)), ((2, 6), (1, 2), (1, 0)), ((1, 5), (1, 2), (0, 2)), ((3, 3), (1, 1), (2, 1)),
     ((4, 3), (3, 2), (1, 1))],
)  # fmt: skip
def test_polyphase_conv_transpose_equals_conv_transpose(kernel, stride, padding) -> None:
    from denoise.export import polyphase_conv_transpose2d

    torch.manual_seed(0)
    x, w, b = torch.randn(2, 6, 9, 11), torch.randn(6, 4, *kernel), torch.randn(4)
    expected = F.conv_transpose2d(x, w, b, stride, padding)
    got = polyphase_conv_transpose2d(x, w, b, stride, padding)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


def test_numpy_stft_matches_gtcrn_torch_framing() -> None:
    from denoise.stft import istft, stft
    from denoise_models.gtcrn import GTCRN
    from denoise_models.spec import spec_of

    net, framing = GTCRN(), spec_of("gtcrn")
    x = np.random.default_rng(1).standard_normal((2, 5000)).astype(np.float32)
    spec = net.stft(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(stft(x, framing.n_fft, framing.hop_length), spec, atol=2e-5)
    np.testing.assert_allclose(
        istft(spec, framing.n_fft, framing.hop_length), net.istft(torch.from_numpy(spec)).numpy(), atol=1e-6
    )


def test_backend_runs_a_given_graph_and_never_exports() -> None:
    from denoise.backends.onnx_backend import OnnxBackend

    with pytest.raises(ValueError, match="runs a given graph: pass onnx_path"):
        OnnxBackend("gtcrn", device="cpu")


# ----------------------------------------------------------------------------------------- FRCRN


@pytest.fixture(scope="module")
def frcrn_export(store, tmp_path_factory: pytest.TempPathFactory):
    from denoise.export import ExportConfig, export_onnx

    weights = str(shared_path(*FRCRN_TEST_WEIGHTS))
    out = tmp_path_factory.mktemp("frcrn") / "frcrn.onnx"
    result = export_onnx(ExportConfig("frcrn", weights, out, example_seconds=0.5))
    return result, weights


def test_frcrn_export_metadata_and_checker(frcrn_export) -> None:
    import onnx

    from denoise.export import read_metadata
    from denoise_models.weights import sha256_of

    result, _ = frcrn_export
    onnx.checker.check_model(str(result.path))
    meta = read_metadata(result.path)
    assert meta == result.metadata
    assert (meta.model, meta.io, meta.sample_rate, meta.hop_length, meta.win_length) == (
        "frcrn",
        "wav",
        16000,
        320,
        640,
    )
    assert meta.weights_sha256 == sha256_of(shared_path(*FRCRN_TEST_WEIGHTS)) and meta.opset == 17
    model = onnx.load(str(result.path), load_external_data=False)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "samples"]
    # every 2-D transposed conv was rewritten as a Conv (only the 1-D iSTFT ones remain)
    kernels = [
        a.ints
        for n in model.graph.node
        if n.op_type == "ConvTranspose"
        for a in n.attribute
        if a.name == "kernel_shape"
    ]
    assert all(len(k) == 1 for k in kernels)


def test_frcrn_fp32_matches_torch_and_reference(frcrn_export) -> None:
    from denoise.backends.onnx_backend import OnnxBackend
    from denoise.backends.torch_backend import TorchBackend

    result, weights = frcrn_export
    backend = OnnxBackend("frcrn", weights, onnx_path=result.path, device="cpu")
    x = np.load(shared_path("fixtures", "frcrn", "parity_input.npy")).astype(np.float32)[None]
    reference = np.load(shared_path("fixtures", "frcrn", "model_output_wav_l2.npy"))
    y = backend.process(x)
    assert np.max(np.abs(y[0] - reference)) < 2e-4  # the ModelScope implementation's own output
    # another length and a batch of two: dynamic axes
    batch = np.random.default_rng(0).standard_normal((2, 8000 + 123)).astype(np.float32) * 0.1
    torch_out = TorchBackend("frcrn", weights, device="cpu").process(batch)
    assert np.max(np.abs(backend.process(batch) - torch_out)) < 1e-4


def test_frcrn_int8_within_bound(frcrn_export, tmp_path) -> None:
    from denoise.backends.onnx_backend import OnnxBackend
    from denoise.export import quantize_onnx, read_metadata

    result, weights = frcrn_export
    q = quantize_onnx(result.path, tmp_path / "frcrn.int8.onnx", "int8")
    assert read_metadata(q).precision == "int8-dynamic"
    x = np.load(shared_path("fixtures", "frcrn", "parity_input.npy")).astype(np.float32)[None, :16000]
    fp32 = OnnxBackend("frcrn", weights, onnx_path=result.path, device="cpu").process(x)
    int8 = OnnxBackend("frcrn", weights, onnx_path=q, device="cpu").process(x)
    assert snr_db(fp32[0], int8[0]) >= 25.0


# ----------------------------------------------------------------------------------------- GTCRN


@pytest.fixture(scope="module")
def gtcrn_export(store):
    from denoise.export import ensure_onnx

    return ensure_onnx("gtcrn", "default")  # the export cache of the (private) store


def test_gtcrn_fp32_matches_torch_through_the_engine(gtcrn_export) -> None:
    from denoise.audio import read_audio
    from denoise.engine import Denoiser

    audio = read_audio(shared_path("fixtures", "gtcrn", "mix.wav"))
    x = audio.samples[:, : 5 * audio.sample_rate]
    torch_out = Denoiser(model="gtcrn", device="cpu").enhance(x, audio.sample_rate)
    onnx_dn = Denoiser(model="gtcrn", backend="onnx", device="cpu")  # onnx_path=None: the cached export
    assert onnx_dn.backend.path == gtcrn_export and onnx_dn.backend.name.startswith("onnx:")
    assert np.max(np.abs(onnx_dn.enhance(x, audio.sample_rate) - torch_out)) < 1e-4


def test_gtcrn_int8_quality_bound(gtcrn_export, tmp_path) -> None:
    from denoise.export import quantize_onnx
    from denoise.parity import parity_report

    q = quantize_onnx(gtcrn_export, tmp_path / "gtcrn.int8.onnx", "int8")
    report = parity_report(q, "default", shared=shared_path(), quality_pairs=("p232_005", "p257_022"))
    assert report.si_snr_db >= 30.0
    assert len(report.quality) == 2
    assert report.pesq_change >= -0.1


def test_fp16_graph_refused_on_cpu(gtcrn_export, tmp_path) -> None:
    import onnxruntime as ort

    from denoise.backends.onnx_backend import OnnxBackend
    from denoise.export import quantize_onnx, read_metadata

    half = quantize_onnx(gtcrn_export, tmp_path / "gtcrn.fp16.onnx", "fp16")
    assert read_metadata(half).precision == "fp16"
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA EP present: FP16 runs there")
    with pytest.raises(RuntimeError, match="FP16"):
        OnnxBackend("gtcrn", onnx_path=half, device="cpu")


def test_backend_refuses_wrong_graph(gtcrn_export, tmp_path) -> None:
    from denoise.backends.onnx_backend import OnnxBackend

    with pytest.raises(ValueError, match="gtcrn"):
        OnnxBackend("frcrn", onnx_path=gtcrn_export, device="cpu")
    with pytest.raises(FileNotFoundError):
        OnnxBackend("gtcrn", onnx_path=tmp_path / "missing.onnx", device="cpu")


# ------------------------------------------------------------------------------- GTCRN streaming


def test_stream_graph_matches_torch_and_is_block_size_independent(store) -> None:
    from denoise.audio import read_audio
    from denoise.backends.gtcrn_stream import GtcrnStreamBackend
    from denoise_models import load_model

    x = read_audio(shared_path("fixtures", "gtcrn", "mix.wav")).samples[0]
    with torch.inference_mode():
        reference = load_model("gtcrn", "default").eval()(torch.from_numpy(x)[None])[0].numpy()
    backend = GtcrnStreamBackend("gtcrn", "default", device="cpu")
    y = backend.process(x[None])[0]
    assert y.shape == x.shape
    assert snr_db(reference, y[: reference.size]) >= 60.0
    # the same through the engine's contract: short rows are padded, never refused
    assert backend.process(np.ones((2, 100), dtype=np.float32) * 0.01).shape == (2, 100)
    # a real-time caller pushing blocks of any size gets the same samples
    stream, parts, i = backend.streamer(), [], 0
    rng = np.random.default_rng(0)
    while i < 40000:
        n = int(rng.integers(1, 900))
        parts.append(stream.push(x[i : min(i + n, 40000)]))
        i += n
    parts.append(stream.flush())
    blocks = np.concatenate(parts)
    assert blocks.size == 256 * (40000 // 256)
    stream = backend.streamer()
    whole = np.concatenate([stream.push(x[:40000]), stream.flush()])
    np.testing.assert_allclose(blocks, whole, atol=1e-6)


def test_stream_backend_refuses_other_weights(store) -> None:
    from denoise.backends.gtcrn_stream import GtcrnStreamBackend

    with pytest.raises(ValueError, match="embeds"):
        GtcrnStreamBackend("gtcrn", "gtcrn_vctk")
