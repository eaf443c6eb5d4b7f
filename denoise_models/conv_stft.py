"""Convolutional STFT and inverse STFT, as FRCRN (ModelScope ``speech_frcrn_ans_cirm_16k``) uses them.

The forward transform is a strided 1-D convolution whose kernels are the real and imaginary rows of
an ``fft_len``-point real DFT, each multiplied by a square-root window. The inverse transform is a
transposed convolution with the pseudo-inverse of that basis (again times the window), divided by
the overlap-added squared window. There is no centring and no padding:

* ``frames = (T - win_len) // win_inc + 1`` for ``T >= win_len`` samples;
* the inverse returns ``(frames - 1) * win_inc + win_len`` samples.

Both kernels are stored as (frozen) parameters and the window/enframing matrices as buffers under
the same names as the released checkpoint (``stft.weight``, ``istft.weight``, ``istft.window``,
``istft.enframe``), so the released file loads without renaming. The kernels are computed here
without SciPy; :func:`stft_kernels` reproduces ``scipy.signal.get_window(win_type, win_len,
fftbins=True) ** 0.5`` for the Hann, Hamming and rectangular windows.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvSTFT", "ConviSTFT", "periodic_window", "stft_kernels"]


def periodic_window(win_type: str | None, win_len: int) -> np.ndarray:
    """A periodic (DFT-even) window of ``win_len`` samples, float64.

    ``win_type``: ``"hann"``/``"hanning"``, ``"hamming"``, or ``None``/``"None"``/``"boxcar"`` (all ones).
    """
    if win_type is None or win_type in ("None", "none", "boxcar", "rect", "ones"):
        return np.ones(win_len, dtype=np.float64)
    n = np.arange(win_len, dtype=np.float64)
    phase = 2.0 * np.pi * n / win_len
    if win_type in ("hann", "hanning"):
        return 0.5 - 0.5 * np.cos(phase)
    if win_type == "hamming":
        return 0.54 - 0.46 * np.cos(phase)
    raise ValueError(f"unsupported window type {win_type!r}: use 'hann', 'hamming' or None")


def stft_kernels(
    win_len: int, win_inc: int, fft_len: int, win_type: str | None, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """The conv-STFT kernel ``[fft_len + 2, 1, win_len]`` and the window ``[1, win_len, 1]`` (float32).

    Rows ``0 .. fft_len//2`` are the real parts of the rfft basis, the next ``fft_len//2 + 1`` rows
    the imaginary parts. With ``inverse=True`` the kernel is the transposed pseudo-inverse of that
    basis. Either is multiplied by ``sqrt(window)``. Computed in float64, then rounded once.
    """
    del win_inc  # the kernels do not depend on the hop; kept for a uniform signature
    window = np.sqrt(periodic_window(win_type, win_len))
    basis = np.fft.rfft(np.eye(fft_len))[:win_len]  # [win_len, fft_len//2 + 1]
    kernel = np.concatenate([basis.real, basis.imag], axis=1).T  # [fft_len + 2, win_len]
    if inverse:
        kernel = np.linalg.pinv(kernel).T
    kernel = kernel * window
    return (
        torch.from_numpy(kernel[:, None, :].astype(np.float32)),
        torch.from_numpy(window[None, :, None].astype(np.float32)),
    )


class ConvSTFT(nn.Module):
    """``[B, T]`` (or ``[B, 1, T]``) waveform -> ``[B, fft_len + 2, frames]`` (real bins, then imaginary)."""

    def __init__(
        self, win_len: int = 640, win_inc: int = 320, fft_len: int = 640, win_type: str | None = "hann"
    ):
        super().__init__()
        kernel, _ = stft_kernels(win_len, win_inc, fft_len, win_type)
        self.weight = nn.Parameter(kernel, requires_grad=False)
        self.win_len = win_len
        self.stride = win_inc
        self.fft_len = fft_len

    def forward(self, wav: Tensor) -> Tensor:
        if wav.dim() == 2:
            wav = wav.unsqueeze(1)
        return F.conv1d(wav, self.weight, stride=self.stride)


class ConviSTFT(nn.Module):
    """``[B, fft_len + 2, frames]`` complex spectrum -> ``[B, (frames - 1) * win_inc + win_len]`` waveform."""

    def __init__(
        self, win_len: int = 640, win_inc: int = 320, fft_len: int = 640, win_type: str | None = "hann"
    ):
        super().__init__()
        kernel, window = stft_kernels(win_len, win_inc, fft_len, win_type, inverse=True)
        self.weight = nn.Parameter(kernel, requires_grad=False)
        self.register_buffer("window", window)  # [1, win_len, 1]
        self.register_buffer("enframe", torch.eye(win_len)[:, None, :])  # [win_len, 1, win_len]
        self.win_len = win_len
        self.stride = win_inc
        self.fft_len = fft_len

    def forward(self, spec: Tensor) -> Tensor:
        wav = F.conv_transpose1d(spec, self.weight, stride=self.stride)
        # overlap-added squared window, the same for every item: [1, 1, T']
        wsq = self.window.expand(1, self.win_len, spec.shape[-1]) ** 2
        coff = F.conv_transpose1d(wsq, self.enframe, stride=self.stride)
        return (wav / (coff + 1e-8)).squeeze(1)
