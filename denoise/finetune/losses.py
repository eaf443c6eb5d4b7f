"""Training losses for FRCRN and GTCRN fine-tuning (torch, differentiable).

Conventions
- Waveforms are float ``[batch, samples]`` at 16 kHz. Pairs of different length (a network's iSTFT
  may return a few samples less than its input) are trimmed to the common length.
- Spectra and masks are "real views" ``[batch, freqs, frames, 2]`` holding (real, imaginary); that
  is GTCRN's native layout. FRCRN's stacked layout ``[batch, 2 * freqs, frames]`` (all real parts,
  then all imaginary parts) converts with :func:`from_stacked` / :func:`to_stacked`.
- Every loss is computed in float32 even under autocast: SI-SNR and the log of small magnitudes lose
  too much in half precision.

What is here
- :func:`si_snr` / :func:`si_snr_loss`: scale-invariant SNR (dB) and its negative mean; keyword-only
  ``estimate=`` / ``reference=``, the signature :func:`denoise.metrics.si_snr` shares.
- :func:`log_magnitude_loss`: MSE of ``log1p(|X|)`` (the seed articles' "LogMag").
- :func:`ideal_cirm` / :func:`cirm_loss`: the ideal complex ratio mask exactly as FRCRN's trainer
  computes it, and the MSE of a predicted mask against it.
- :func:`frcrn_mix_loss`: FRCRN's own training loss (ModelScope, mode "Mix").
- :func:`gtcrn_hybrid_loss`: GTCRN's own training loss (compressed spectra + SI-SNR).
- :func:`composite_loss`: ``alpha * LogMag + beta * cIRM + gamma * (-SI-SNR)`` for either network.

Each loss function returns a dict of named scalar terms whose ``"loss"`` entry is the total to
minimise; the other entries are detached-for-logging companions (still tensors).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

EPS = 1e-8  # the epsilon FRCRN's trainer uses (SI-SNR and the cIRM denominator)

LossTerms = dict[str, Tensor]


# ----------------------------------------------------------------------------------------- layouts


def from_stacked(spec: Tensor) -> Tensor:
    """FRCRN layout ``[B, 2F, N]`` (F real rows, then F imaginary rows) -> ``[B, F, N, 2]``."""
    if spec.shape[-2] % 2:
        raise ValueError(f"stacked spectrum needs an even number of rows, got shape {tuple(spec.shape)}")
    real, imag = spec.chunk(2, dim=-2)
    return torch.stack([real, imag], dim=-1)


def to_stacked(spec: Tensor) -> Tensor:
    """``[B, F, N, 2]`` -> FRCRN layout ``[B, 2F, N]``."""
    return torch.cat([spec[..., 0], spec[..., 1]], dim=-2)


def _f32(*tensors: Tensor) -> list[Tensor]:
    return [t.float() for t in tensors]


def _trim(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    n = min(a.shape[-1], b.shape[-1])
    return a[..., :n], b[..., :n]


def magnitude(spec: Tensor, eps: float = EPS) -> Tensor:
    """``|X|`` of a real-view spectrum ``[..., 2]`` -> ``[...]``; ``eps`` keeps the gradient finite at 0."""
    return torch.sqrt(spec[..., 0] ** 2 + spec[..., 1] ** 2 + eps)


def complex_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise complex product of two real-view tensors ``[..., 2]``."""
    real = a[..., 0] * b[..., 0] - a[..., 1] * b[..., 1]
    imag = a[..., 0] * b[..., 1] + a[..., 1] * b[..., 0]
    return torch.stack([real, imag], dim=-1)


# ------------------------------------------------------------------------------------------ SI-SNR


def si_snr(*, estimate: Tensor, reference: Tensor, zero_mean: bool = True, eps: float = EPS) -> Tensor:
    """Scale-invariant SNR in dB per item: ``[B, T]`` x ``[B, T]`` -> ``[B]``.

    ``10 log10(|s_t|² / (|e|² + eps) + eps)`` with ``s_t = <ŝ, s> s / (|s|² + eps)`` and ``e = ŝ - s_t``:
    the epsilons sit where FRCRN's trainer puts them, so a perfect estimate scores a large finite value
    (about ``10 log10(|s|² / eps)``) rather than infinity. ``zero_mean`` removes each signal's mean first
    (the usual definition; FRCRN's trainer does not).
    """
    estimate, reference = _trim(*_f32(estimate, reference))
    if zero_mean:
        estimate = estimate - estimate.mean(dim=-1, keepdim=True)
        reference = reference - reference.mean(dim=-1, keepdim=True)
    dot = (estimate * reference).sum(dim=-1, keepdim=True)
    ref_energy = (reference * reference).sum(dim=-1, keepdim=True)
    target = dot / (ref_energy + eps) * reference
    noise = estimate - target
    ratio = target.pow(2).sum(dim=-1) / (noise.pow(2).sum(dim=-1) + eps)
    return 10.0 * torch.log10(ratio + eps)


def si_snr_loss(*, estimate: Tensor, reference: Tensor, zero_mean: bool = True) -> Tensor:
    """Negative mean SI-SNR (dB) of a batch ``[B, T]``: lower is better; scalar."""
    return -si_snr(estimate=estimate, reference=reference, zero_mean=zero_mean).mean()


# --------------------------------------------------------------------------------- spectral losses


def log_magnitude_loss(estimate_spec: Tensor, clean_spec: Tensor) -> Tensor:
    """MSE between ``log1p(|Ŝ|)`` and ``log1p(|S|)``; spectra ``[B, F, N, 2]``; scalar.

    log1p compresses the dynamic range so that quiet speech components still count, while staying
    finite (and zero) at zero magnitude, unlike a plain log.
    """
    estimate_spec, clean_spec = _f32(estimate_spec, clean_spec)
    return F.mse_loss(torch.log1p(magnitude(estimate_spec)), torch.log1p(magnitude(clean_spec)))


def ideal_cirm(clean_spec: Tensor, noisy_spec: Tensor, *, eps: float = EPS, clip: float = 2.0) -> Tensor:
    """The ideal complex ratio mask ``M = S · conj(Y) / (|Y|² + eps)``, clipped as FRCRN's trainer does.

    Args:
        clean_spec: clean spectrum S ``[B, F, N, 2]``.
        noisy_spec: noisy spectrum Y ``[B, F, N, 2]`` (same framing).
        clip: real or imaginary parts above ``clip`` are set to 1 and below ``-clip`` to -1 (FRCRN's
            masks are bounded to [-2, 2]; the huge ratios at near-silent noisy bins would dominate).

    Returns:
        ``[B, F, N, 2]``, no gradient (it is a training target). Where no part was clipped,
        ``complex_multiply(M, Y) == S`` up to the ``eps`` in the denominator.
    """
    with torch.no_grad():
        clean_spec, noisy_spec = _f32(clean_spec, noisy_spec)
        sr, si = clean_spec[..., 0], clean_spec[..., 1]
        yr, yi = noisy_spec[..., 0], noisy_spec[..., 1]
        power = yr**2 + yi**2 + eps
        mask = torch.stack([(sr * yr + si * yi) / power, (si * yr - sr * yi) / power], dim=-1)
        # Replacement, not clamping: this is the target FRCRN was trained against.
        mask = torch.where(mask > clip, torch.ones_like(mask), mask)
        return torch.where(mask < -clip, -torch.ones_like(mask), mask)


def cirm_loss(estimate_mask: Tensor, ideal_mask: Tensor, *, scale: float = 1.0) -> Tensor:
    """``scale * (MSE(real parts) + MSE(imaginary parts))`` of masks ``[B, F, N, 2]``; scalar."""
    estimate_mask, ideal_mask = _f32(estimate_mask, ideal_mask)
    real = F.mse_loss(estimate_mask[..., 0], ideal_mask[..., 0])
    imag = F.mse_loss(estimate_mask[..., 1], ideal_mask[..., 1])
    return scale * (real + imag)


# ----------------------------------------------------------------------------- the networks' own


def frcrn_mix_loss(
    estimate_wav: Tensor,
    estimate_mask: Tensor,
    clean_wav: Tensor,
    clean_spec: Tensor,
    noisy_spec: Tensor,
) -> LossTerms:
    """FRCRN's own training loss (ModelScope ``FRCRN.loss``, mode "Mix"), for the second-stage outputs.

    ``-SI-SNR(ŝ, s)`` (no mean removal, as ModelScope) plus the cIRM MSE with the real and imaginary
    parts each scaled by the number of stacked rows ``2F`` (642 for the released model).

    Args:
        estimate_wav: ``wav_l2`` ``[B, T']``.
        estimate_mask: ``mask_l2`` ``[B, F, N, 2]`` (use :func:`from_stacked` on FRCRN's layout).
        clean_wav: clean speech ``[B, T]``.
        clean_spec, noisy_spec: FRCRN's conv-STFT of clean and noisy, ``[B, F, N, 2]``.

    Returns:
        ``loss`` (total), ``sisnr`` (dB, higher is better), ``amp_loss`` and ``phase_loss`` (the
        scaled real-part and imaginary-part MSEs; ModelScope's names).
    """
    scale = 2.0 * estimate_mask.shape[-3]
    ideal = ideal_cirm(clean_spec, noisy_spec)
    mask = estimate_mask.float()
    amp = scale * F.mse_loss(mask[..., 0], ideal[..., 0])
    phase = scale * F.mse_loss(mask[..., 1], ideal[..., 1])
    sisnr = si_snr(estimate=estimate_wav, reference=clean_wav, zero_mean=False).mean()
    return {
        "loss": amp + phase - sisnr,
        "sisnr": sisnr.detach(),
        "amp_loss": amp.detach(),
        "phase_loss": phase.detach(),
    }


def gtcrn_hybrid_loss(
    estimate_spec: Tensor,
    clean_spec: Tensor,
    estimate_wav: Tensor,
    clean_wav: Tensor,
    *,
    weight_ri: float = 30.0,
    weight_mag: float = 70.0,
    power: float = 0.3,
) -> LossTerms:
    """GTCRN's own training loss (the official repository's ``HybridLoss``).

    ``30 * (MSE(Re Ŝc, Re Sc) + MSE(Im Ŝc, Im Sc)) + 70 * MSE(|Ŝ|^0.3, |S|^0.3) - SI-SNR / 10`` where
    ``Xc = X / |X|^0.7`` is the power-law compressed complex spectrum (magnitude ``|X|^0.3``, phase
    kept). SI-SNR enters in bels (dB / 10), as in the original.

    Args:
        estimate_spec, clean_spec: ``[B, 257, N, 2]`` (GTCRN's STFT framing).
        estimate_wav, clean_wav: the corresponding waveforms ``[B, T]``.
    """
    estimate_spec, clean_spec = _f32(estimate_spec, clean_spec)
    mag_est = magnitude(estimate_spec, 1e-12)
    mag_ref = magnitude(clean_spec, 1e-12)
    comp_est = estimate_spec / mag_est.pow(1.0 - power).unsqueeze(-1)
    comp_ref = clean_spec / mag_ref.pow(1.0 - power).unsqueeze(-1)
    ri = F.mse_loss(comp_est[..., 0], comp_ref[..., 0]) + F.mse_loss(comp_est[..., 1], comp_ref[..., 1])
    mag = F.mse_loss(mag_est.pow(power), mag_ref.pow(power))
    sisnr = si_snr(estimate=estimate_wav, reference=clean_wav, zero_mean=False).mean()
    total = weight_ri * ri + weight_mag * mag - sisnr / 10.0
    return {"loss": total, "sisnr": sisnr.detach(), "ri_loss": ri.detach(), "mag_loss": mag.detach()}


# ------------------------------------------------------------------------------------- composite


def composite_loss(
    estimate_spec: Tensor,
    clean_spec: Tensor,
    estimate_wav: Tensor,
    clean_wav: Tensor,
    *,
    estimate_mask: Tensor | None = None,
    noisy_spec: Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 0.5,
    gamma: float = 0.3,
) -> LossTerms:
    """``alpha * LogMag + beta * cIRM + gamma * (-SI-SNR)``, the seed articles' fine-tuning objective.

    Works for both networks: pass spectra in the network's own framing (FRCRN conv-STFT 321 bins,
    GTCRN 257 bins) as ``[B, F, N, 2]``. The cIRM term (plain MSE, no ×2F scaling) needs the
    predicted mask and the noisy spectrum; with ``beta == 0`` they may be omitted. SI-SNR is the usual
    zero-mean definition, in dB.

    Returns:
        ``loss`` plus ``log_mag``, ``cirm`` and ``sisnr`` (dB, higher is better).
    """
    log_mag = log_magnitude_loss(estimate_spec, clean_spec)
    sisnr = si_snr(estimate=estimate_wav, reference=clean_wav).mean()
    total = alpha * log_mag - gamma * sisnr
    terms: LossTerms = {"log_mag": log_mag.detach(), "sisnr": sisnr.detach()}
    if beta:
        if estimate_mask is None or noisy_spec is None:
            raise ValueError("composite_loss with beta != 0 needs estimate_mask and noisy_spec")
        cirm = cirm_loss(estimate_mask, ideal_cirm(clean_spec, noisy_spec))
        total = total + beta * cirm
        terms["cirm"] = cirm.detach()
    terms["loss"] = total
    return terms
