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
    n_fft: int | None = None,
    hop: int | None = None,
    log_frequency: bool = False,
    columns: bool = False,
    panel_size: tuple[float, float] = (10.0, 2.3),
) -> Figure:
    """One spectrogram panel per 1-D signal (e.g. noisy / enhanced / clean), one shared colour scale.

    Args:
        signals: panel title -> samples ``[T]``, all at ``sample_rate`` Hz (any rate: the frequency axis
            runs to ``sample_rate / 2``, so 48 kHz files show their full band).
        n_fft, hop: STFT frame and shift in samples (default :func:`frame_sizes`: 32 ms and 8 ms).
        log_frequency: logarithmic frequency axis from 50 Hz (low-frequency detail).
        columns: panels side by side instead of stacked.
        panel_size: width and height of one panel, inches.
    """
    if not signals:
        raise ValueError("no signals to draw")
    default_fft, default_hop = frame_sizes(sample_rate)
    n_fft, hop = n_fft or default_fft, hop or default_hop
    specs = {name: log_spectrogram(x, n_fft, hop) for name, x in signals.items()}
    top = max(float(s.max()) for s in specs.values())
    rows, cols = (1, len(specs)) if columns else (len(specs), 1)
    fig = figure(figsize=(panel_size[0] * cols, panel_size[1] * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    khz = np.arange(n_fft // 2 + 1) * sample_rate / n_fft / 1000.0
    image = None
    for ax, (name, spec) in zip(axes, specs.items(), strict=True):
        seconds = np.arange(spec.shape[1]) * hop / sample_rate
        image = ax.pcolormesh(
            seconds, khz, spec, shading="nearest", cmap="magma", rasterized=True,
            vmin=top - DYNAMIC_RANGE_DB, vmax=top,
        )  # fmt: skip
        ax.set_title(name, fontsize=9, loc="left")
    if log_frequency:
        axes[0].set_yscale("log")
        axes[0].set_ylim(0.05, sample_rate / 2000)
    for ax in axes[:: cols if not columns else len(axes)]:
        ax.set_ylabel("frequency (kHz)")
    for ax in axes[-cols:]:
        ax.set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.colorbar(image, ax=axes.tolist(), label="power (dB)", shrink=0.8)
    return fig


def save_png(fig: Figure, path: Path, dpi: int = 90) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically: a reader never sees half an image)."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path
