"""GTCRN: official checkpoints load unchanged and reproduce the authors' published output.

Reference data (checkpoints, mix.wav / enh_official.wav, the key listing) comes from the shared
folder; tests that need it skip when it is absent. Everything else runs on random weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import shared_path
from torch import nn

from denoise_models.gtcrn import GTCRN, SFE, GTConvBlock, conv_transpose_as_conv, erb_filterbank

CHECKPOINTS = ["gtcrn_dns3", "gtcrn_dns3_stream", "gtcrn_vctk"]


def _official_state_dict(name: str) -> dict[str, torch.Tensor]:
    """Unwrap ``{'model': state_dict}`` by hand (denoise_models/weights.py does this in the application)."""
    ckpt = torch.load(shared_path("weights", f"{name}.tar"), map_location="cpu", weights_only=True)
    return ckpt["model"]


def _snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10(|ref|^2 / |ref - est|^2) over the common length."""
    n = min(len(reference), len(estimate))
    err = reference[:n].astype(np.float64) - estimate[:n].astype(np.float64)
    return float(10 * np.log10(np.sum(reference[:n].astype(np.float64) ** 2) / np.sum(err**2)))


@pytest.fixture(scope="module")
def stream_net() -> GTCRN:
    net = GTCRN().eval()
    net.load_state_dict(_official_state_dict("gtcrn_dns3_stream"), strict=True)
    return net


def test_parameter_count() -> None:
    net = GTCRN()
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert (total, trainable) == (48_245, 23_669)


def test_state_dict_matches_official_listing() -> None:
    listing = shared_path("fixtures", "gtcrn", "state_dict_keys.tsv").read_text().splitlines()[1:]
    expected = {}
    for line in listing:
        key, shape, _dtype, _kind = line.split("\t")
        expected[key] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    ours = {k: tuple(v.shape) for k, v in GTCRN().state_dict().items()}
    assert ours == expected


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_official_checkpoints_load_strict(name: str) -> None:
    state, notes = GTCRN.remap_state_dict(_official_state_dict(name))
    assert notes == []  # our names are the official ones
    net = GTCRN()
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # The fixed ERB matrices we compute are the ones the checkpoint was trained with.
    torch.testing.assert_close(state["erb.erb_fc.weight"], erb_filterbank(), rtol=0, atol=1e-7)
    torch.testing.assert_close(state["erb.ierb_fc.weight"], erb_filterbank().T, rtol=0, atol=1e-7)


def test_reproduces_official_output(stream_net: GTCRN) -> None:
    mix, fs = sf.read(shared_path("fixtures", "gtcrn", "mix.wav"), dtype="float32")
    official, _ = sf.read(shared_path("fixtures", "gtcrn", "enh_official.wav"), dtype="float32")
    assert fs == GTCRN.sample_rate
    with torch.inference_mode():
        enhanced = stream_net(torch.from_numpy(mix)[None])[0].numpy()
    assert len(mix) == 156_302 and len(enhanced) == 156_160 == len(official)
    snr = _snr_db(official, enhanced)
    print(f"GTCRN vs enh_official.wav: {snr:.1f} dB, max abs diff {np.abs(official - enhanced).max():.2e}")
    assert snr >= 60.0
    # ... and it actually enhanced something: the output is far from the input.
    assert _snr_db(official, mix) < 30.0


def test_remap_state_dict_strips_data_parallel_prefix() -> None:
    state = GTCRN().state_dict()
    wrapped = {f"module.{k}": v for k, v in state.items()}
    remapped, notes = GTCRN.remap_state_dict(wrapped)
    assert list(remapped) == list(state) and len(notes) == 1 and "module." in notes[0]
    assert GTCRN.remap_state_dict(state) == (dict(state), [])


def test_sfe_equals_unfold_ordering() -> None:
    """SFE is written with pad+slice for ONNX; it must equal the official nn.Unfold layout."""
    x = torch.randn(2, 3, 5, 17)
    unfolded = nn.Unfold(kernel_size=(1, 3), padding=(0, 1))(x).reshape(2, 9, 5, 17)
    torch.testing.assert_close(SFE(3)(x), unfolded, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "padding", "dilation", "groups"),
    [(24, 16, 1, 0, 1, 1), (16, 16, (3, 3), (10, 1), (5, 1), 16), (8, 6, (3, 3), (2, 1), (1, 1), 2)],
)
def test_conv_transpose_as_conv_is_exact(c_in, c_out, kernel, padding, dilation, groups) -> None:
    layer = nn.ConvTranspose2d(c_in, c_out, kernel, 1, padding, dilation=dilation, groups=groups)
    x = torch.randn(2, c_in, 30, 17)
    with torch.no_grad():
        torch.testing.assert_close(conv_transpose_as_conv(layer, x), layer(x), rtol=1e-5, atol=1e-6)


def test_channel_shuffle_interleaves() -> None:
    a = torch.zeros(1, 3, 1, 1) + torch.arange(3.0).view(1, 3, 1, 1)
    b = a + 10
    assert GTConvBlock.shuffle(a, b).flatten().tolist() == [0, 10, 1, 11, 2, 12]


def test_output_length_follows_official_infer() -> None:
    net = GTCRN().eval()
    with torch.inference_mode():
        for n in (GTCRN.min_samples, 1_000, 4_096, 5_000):
            frames = net.stft(torch.zeros(1, n)).shape[2]
            assert frames == 1 + n // GTCRN.hop_length
            assert net(torch.randn(1, n)).shape == (1, (frames - 1) * GTCRN.hop_length)


def test_stft_istft_reconstructs() -> None:
    net = GTCRN()
    wav = torch.randn(2, 4_000)
    out = net.istft(net.stft(wav))
    torch.testing.assert_close(out, wav[:, : out.shape[1]], rtol=0, atol=1e-5)
    assert net.istft(net.stft(wav), length=4_000).shape == (2, 4_000)


def test_short_input_and_minimum_length() -> None:
    net = GTCRN().eval()
    with torch.inference_mode():
        assert net(torch.randn(1, 1_000)).shape == (1, 768)
        assert net(torch.randn(1, GTCRN.min_samples)).shape == (1, GTCRN.hop_length)
        with pytest.raises(ValueError, match=f"at least {GTCRN.min_samples} samples"):
            net(torch.randn(1, GTCRN.min_samples - 1))
        with pytest.raises(ValueError, match="batch"):
            net(torch.randn(1_000))
        with pytest.raises(ValueError, match="257"):
            net.forward_spec(torch.randn(1, 256, 4, 2))


def test_batch_consistency() -> None:
    torch.manual_seed(0)
    net = GTCRN().eval()
    wavs = 0.1 * torch.randn(2, 8_000)
    with torch.inference_mode():
        batched = net(wavs)
        single = torch.cat([net(wavs[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(batched[0], batched[1])


def test_causal_in_time() -> None:
    """Changing future frames must leave every earlier output frame unchanged."""
    torch.manual_seed(0)
    net = GTCRN().eval()
    spec = torch.randn(1, 257, 30, 2)
    changed = spec.clone()
    changed[:, :, 20:] = torch.randn(1, 257, 10, 2)
    with torch.inference_mode():
        a, b = net.forward_spec(spec), net.forward_spec(changed)
    torch.testing.assert_close(a[:, :, :20], b[:, :, :20], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a[:, :, 20:], b[:, :, 20:])


def test_gradients_flow_in_train_mode() -> None:
    torch.manual_seed(0)
    net = GTCRN().train()
    wav = 0.1 * torch.randn(2, 4_000)
    out = net(wav)
    loss = (out - wav[:, : out.shape[1]]).pow(2).mean()
    loss.backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"
        else:
            assert name.startswith("erb.") and p.grad is None, name
