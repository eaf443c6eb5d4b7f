"""The one numpy STFT: the framing of ``torch.stft(center=True, pad_mode="reflect")``.

Used where torch is not: the ONNX backend computes the spectrum that ``export_io="spec"`` graphs (GTCRN) take,
and the spectrogram figures (:mod:`denoise.plots`) draw with it. Frame sizes come from the caller (the
architecture's :class:`denoise_models.spec.ArchSpec`), never from defaults here.
"""

from __future__ import annotations

import numpy as np


def sqrt_hann(n: int) -> np.ndarray:
    """Square root of the periodic Hann window of ``n`` samples (float32), as GTCRN uses."""
    return np.sqrt(hann(n)).astype(np.float32)


def hann(n: int) -> np.ndarray:
    """The periodic Hann window of ``n`` samples (float64), ``torch.hann_window``'s default."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def stft(wav: np.ndarray, n_fft: int, hop: int, window: np.ndarray | None = None) -> np.ndarray:
    """Centred, reflect-padded STFT of ``[B, samples]`` (``samples > n_fft // 2``).

    ``window`` defaults to :func:`sqrt_hann`. Returns float32 ``[B, n_fft // 2 + 1, 1 + samples // hop, 2]``
    (real, imaginary): the layout of GTCRN's input.
    """
    window = sqrt_hann(n_fft) if window is None else window
    padded = np.pad(wav, [(0, 0), (n_fft // 2, n_fft // 2)], mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]  # [B, F, n_fft]
    spec = np.fft.rfft(frames * window, axis=-1)  # [B, frames, bins]
    out = np.stack([spec.real, spec.imag], axis=-1).astype(np.float32)  # [B, frames, bins, 2]
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3))


def overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    """``[B, n_frames, n]`` (``n`` a multiple of ``hop``) -> ``[B, (n_frames - 1) * hop + n]``."""
    b, count, n = frames.shape
    parts = n // hop
    out = np.zeros((b, count + parts - 1, hop), dtype=np.float64)
    for p in range(parts):
        out[:, p : p + count] += frames[:, :, p * hop : (p + 1) * hop]
    return out.reshape(b, -1)


def istft(spec: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Inverse of :func:`stft` (``sqrt_hann`` window) like ``torch.istft(center=True)`` without ``length``.

    ``[B, bins, frames, 2]`` -> float32 ``[B, (frames - 1) * hop]`` (window-normalised overlap-add, the
    centring padding removed).
    """
    window = sqrt_hann(n_fft).astype(np.float64)
    z = spec[..., 0].astype(np.float64) + 1j * spec[..., 1]  # [B, bins, frames]
    frames = np.fft.irfft(z.transpose(0, 2, 1), n=n_fft, axis=-1) * window  # [B, frames, n_fft]
    wav = overlap_add(frames, hop)
    envelope = overlap_add(np.broadcast_to(window**2, (1, frames.shape[1], n_fft)), hop)[0]
    half = n_fft // 2
    return (wav[:, half:-half] / envelope[half:-half]).astype(np.float32)
