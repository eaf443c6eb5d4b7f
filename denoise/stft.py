"""The one numpy STFT: the framing of ``torch.stft(center=True, pad_mode="reflect")``.

Used where torch is not: the ONNX backend computes the spectrum that ``export_io="spec"`` graphs (GTCRN) take,
and the spectrogram figures (:mod:`denoise.plots`) draw with it. Frame sizes come from the caller (the
architecture's :class:`denoise_models.spec.ArchSpec`), never from defaults here.
"""

from __future__ import annotations

from collections.abc import Callable

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


class SpecStream:
    """:func:`stft` -> ``run`` -> :func:`istft` over a signal that arrives in blocks, each sample released once final.

    ``run(spec [B, bins, n, 2]) -> [B, bins, n, 2]`` is called on every batch of newly complete frames (``n`` >= 1;
    all frames that one block completes go in one call) and must carry whatever state it has from call to
    call. Framing as :func:`stft` (centred, reflect-padded at both ends): concatenating :meth:`push` results
    and :meth:`finish` gives ``istft(run(stft(x)))`` of the whole signal, ``hop * (samples // hop)`` samples.
    Output sample ``t`` is final once both frames covering it are complete: at most ``n_fft - 1`` samples late.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], batch: int, n_fft: int, hop: int) -> None:
        if n_fft != 2 * hop:
            raise ValueError("SpecStream overlap-adds frames at 50 % overlap: n_fft must be 2 * hop")
        self.run, self.n_fft, self.hop = run, n_fft, hop
        self.window = sqrt_hann(n_fft).astype(np.float64)
        w2 = self.window**2
        self._envelope = w2[:hop] + w2[hop:]  # the squared windows that overlap on one hop (1 up to rounding)
        self._pending = np.zeros((batch, 0), np.float32)  # input not yet framed (padded coordinates)
        self._tail = np.zeros((batch, 0), np.float32)  # the last hop + 1 input samples (end reflection)
        self._overlap = np.zeros((batch, n_fft - hop))  # second half of the last frame, not yet added
        self._seen = 0  # input samples pushed
        self._started = False  # the start's reflection is in place
        self._skip = hop  # output to drop: the first hop lies in the centring pad that istft removes

    def push(self, block: np.ndarray) -> np.ndarray:
        """Feed the next samples float32 ``[B, n]`` (n >= 0) -> the output samples now final ``[B, m]``."""
        half = self.n_fft // 2
        self._seen += block.shape[1]
        self._tail = np.concatenate([self._tail, block], axis=1)[:, -(self.hop + 1) :]
        self._pending = np.concatenate([self._pending, block], axis=1)
        if not self._started:
            if self._seen <= half:  # the start's reflection needs samples 1 .. n_fft // 2
                return self._pending[:, :0]
            self._pending = np.concatenate([self._pending[:, half:0:-1], self._pending], axis=1)
            self._started = True
        return self._drain()

    def finish(self) -> np.ndarray:
        """End of input: reflect-pad the end as :func:`stft` does -> the remaining output."""
        if not self._started:
            raise ValueError(f"the STFT needs more than {self.n_fft // 2} samples, got {self._seen}")
        end = self._tail[:, -2 : -(self.n_fft // 2) - 2 : -1]
        self._pending = np.concatenate([self._pending, end], axis=1)
        return self._drain()

    def _drain(self) -> np.ndarray:
        count = (self._pending.shape[1] - self.n_fft) // self.hop + 1
        if count <= 0:
            return self._pending[:, :0]
        # Frames at 50 % overlap are pairs of consecutive hops (cheaper than a strided view for a few frames).
        hops = self._pending[:, : (count + 1) * self.hop].reshape(self._pending.shape[0], count + 1, self.hop)
        frames = np.concatenate([hops[:, :-1], hops[:, 1:]], axis=2)  # [B, count, n_fft]
        spec = np.fft.rfft(frames * self.window, axis=-1)  # [B, count, bins]
        spec = np.stack([spec.real, spec.imag], axis=-1).astype(np.float32).transpose(0, 2, 1, 3)
        self._pending = self._pending[:, count * self.hop :]
        enhanced = self.run(np.ascontiguousarray(spec))
        z = enhanced[..., 0].astype(np.float64) + 1j * enhanced[..., 1]  # [B, bins, count]
        y = np.fft.irfft(z.transpose(0, 2, 1), n=self.n_fft, axis=-1) * self.window  # [B, count, n_fft]
        # Overlap-add: each hop is this frame's first half plus the previous frame's second half.
        previous = np.concatenate([self._overlap[:, None], y[:, :-1, self.hop :]], axis=1)
        out = ((y[:, :, : self.hop] + previous) / self._envelope).reshape(y.shape[0], -1)
        self._overlap = y[:, -1, self.hop :]
        out, self._skip = out[:, self._skip :], 0
        return out.astype(np.float32)
