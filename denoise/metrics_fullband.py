"""Full-band metrics for inputs above 16 kHz: what the 16 kHz metrics (PESQ-WB, STOI, DNSMOS) cannot see.

Definitions are exactly those of ``shared/eval/fullband48k_dev/README.md`` ("Metrics"), computed at the
file's own rate (44.1, 48, 96 kHz ...):

* ``fb_si_sdr``  -- SI-SDR over the whole band, on the signals as they are;
* ``lb_si_sdr``  -- SI-SDR of the 0-8 kHz band: both signals resampled to 16 kHz (soxr VHQ) first;
* ``hf_segsnr``  -- segmental SNR of the 8 kHz-Nyquist band (20 ms frames, 10 ms hop, clipped to
  [-10, 35] dB, over the frames where the clean high band is active); 0 dB = no high band at all;
* ``hf_lsd``     -- log-spectral distance over the bins >= 8 kHz (2048-point periodic Hann, hop 512,
  centred frames, floor 50 dB below the clean's mean bin power), over the clean's active frames;
* ``hf_energy_db`` -- energy of the output's 8 kHz-Nyquist band relative to the clean's (0 dB is right,
  strongly negative = muffled, positive = noise left up there).

Unlike :func:`denoise.metrics.si_snr` (which raises on silence), every quotient and logarithm here is
guarded by 1e-20 as the definitions require, so a band-deleted output scores a finite (very low) number.
All functions take 1-D float arrays [samples] of equal length, time-aligned.
"""

from __future__ import annotations

import numpy as np

from denoise.audio import resample

TINY = 1e-20  # the definitions' guard against division by zero and log of zero
CROSSOVER_HZ = 8000.0  # top of the band a 16 kHz network produces
LOW_BAND_RATE = 16000
LSD_N_FFT = 2048
LSD_HOP = 512
LSD_FLOOR = 1e-5  # relative to the clean's mean bin power: 50 dB below it
ACTIVE_RATIO = 1e-4  # a frame is active within 40 dB of the loudest one
SEGSNR_FRAME_S = 0.020
SEGSNR_HOP_S = 0.010
SEGSNR_RANGE_DB = (-10.0, 35.0)

FULLBAND_METRICS: tuple[str, ...] = ("fb_si_sdr", "lb_si_sdr", "hf_segsnr", "hf_lsd", "hf_energy_db")


def _pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    est = np.asarray(estimate, dtype=np.float64).reshape(-1)
    if ref.shape != est.shape:
        raise ValueError(f"reference and estimate differ in length ({ref.size} vs {est.size} samples)")
    if ref.size == 0:
        raise ValueError("empty signal")
    return ref, est


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR (dB) of ``estimate`` against ``reference``, both mean-removed, guarded."""
    ref, est = _pair(reference, estimate)
    ref = ref - ref.mean()
    est = est - est.mean()
    alpha = np.dot(est, ref) / (np.dot(ref, ref) + TINY)
    target = alpha * ref
    error = est - target
    return float(10.0 * np.log10((np.dot(target, target) + TINY) / (np.dot(error, error) + TINY)))


def low_band_si_sdr(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """SI-SDR of the 0-8 kHz band: both signals resampled to 16 kHz (soxr VHQ) first."""
    ref, est = _pair(reference, estimate)
    return si_sdr(resample(ref, sample_rate, LOW_BAND_RATE), resample(est, sample_rate, LOW_BAND_RATE))


def high_band(x: np.ndarray, sample_rate: int, cutoff_hz: float = CROSSOVER_HZ) -> np.ndarray:
    """The band from ``cutoff_hz`` to Nyquist of 1-D ``x``: brick-wall FFT filter over the whole signal."""
    x = np.asarray(x, dtype=np.float64)
    spectrum = np.fft.rfft(x)
    spectrum[np.fft.rfftfreq(x.size, 1.0 / sample_rate) < cutoff_hz] = 0.0
    return np.fft.irfft(spectrum, n=x.size)


def _frames(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Frames [n, length] of ``x`` at ``hop``; a trailing partial frame is dropped."""
    if x.size < length:
        return np.zeros((0, length))
    return np.lib.stride_tricks.sliding_window_view(x, length)[::hop]


def high_band_segsnr(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Segmental SNR (dB) of the 8 kHz-Nyquist band over the frames where the clean high band is active."""
    ref, est = _pair(reference, estimate)
    ref_h, est_h = high_band(ref, sample_rate), high_band(est, sample_rate)
    length, hop = round(SEGSNR_FRAME_S * sample_rate), round(SEGSNR_HOP_S * sample_rate)
    ref_energy = np.sum(_frames(ref_h, length, hop) ** 2, axis=1)
    err_energy = np.sum(_frames(ref_h - est_h, length, hop) ** 2, axis=1)
    if ref_energy.size == 0:
        raise ValueError(f"too short for the segmental SNR: needs {length} samples")
    snr = np.clip(10.0 * np.log10((ref_energy + TINY) / (err_energy + TINY)), *SEGSNR_RANGE_DB)
    active = ref_energy > ACTIVE_RATIO * ref_energy.max()
    return float(snr[active].mean()) if active.any() else float("nan")


def _power_spectrogram(x: np.ndarray) -> np.ndarray:
    """|STFT|^2 [frames, bins]: periodic Hann 2048, hop 512, frames centred on multiples of the hop."""
    half = LSD_N_FFT // 2
    n_frames = 1 + -(-x.size // LSD_HOP)  # centres 0, hop, ... up to the first one at or past the end
    padded = np.zeros((n_frames - 1) * LSD_HOP + LSD_N_FFT)
    padded[half : half + x.size] = x
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(LSD_N_FFT) / LSD_N_FFT)
    frames = _frames(padded, LSD_N_FFT, LSD_HOP)[:n_frames] * window
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2


def high_band_lsd(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Log-spectral distance (dB) over the bins >= 8 kHz, averaged over the clean's active frames."""
    ref, est = _pair(reference, estimate)
    p_ref, p_est = _power_spectrogram(ref), _power_spectrogram(est)
    floor = LSD_FLOOR * p_ref.mean()
    high = np.fft.rfftfreq(LSD_N_FFT, 1.0 / sample_rate) >= CROSSOVER_HZ
    diff = 10.0 * np.log10(p_ref[:, high] + floor + TINY) - 10.0 * np.log10(p_est[:, high] + floor + TINY)
    per_frame = np.sqrt(np.mean(diff**2, axis=1))
    energy = p_ref[:, high].sum(axis=1)
    active = energy > ACTIVE_RATIO * energy.max()
    return float(per_frame[active].mean()) if active.any() else float("nan")


def high_band_energy_db(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Energy of the estimate's 8 kHz-Nyquist band relative to the reference's (dB)."""
    ref, est = _pair(reference, estimate)
    ref_h, est_h = high_band(ref, sample_rate), high_band(est, sample_rate)
    return float(10.0 * np.log10((np.dot(est_h, est_h) + TINY) / (np.dot(ref_h, ref_h) + TINY)))


def fullband_scores(estimate: np.ndarray, reference: np.ndarray, sample_rate: int) -> dict[str, float]:
    """All :data:`FULLBAND_METRICS` of a 1-D ``estimate`` against its clean ``reference`` at ``sample_rate``.

    Meaningful only above 16 kHz (below, there is no band above 8 kHz): raises ``ValueError`` there.
    """
    if sample_rate <= LOW_BAND_RATE:
        raise ValueError(f"full-band metrics need a rate above {LOW_BAND_RATE} Hz, got {sample_rate} Hz")
    return {
        "fb_si_sdr": si_sdr(reference, estimate),
        "lb_si_sdr": low_band_si_sdr(reference, estimate, sample_rate),
        "hf_segsnr": high_band_segsnr(reference, estimate, sample_rate),
        "hf_lsd": high_band_lsd(reference, estimate, sample_rate),
        "hf_energy_db": high_band_energy_db(reference, estimate, sample_rate),
    }


def fullband_columns() -> list[str]:
    """CSV columns of :func:`fullband_pair_scores`, in the evaluator's order: noisy, enhanced, change."""
    return [f"{which}_{m}" for which in ("noisy", "enhanced", "delta") for m in FULLBAND_METRICS]


def fullband_pair_scores(
    noisy: np.ndarray, enhanced: np.ndarray, clean: np.ndarray, sample_rate: int
) -> dict[str, float]:
    """:func:`fullband_scores` of the noisy input and of the output against ``clean`` (1-D, all at
    ``sample_rate``, trimmed to their common length), and their change, keyed by :func:`fullband_columns`."""
    n = min(len(noisy), len(enhanced), len(clean))
    scores: dict[str, float] = {}
    for which, signal in (("noisy", noisy), ("enhanced", enhanced)):
        values = fullband_scores(np.asarray(signal)[:n], np.asarray(clean)[:n], sample_rate)
        scores.update({f"{which}_{m}": v for m, v in values.items()})
    scores.update({f"delta_{m}": scores[f"enhanced_{m}"] - scores[f"noisy_{m}"] for m in FULLBAND_METRICS})
    return scores
