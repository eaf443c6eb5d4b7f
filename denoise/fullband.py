"""The full-band stage: 44.1/48/96 kHz inputs keep a denoised 8 kHz-Nyquist band instead of losing it.

Both networks run at 16 kHz, so the engine's resampling round trip deletes everything above 8 kHz. This
stage puts that band back, denoised, without touching what the network produced::

    out = y + G ⊙ (x − x_low)

``x`` is the input, ``x_low`` the input after the engine's 16 kHz down-and-up round trip and ``y`` the
network's output brought back up, all at the input rate and aligned. ``x − x_low`` is exactly the part of
the input the resampler removed (its complement, crossover included), so with ``G = 1`` and ``y = x_low``
the output is the input up to float rounding: the crossover cannot dip, bump or shift phase, and below
~7.4 kHz (where the resampler passes everything) the output is the network's.

``G`` is a gain per frame of a short-time Fourier transform at the input rate (square-root periodic Hann
analysis and synthesis windows, 20 ms frames, 10 ms hop: perfect reconstruction), constant over 1/5-octave
bands above 8 kHz. It is driven by two things:

* the network's own decision: in the 4-7.4 kHz guide band (just below the crossover, where the resampler
  is still flat) the power of ``y`` against ``x_low`` says how much of each frame the network kept;
* the high band's own statistics (method ``"tracked"``): a noise floor per band of ``x − x_low``
  (minimum statistics) and a decision-directed, power-matching gain against it.

``"tracked"`` (the default) takes the geometric mean of the two, so noise that only the high band has is
removed even where the network keeps its top band (voiced speech), and sibilants above a low-band noise
survive the network's suppression of that noise. Measured comparison: docs/quality.md, "Full band".

Each channel is processed independently and causally; the only delay is the STFT's, reported as
:attr:`FullBandStage.latency` (``n_fft − 1`` samples, so any block size works). The stage uses nothing
but the three signals, so it serves both models and every backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from denoise_models.spec import SPECS

# The band a network produces ends at its Nyquist frequency (8 kHz for both); the stage works above it.
NETWORK_RATE = max(spec.sample_rate for spec in SPECS.values())
CROSSOVER_HZ = NETWORK_RATE / 2
# The network's top band, where its decisions are read: 4-7.4 kHz, below the resampler's transition
# (soxr VHQ is flat to -0.01 dB up to 92.5 % of the Nyquist frequency).
GUIDE_BAND_HZ = (0.5 * CROSSOVER_HZ, 0.925 * CROSSOVER_HZ)
FRAME_SECONDS = 0.020
_EPS = 1e-12
SILENCE_POWER = 1e-10  # high-band power of a frame (sum over bins) below which it is digital silence


@dataclass(frozen=True)
class GainRule:
    """How a method turns the three signals into the high-band gain (time constants per 10 ms hop)."""

    use_network: bool = True  # follow the network's suppression in the guide band
    track_noise: bool = False  # also a gain from the high band's own noise floor (minimum statistics)
    floor_db: float = -30.0  # the lowest gain: bounds the suppression, keeps a natural noise floor
    network_smoothing: float = 0.5  # recursive smoothing of the guide-band powers (no pumping)
    power_smoothing: float = 0.7  # recursive smoothing of the band powers the noise floor is read from
    minimum_frames: int = 150  # the noise floor is the minimum over this many hops (1.5 s) ...
    minimum_bias: float = 2.0  # ... times this (the mean of a noise band's power over its minimum)
    decision_directed: float = 0.7  # weight of the previous frame's estimate in the a-priori SNR
    network_weight: float = 0.5  # the gain is tracked^(1 - w) * network^w (a weighted geometric mean)
    # The tracker's own gain stops here: below it, a gain that follows every frame's noise power makes the
    # residual noise flicker ("musical noise", ±5 dB frame to frame); the network's verdict goes lower.
    tracker_floor_db: float = -25.0
    bands_per_octave: float = 5.0  # width of the bands the noise floor and its gain are computed on


METHODS: dict[str, GainRule] = {
    # One gain per frame: the network's suppression in its top band, extrapolated unchanged upward.
    "extrapolated": GainRule(floor_db=-25.0),
    # Per band: the geometric mean of that and a power-matching gain against the high band's own
    # noise floor (minimum statistics), so noise only the high band has is removed and speech only the
    # high band has (sibilants over a low-band noise) is kept.
    "tracked": GainRule(track_noise=True),
    # The noisy high band added back as it is (a reference point for measurements, not for use).
    "passthrough": GainRule(use_network=False),
}
DEFAULT_METHOD = "tracked"


def _frame_length(sample_rate: int) -> int:
    """An even number of samples close to :data:`FRAME_SECONDS` (the hop is half of it)."""
    return 2 * round(FRAME_SECONDS * sample_rate / 2)


class FullBandStage:
    """Streaming full-band stage for ``channels`` channels at ``sample_rate`` Hz (must exceed 16 kHz).

    :meth:`process` takes aligned float32 blocks ``[channels, n]`` (any ``n``, including 0) of the input,
    its 16 kHz round trip and the network's output, and returns ``[channels, n]`` delayed by
    :attr:`latency` samples (the first ``latency`` returned samples are zeros); :meth:`flush` returns the
    last ``latency`` samples once the input has ended.
    """

    def __init__(self, sample_rate: int, channels: int, method: str = DEFAULT_METHOD) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown full-band method {method!r}; choose one of {', '.join(METHODS)}")
        if sample_rate <= NETWORK_RATE:
            raise ValueError(f"the full-band stage needs a rate above {NETWORK_RATE} Hz, got {sample_rate}")
        if channels < 1:
            raise ValueError("channels must be at least 1")
        self.sample_rate, self.channels, self.method = sample_rate, channels, method
        self.rule = METHODS[method]
        self.n_fft = _frame_length(sample_rate)
        self.hop = self.n_fft // 2
        # A sample is final once the frame starting at it has been synthesised: n_fft - 1 samples later
        # in the worst case of block boundaries.
        self.latency = self.n_fft - 1
        periodic_hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(self.n_fft) / self.n_fft)
        self._window = np.sqrt(periodic_hann)  # analysis and synthesis: their product sums to 1 at 50 %
        freqs = np.fft.rfftfreq(self.n_fft, 1.0 / sample_rate)
        self._guide = (freqs >= GUIDE_BAND_HZ[0]) & (freqs < GUIDE_BAND_HZ[1])
        self._floor = 10.0 ** (self.rule.floor_db / 20.0)
        self._bands = _band_matrix(freqs, self.rule.bands_per_octave)  # [bins, bands]
        bands = self._bands.shape[1]
        # Streaming state: the previous hop of each signal (frames overlap by half), unconsumed input,
        # the synthesis tail, output computed but not yet returned, and the gain rule's memory.
        self._previous = np.zeros((3, channels, self.hop))
        self._pending = np.zeros((3, channels, 0))
        self._tail = np.zeros((channels, self.hop))
        self._ready = np.zeros((channels, self.latency))
        self._started = False  # the first frame finishes the hop before the signal starts: dropped
        self._guide_power = np.zeros((2, channels))  # smoothed x_low and y power in the guide band
        self._smoothed = np.zeros((channels, bands))  # smoothed high-band power per band
        self._history = np.full((self.rule.minimum_frames, channels, bands), np.inf)  # its recent values
        self._frames = 0
        self._learnt = np.zeros((channels, 1), dtype=int)  # frames the noise floor has learnt from
        self._speech_power = np.zeros((channels, bands))  # |G D|^2 of the previous frame

    # ------------------------------------------------------------------------------------ public API

    def process(self, x: np.ndarray, x_low: np.ndarray, y: np.ndarray) -> np.ndarray:
        """One block of aligned ``[channels, n]`` signals in; ``[channels, n]`` float32 out, delayed."""
        blocks = [np.asarray(b, dtype=np.float64) for b in (x, x_low, y)]
        n = blocks[0].shape[-1]
        if any(b.shape != (self.channels, n) for b in blocks):
            shapes = ", ".join(str(b.shape) for b in blocks)
            raise ValueError(f"x, x_low and y must all be [{self.channels}, n]; got {shapes}")
        incoming = np.stack([blocks[0] - blocks[1], blocks[1], blocks[2]])  # high band, x_low, y
        self._pending = np.concatenate([self._pending, incoming], axis=-1)
        done = []
        while self._pending.shape[-1] >= self.hop:
            finished = self._frame(self._pending[..., : self.hop])
            if self._started:
                done.append(finished)
            self._started = True
            self._pending = self._pending[..., self.hop :]
        self._ready = np.concatenate([self._ready, *done], axis=-1)
        out, self._ready = self._ready[:, :n], self._ready[:, n:]
        return out.astype(np.float32)

    def flush(self) -> np.ndarray:
        """The last :attr:`latency` output samples ``[channels, latency]`` (the input is over)."""
        silence = np.zeros((self.channels, self.latency), dtype=np.float32)
        return self.process(silence, silence, silence)

    # ------------------------------------------------------------------------------------ one frame

    def _frame(self, new: np.ndarray) -> np.ndarray:
        """Consume one hop ``[3, channels, hop]``; return the finished previous hop ``[channels, hop]``."""
        frames = np.concatenate([self._previous, new], axis=-1) * self._window
        high, low, out = np.fft.rfft(frames, axis=-1)
        gain = self._gain(np.abs(high) ** 2, np.abs(low) ** 2, np.abs(out) ** 2)
        synthesis = np.fft.irfft(gain * high, n=self.n_fft, axis=-1) * self._window
        finished = self._previous[2] + self._tail + synthesis[:, : self.hop]
        self._tail = synthesis[:, self.hop :]
        self._previous = new
        return finished

    def _gain(self, high: np.ndarray, low: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Gain ``[channels, bins]`` of this frame from the power spectra of ``x − x_low``, ``x_low``, ``y``."""
        rule = self.rule
        if not rule.use_network:
            return np.ones_like(high)
        a = rule.network_smoothing
        powers = np.stack([low[:, self._guide].sum(-1), out[:, self._guide].sum(-1)])
        self._guide_power = a * self._guide_power + (1.0 - a) * powers
        p_low, p_out = self._guide_power
        # The network's verdict: the share of the guide band it kept (as an amplitude gain).
        kept = np.sqrt(np.clip(p_out / (p_low + _EPS), 0.0, 1.0))[:, None]
        if not rule.track_noise:
            return np.broadcast_to(np.maximum(kept, self._floor), high.shape)
        band_power = high @ self._bands
        # The noise floor learns from real frames only: not the first (half of it is the zero pre-pad)
        # and not digital silence, whose zero minimum would switch suppression off for a whole window.
        learn = (self._frames > 0) & (band_power.sum(-1, keepdims=True) > SILENCE_POWER)
        b = np.where(self._learnt > 0, rule.power_smoothing, 0.0)
        self._smoothed = np.where(learn, b * self._smoothed + (1.0 - b) * band_power, self._smoothed)
        slot = self._history[self._frames % rule.minimum_frames]
        slot[...] = np.where(learn, self._smoothed, slot)
        self._learnt += learn
        self._frames += 1
        noise = np.maximum(rule.minimum_bias * self._history.min(axis=0), _EPS)
        # Decision-directed a-priori SNR; the square root of the Wiener gain keeps the estimated speech
        # power (not its MMSE amplitude), which is what a listener hears as the right brightness.
        d = rule.decision_directed
        prior = d * self._speech_power / noise + (1.0 - d) * np.maximum(band_power / noise - 1.0, 0.0)
        tracked = np.sqrt(prior / (1.0 + prior))
        self._speech_power = tracked**2 * band_power
        tracked = np.maximum(tracked, 10.0 ** (rule.tracker_floor_db / 20.0))
        w = rule.network_weight
        gain = np.maximum(tracked ** (1.0 - w) * kept**w, self._floor)
        return gain @ self._bands.T


def _band_matrix(freqs: np.ndarray, bands_per_octave: float) -> np.ndarray:
    """One-hot ``[bins, bands]``: bands ``bands_per_octave`` wide from the crossover up (below it: the first)."""
    octaves = np.log2(np.maximum(freqs, 1.0) / CROSSOVER_HZ)
    index = np.floor(np.maximum(octaves, 0.0) * bands_per_octave).astype(int)
    return np.eye(index.max() + 1)[index]


def apply_full_band(
    x: np.ndarray, x_low: np.ndarray, y: np.ndarray, sample_rate: int, method: str = DEFAULT_METHOD
) -> np.ndarray:
    """Whole-array form of :class:`FullBandStage`: ``[channels, n]`` (or ``[n]``) in, same shape out, no delay."""
    mono = np.ndim(x) == 1
    blocks = [np.atleast_2d(np.asarray(b, dtype=np.float32)) for b in (x, x_low, y)]
    stage = FullBandStage(sample_rate, blocks[0].shape[0], method)
    out = np.concatenate([stage.process(*blocks), stage.flush()], axis=-1)[:, stage.latency :]
    return out[0] if mono else out
