"""Spectrogram figures shared by the notebooks and the evaluation report.

Figures are ``matplotlib.figure.Figure`` objects (no pyplot): no global backend switch, so a notebook that
calls this keeps its inline plots, and CI and containers draw without a display. Any sample rate works:
the frequency axis runs to the file's own Nyquist frequency (full band for 48 kHz audio).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from denoise.stft import hann, stft
from denoise_models.atomic import atomic_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DYNAMIC_RANGE_DB = 80.0  # shown below the loudest bin: enough to see residual noise floors


def figure(**kwargs: object) -> Figure:
    """A new ``matplotlib.figure.Figure`` (renders to files and notebooks; never touches pyplot)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def frame_sizes(sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop)`` of a 32 ms Hann window with 8 ms hop at ``sample_rate`` (512 / 128 at 16 kHz)."""
    n_fft = 1 << round(np.log2(0.032 * sample_rate))
    return n_fft, n_fft // 4


def log_spectrogram(x: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Power spectrogram in dB, ``[n_fft // 2 + 1, frames]``, of a 1-D signal (periodic Hann, centred)."""
    x = np.asarray(x, dtype=np.float64).reshape(1, -1)
    if x.shape[1] <= n_fft // 2:  # the centred STFT reflects n_fft // 2 samples
        x = np.pad(x, [(0, 0), (0, n_fft // 2 + 1 - x.shape[1])])
    spec = stft(x, n_fft, hop, window=hann(n_fft))[0].astype(np.float64)  # [bins, frames, 2]
    return 10.0 * np.log10(spec[..., 0] ** 2 + spec[..., 1] ** 2 + 1e-12)


def spectrogram_figure(
    signals: Mapping[str, np.ndarray],
    sample_rate: int,
    title: str = "",
    *,
    max_khz: float | None = None,
    width: float = 10.0,
) -> Figure:
    """One spectrogram panel per 1-D signal (e.g. noisy / enhanced / clean), one shared colour scale.

    All signals are at ``sample_rate`` Hz; the frequency axis runs to ``sample_rate / 2`` (or ``max_khz``).
    """
    n_fft, hop = frame_sizes(sample_rate)
    specs = {name: log_spectrogram(x, n_fft, hop) for name, x in signals.items()}
    if not specs:
        raise ValueError("no signals to draw")
    top = max(float(s.max()) for s in specs.values())
    fig = figure(figsize=(width, 2.3 * len(specs)))
    axes = fig.subplots(len(specs), 1, sharex=True, squeeze=False)
    image = None
    nyquist_khz = sample_rate / 2000
    for ax, (name, spec) in zip(axes[:, 0], specs.items(), strict=True):
        image = ax.imshow(
            spec,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=top - DYNAMIC_RANGE_DB,
            vmax=top,
            extent=(0.0, spec.shape[1] * hop / sample_rate, 0.0, nyquist_khz),
        )
        ax.set_ylim(0.0, min(max_khz or nyquist_khz, nyquist_khz))
        ax.set_ylabel("kHz")
        ax.set_title(name, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="dB", shrink=0.8)
    return fig


def save_png(fig: Figure, path: Path, dpi: int = 90) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically: a reader never sees half an image)."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path
