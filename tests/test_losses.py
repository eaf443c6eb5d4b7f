"""Training losses: optimum at a perfect estimate, SI-SNR invariances, the ideal cIRM, gradients."""

from __future__ import annotations

import pytest
import torch

from denoise.finetune import losses as L

SR = 16000


def _speechlike(batch: int = 2, samples: int = 8000, seed: int = 0) -> torch.Tensor:
    """Harmonic tones under a syllable-rate envelope: broadband, non-stationary, reproducible."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / SR
    f0 = 120.0 + 80.0 * torch.rand(batch, 1, generator=gen)
    wav = sum(torch.sin(2 * torch.pi * k * f0 * t) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * torch.sin(2 * torch.pi * 4.0 * t)
    return 0.1 * wav * envelope + 0.01 * torch.randn(batch, samples, generator=gen)


def _noise(batch: int = 2, samples: int = 8000, seed: int = 1) -> torch.Tensor:
    return 0.05 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def _torch_spec(wav: torch.Tensor) -> torch.Tensor:
    """Plain torch.stft real view [B, 257, N, 2] (GTCRN-like framing)."""
    window = torch.hann_window(512).sqrt()
    return torch.view_as_real(torch.stft(wav, 512, 256, window=window, return_complex=True))


def _frcrn_spec(wav: torch.Tensor) -> torch.Tensor:
    """FRCRN's conv-STFT [B, 321, N, 2] when the network's module is there, else torch.stft."""
    try:
        from denoise_models.conv_stft import ConvSTFT
    except ImportError:
        return _torch_spec(wav)
    return L.from_stacked(ConvSTFT(640, 320, 640, "hann")(wav))


# ------------------------------------------------------------------------------------ SI-SNR


def test_si_snr_perfect_estimate_is_the_optimum() -> None:
    clean = _speechlike()
    perfect = L.si_snr(estimate=clean, reference=clean)
    assert torch.all(perfect > 60.0)  # finite (eps-bounded), far above any real estimate
    for noisy in (clean + 0.1 * _noise(), clean + _noise(), 0.5 * clean + _noise()):
        assert torch.all(L.si_snr(estimate=noisy, reference=clean) < perfect - 20.0)
    assert L.si_snr_loss(estimate=clean, reference=clean) == -perfect.mean()


def test_si_snr_takes_keywords_only() -> None:
    """One signature project-wide (denoise.metrics too): the order of two arrays is never a question."""
    clean, est = _speechlike(), _speechlike() + _noise()
    with pytest.raises(TypeError):
        L.si_snr(est, clean)
    with pytest.raises(TypeError):
        L.si_snr_loss(est, clean)


def test_si_snr_is_scale_invariant() -> None:
    clean, est = _speechlike(), _speechlike() + _noise()
    base = L.si_snr(estimate=est, reference=clean)
    for gain in (0.01, 0.5, 7.0, -2.0):  # far below 0.01 the eps terms start to show
        torch.testing.assert_close(L.si_snr(estimate=gain * est, reference=clean), base, atol=1e-3, rtol=0)
        torch.testing.assert_close(L.si_snr(estimate=est, reference=gain * clean), base, atol=1e-3, rtol=0)


def test_si_snr_matches_its_definition_and_trims_lengths() -> None:
    clean = _speechlike(1)
    noise = _noise(1)
    est = clean + noise
    c = clean - clean.mean()
    proj = (est - est.mean()) @ c.T / (c @ c.T) * c
    expected = 10 * torch.log10(proj.pow(2).sum() / ((est - est.mean()) - proj).pow(2).sum())
    torch.testing.assert_close(L.si_snr(estimate=est, reference=clean)[0], expected, atol=1e-3, rtol=0)
    # an iSTFT that returns fewer samples is compared on the common span
    assert L.si_snr(estimate=est[:, :-100], reference=clean).shape == (1,)


# ---------------------------------------------------------------------------------- spectral


def test_log_magnitude_loss_is_zero_at_perfect_and_positive_otherwise() -> None:
    spec = _torch_spec(_speechlike())
    assert L.log_magnitude_loss(spec, spec).item() == 0.0
    assert L.log_magnitude_loss(_torch_spec(_speechlike() + _noise()), spec).item() > 0.0


@pytest.mark.parametrize("stft", [_torch_spec, _frcrn_spec], ids=["torch_stft", "frcrn_conv_stft"])
def test_ideal_cirm_reconstructs_clean_where_unclipped(stft) -> None:
    clean, noisy = _speechlike(), _speechlike() + _noise()
    S, Y = stft(clean), stft(noisy)
    mask = L.ideal_cirm(S, Y)
    assert mask.shape == S.shape
    assert mask.abs().max() <= 2.0
    unclipped = (mask.abs() <= 2.0).all(-1) & ~((mask == 1.0) | (mask == -1.0)).any(-1)
    assert unclipped.float().mean() > 0.5  # the test is about most bins, not a corner
    rebuilt = L.complex_multiply(mask, Y)
    err = (rebuilt - S)[unclipped].abs().max()
    assert err < 1e-4 * S.abs().max()


def test_ideal_cirm_clipping_rule_is_frcrns() -> None:
    # S / Y = 3 (real) and -3j -> real part >2 becomes 1; imaginary part < -2 becomes -1.
    Y = torch.tensor([[[[1.0, 0.0]], [[1.0, 0.0]]]])  # [1, 2 freqs, 1 frame, 2]
    S = torch.tensor([[[[3.0, 0.0]], [[0.0, -3.0]]]])
    mask = L.ideal_cirm(S, Y)
    torch.testing.assert_close(mask[0, 0, 0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(mask[0, 1, 0], torch.tensor([0.0, -1.0]))


def test_cirm_loss_zero_at_ideal_mask_and_scaled() -> None:
    S, Y = _torch_spec(_speechlike()), _torch_spec(_speechlike() + _noise())
    ideal = L.ideal_cirm(S, Y)
    assert L.cirm_loss(ideal, ideal).item() == 0.0
    off = ideal + 0.1
    torch.testing.assert_close(L.cirm_loss(off, ideal, scale=642.0), 642.0 * L.cirm_loss(off, ideal))


def test_stacked_layout_round_trip() -> None:
    x = torch.randn(2, 642, 5)
    y = L.from_stacked(x)
    assert y.shape == (2, 321, 5, 2)
    torch.testing.assert_close(y[..., 1], x[:, 321:])
    torch.testing.assert_close(L.to_stacked(y), x)


# ------------------------------------------------------------------------- composite losses


def _frcrn_like_batch():
    clean, noisy = _speechlike(samples=9600), _speechlike(samples=9600) + _noise(samples=9600)
    S, Y = _frcrn_spec(clean), _frcrn_spec(noisy)
    return clean, noisy, S, Y


def test_frcrn_mix_loss_optimum_is_the_ideal_mask_and_clean_wave() -> None:
    clean, _noisy, S, Y = _frcrn_like_batch()
    ideal = L.ideal_cirm(S, Y)
    best = L.frcrn_mix_loss(clean, ideal, clean, S, Y)
    assert best["amp_loss"].item() == 0.0 and best["phase_loss"].item() == 0.0
    worse = L.frcrn_mix_loss(clean + _noise(samples=9600), ideal + 0.05, clean, S, Y)
    assert worse["loss"] > best["loss"] + 10.0
    # mask MSE is scaled by 2F: with F bins and an offset of 0.05 in both parts, each term is 2F * 0.0025
    two_f = 2 * S.shape[1]
    torch.testing.assert_close(worse["amp_loss"], torch.tensor(two_f * 0.0025), rtol=1e-4, atol=0)


def test_gtcrn_hybrid_and_composite_optimum() -> None:
    clean = _speechlike()
    noisy = clean + _noise()
    S, Y = _torch_spec(clean), _torch_spec(noisy)
    ideal = L.ideal_cirm(S, Y)
    hybrid = L.gtcrn_hybrid_loss(S, S, clean, clean)
    assert hybrid["ri_loss"].item() == 0.0 and hybrid["mag_loss"].item() == 0.0
    assert L.gtcrn_hybrid_loss(Y, S, noisy, clean)["loss"] > hybrid["loss"]
    comp = L.composite_loss(S, S, clean, clean, estimate_mask=ideal, noisy_spec=Y)
    assert comp["log_mag"].item() == 0.0 and comp["cirm"].item() == 0.0
    assert (
        L.composite_loss(Y, S, noisy, clean, estimate_mask=ideal * 0.5, noisy_spec=Y)["loss"] > comp["loss"]
    )
    with pytest.raises(ValueError, match="estimate_mask"):
        L.composite_loss(S, S, clean, clean)
    assert "cirm" not in L.composite_loss(S, S, clean, clean, beta=0.0)


def test_gradients_flow_through_every_loss() -> None:
    clean, noisy, S, Y = _frcrn_like_batch()
    mask = torch.zeros_like(S, requires_grad=True)
    wav = noisy.clone().requires_grad_(True)
    spec = Y.clone().requires_grad_(True)
    losses = {
        "si_snr": L.si_snr_loss(estimate=wav, reference=clean),
        "log_mag": L.log_magnitude_loss(spec, S),
        "cirm": L.cirm_loss(mask, L.ideal_cirm(S, Y)),
        "mix": L.frcrn_mix_loss(wav, mask, clean, S, Y)["loss"],
        "hybrid": L.gtcrn_hybrid_loss(spec, S, wav, clean)["loss"],
        "composite": L.composite_loss(spec, S, wav, clean, estimate_mask=mask, noisy_spec=Y)["loss"],
    }
    for name, value in losses.items():
        for leaf in (mask, wav, spec):
            leaf.grad = None
        value.backward()
        grads = [leaf.grad for leaf in (mask, wav, spec) if leaf.grad is not None]
        assert grads, name
        assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads), name


def test_loss_stays_float32_under_half_inputs() -> None:
    clean = _speechlike()
    est = (clean + _noise()).half()
    assert L.si_snr(estimate=est, reference=clean).dtype == torch.float32
