"""Speech-quality metrics at 16 kHz: PESQ-WB, STOI / eSTOI, SI-SNR(i) and DNSMOS P.835 / P.808.

All functions take 1-D float arrays (samples, any float dtype, nominally in [-1, 1]) plus their sample
rate in Hz; signals at another rate are resampled to 16 kHz first, and reference / estimate pairs are
trimmed to their common length (the shorter one wins; nothing is time-shifted).

Intrusive metrics (PESQ, STOI, SI-SNR) need a clean reference; DNSMOS does not. A metric that cannot be
computed for a given input (too short, silent) raises :class:`MetricUnavailable` with a readable reason
rather than crashing deep in a C extension, so a folder evaluation can record the reason and go on.

This module is evaluation-only numpy; the training loss lives in ``denoise.losses`` (torch).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from denoise.audio import read_audio, resample

SAMPLE_RATE = 16000  # Hz: every metric here is defined on (or computed by us at) 16 kHz wide-band audio

# PESQ P.862.2 (wide-band) scores range from about 1.04 (bad) to 4.64 (identical signals).
PESQ_WB_MAX = 4.644

_SILENCE = 1e-10  # peak amplitude below which a zero-mean signal counts as silent (-200 dBFS)


class MetricUnavailable(ValueError):
    """A metric cannot be computed for this input (too short, silent, ...); ``str(exc)`` says why."""


# ----------------------------------------------------------------------------------------- helpers


def _as_1d(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as float64 1-D; rejects other shapes and non-finite values with a clear message."""
    arr = np.asarray(x)
    if arr.ndim == 2 and 1 in arr.shape:  # [1, T] or [T, 1]: unambiguous mono
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be mono audio of shape [samples], got shape {arr.shape}")
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite samples")
    return arr.astype(np.float64, copy=False)


def to_16k(x: np.ndarray, sr: int) -> np.ndarray:
    """1-D audio ``x`` [samples] at ``sr`` Hz resampled to 16 kHz (``denoise.audio.resample``); float64 out."""
    arr = _as_1d(x, "audio")
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    if sr == SAMPLE_RATE or arr.size == 0:
        return arr
    return resample(arr, sr, SAMPLE_RATE).astype(np.float64)


def channel0(samples: np.ndarray) -> np.ndarray:
    """Channel 0 of ``[channels, samples]`` as float32 (the metrics are mono; ModelScope keeps channel 0 too)."""
    return np.asarray(samples[0] if samples.ndim == 2 else samples, dtype=np.float32)


def read_16k(path: str | Path) -> tuple[np.ndarray, int, float, list[str]]:
    """Channel 0 of an audio file at 16 kHz as float64, plus native rate (Hz), duration (s) and read notes."""
    audio = read_audio(path)
    notes = list(audio.notes)
    if audio.channels > 1:
        notes.append(f"{audio.channels} channels: channel 0 scored")
    return to_16k(channel0(audio.samples), audio.sample_rate), audio.sample_rate, audio.duration, notes


def align(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trim both 1-D signals to their common length (the start is the time origin of both)."""
    n = min(len(reference), len(estimate))
    return reference[:n], estimate[:n]


def _pair_16k(
    reference: np.ndarray, estimate: np.ndarray, sr: int, est_sr: int | None
) -> tuple[np.ndarray, np.ndarray]:
    ref = to_16k(reference, sr)
    est = to_16k(estimate, sr if est_sr is None else est_sr)
    return align(ref, est)


# ------------------------------------------------------------------------------------------ SI-SNR


def si_snr(
    *, estimate: np.ndarray, reference: np.ndarray, sr: int = SAMPLE_RATE, est_sr: int | None = None
) -> float:
    """Scale-invariant signal-to-noise ratio of ``estimate`` w.r.t. ``reference``, in dB.

    Both signals are made zero-mean, the estimate is projected onto the reference
    (``s_t = <s', s> s / ||s||²``) and ``10 log10(||s_t||² / ||s' - s_t||²)`` is returned, so any non-zero
    gain (including a sign flip) applied to the estimate leaves the value unchanged. Computed in float64;
    an estimate that is an exact multiple of the reference gives ``+inf``.

    Keyword-only, like the training loss ``denoise.finetune`` uses: the two orders are easy to swap and
    SI-SNR is not symmetric.

    Args:
        estimate: signal to score [samples] at ``est_sr`` Hz (default: ``sr``).
        reference: clean signal [samples] at ``sr`` Hz.
    Raises:
        MetricUnavailable: the reference (after zero-mean) or the estimate is silent or empty.
    """
    ref, est = _pair_16k(reference, estimate, sr, est_sr)
    if len(ref) == 0:
        raise MetricUnavailable("SI-SNR: empty signal")
    ref = ref - ref.mean()
    est = est - est.mean()
    # "Silent" = nothing above -200 dBFS once the mean is gone; an exact == 0 test would miss the
    # rounding residue of subtracting the mean of a constant signal.
    if not np.any(np.abs(ref) > _SILENCE):
        raise MetricUnavailable("SI-SNR: the reference is silent (constant)")
    if not np.any(np.abs(est) > _SILENCE):
        raise MetricUnavailable("SI-SNR: the estimate is silent (constant)")
    ref_energy = float(np.dot(ref, ref))
    target = (np.dot(est, ref) / ref_energy) * ref
    noise = est - target
    noise_energy = float(np.dot(noise, noise))
    target_energy = float(np.dot(target, target))
    if noise_energy == 0.0:
        return float("inf")
    if target_energy == 0.0:  # estimate orthogonal to the reference
        return float("-inf")
    return float(10.0 * np.log10(target_energy / noise_energy))


def si_snr_improvement(
    reference: np.ndarray,
    noisy: np.ndarray,
    enhanced: np.ndarray,
    sr: int = SAMPLE_RATE,
    noisy_sr: int | None = None,
    enhanced_sr: int | None = None,
) -> float:
    """SI-SNRi in dB: the SI-SNR of ``enhanced`` minus that of ``noisy``, both against ``reference``.

    All three are 1-D [samples]; rates default to ``sr``. The three are trimmed to one common length so
    that both terms are measured over the same span.
    """
    ref = to_16k(reference, sr)
    noi = to_16k(noisy, sr if noisy_sr is None else noisy_sr)
    enh = to_16k(enhanced, sr if enhanced_sr is None else enhanced_sr)
    n = min(len(ref), len(noi), len(enh))
    return si_snr(estimate=enh[:n], reference=ref[:n]) - si_snr(estimate=noi[:n], reference=ref[:n])


# -------------------------------------------------------------------------------------------- PESQ


def pesq_wb(
    reference: np.ndarray, estimate: np.ndarray, sr: int = SAMPLE_RATE, est_sr: int | None = None
) -> float:
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO scale ≈ 1.04 … 4.64) at 16 kHz.

    Keyword-only, like the training loss ``denoise.finetune`` uses: the two orders are easy to swap and
    SI-SNR is not symmetric.

    Args:
        estimate: signal to score [samples] at ``est_sr`` Hz (default: ``sr``).
        reference: clean signal [samples] at ``sr`` Hz.
    Raises:
        MetricUnavailable: the pair is shorter than PESQ's minimum of 0.25 s, or PESQ finds no speech
            in the reference (e.g. digital silence).
    """
    from pesq import BufferTooShortError, NoUtterancesError, PesqError, pesq

    ref, est = _pair_16k(reference, estimate, sr, est_sr)
    if not np.any(ref):  # the wrapper would divide by zero before the C code reports "no utterances"
        raise MetricUnavailable("PESQ: the reference is digital silence")
    try:
        return float(pesq(SAMPLE_RATE, ref.astype(np.float32), est.astype(np.float32), "wb"))
    except BufferTooShortError:
        raise MetricUnavailable(
            f"PESQ: {len(ref) / SAMPLE_RATE:.2f} s is too short (needs ≥ 0.25 s)"
        ) from None
    except NoUtterancesError:
        raise MetricUnavailable("PESQ: no speech (utterance) detected in the reference") from None
    except PesqError as exc:  # any other condition the C code reports
        raise MetricUnavailable(f"PESQ: {type(exc).__name__}: {exc}") from None


# -------------------------------------------------------------------------------------------- STOI


def stoi(
    reference: np.ndarray,
    estimate: np.ndarray,
    sr: int = SAMPLE_RATE,
    est_sr: int | None = None,
    extended: bool = False,
) -> float:
    """STOI (Taal 2011) or, with ``extended=True``, eSTOI (Jensen & Taal 2016); 0 … 1, higher is better.

    The pair is brought to 16 kHz and aligned here; pystoi then works at 10 kHz internally.

    Raises:
        MetricUnavailable: fewer than 30 STOI frames (≈ 0.4 s) of non-silent speech remain, where
            pystoi would silently return 1e-5.
    """
    from pystoi import stoi as _pystoi

    ref, est = _pair_16k(reference, estimate, sr, est_sr)
    name = "eSTOI" if extended else "STOI"
    if len(ref) == 0:
        raise MetricUnavailable(f"{name}: empty signal")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_pystoi(ref, est, SAMPLE_RATE, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise MetricUnavailable(f"{name}: too little non-silent speech (needs ≥ 30 frames ≈ 0.4 s)")
    return value


def estoi(
    reference: np.ndarray, estimate: np.ndarray, sr: int = SAMPLE_RATE, est_sr: int | None = None
) -> float:
    """Extended STOI; see :func:`stoi`."""
    return stoi(reference, estimate, sr, est_sr, extended=True)


# ------------------------------------------------------------------------------------------ DNSMOS


@dataclass(frozen=True)
class DnsmosScores:
    """DNSMOS predictions on the 1 … 5 MOS scale.

    ``sig``/``bak``/``ovrl``: P.835 speech signal, background noise and overall quality;
    ``p808``: the P.808 overall MOS model.
    """

    sig: float
    bak: float
    ovrl: float
    p808: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


_dnsmos_lock = threading.Lock()
_dnsmos_model = None


def _dnsmos_instance():
    """speechmos' DNSMOS (ONNX models shipped inside the wheel, nothing downloaded), built once."""
    global _dnsmos_model
    with _dnsmos_lock:
        if _dnsmos_model is None:
            from speechmos import dnsmos as sm

            models = Path(sm.__file__).resolve().parent / "dnsmos_models"
            # sig_bak_ovr.onnx is the non-personalised P.835 model the DNS Challenge reports;
            # model_v8.onnx is the P.808 model.
            _dnsmos_model = sm.DNSMOS(str(models / "sig_bak_ovr.onnx"), str(models / "model_v8.onnx"))
        return _dnsmos_model


def dnsmos(audio: np.ndarray, sr: int = SAMPLE_RATE) -> DnsmosScores:
    """Non-intrusive DNSMOS P.835 (SIG, BAK, OVRL) and P.808 MOS of a 1-D signal [samples] at ``sr`` Hz.

    Works fully offline (speechmos ships the ONNX models). The models score 9.01 s windows at 16 kHz with
    a 1 s hop and the per-window scores are averaged (the DNS Challenge's ``dnsmos_local.py`` procedure);
    a clip shorter than 9.01 s is repeated end-to-end until it is long enough, so any length works.
    Samples outside [-1, 1] (e.g. a clipping model output) are clipped first, as a 16-bit file would be.

    Raises:
        MetricUnavailable: the signal is empty.
    """
    x = to_16k(audio, sr)
    if len(x) == 0:
        raise MetricUnavailable("DNSMOS: empty signal")  # speechmos would loop forever doubling nothing
    # Digital silence is scored on purpose: a model that outputs zeros must pull the mean down, not
    # drop out of it.
    x = np.clip(x, -1.0, 1.0).astype(np.float32)
    model = _dnsmos_instance()
    out = model(x, SAMPLE_RATE, False)
    return DnsmosScores(
        sig=float(out["sig_mos"]),
        bak=float(out["bak_mos"]),
        ovrl=float(out["ovrl_mos"]),
        p808=float(out["p808_mos"]),
    )


# ------------------------------------------------------------------------------------ combinations

INTRUSIVE_METRICS = ("pesq", "stoi", "estoi", "si_snr")
DNSMOS_METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")
ALL_METRICS = INTRUSIVE_METRICS + DNSMOS_METRICS


def intrusive_scores(reference: np.ndarray, estimate: np.ndarray) -> tuple[dict[str, float], list[str]]:
    """PESQ-WB, STOI, eSTOI and SI-SNR of two 16 kHz 1-D signals of equal length.

    Returns ``(scores, notes)``: a metric that cannot be computed is NaN in ``scores`` and its reason is
    appended to ``notes``.
    """
    funcs = {"pesq": pesq_wb, "stoi": stoi, "estoi": estoi}
    scores: dict[str, float] = {}
    notes: list[str] = []
    for name, func in funcs.items():
        try:
            scores[name] = func(reference, estimate)
        except MetricUnavailable as exc:
            scores[name] = float("nan")
            notes.append(str(exc))
    try:
        scores["si_snr"] = si_snr(estimate=estimate, reference=reference)
    except MetricUnavailable as exc:
        scores["si_snr"] = float("nan")
        notes.append(str(exc))
    return scores, notes


def dnsmos_scores(audio: np.ndarray) -> tuple[dict[str, float], list[str]]:
    """DNSMOS of a 16 kHz 1-D signal as ``({"dnsmos_sig": ..., ...}, notes)``; NaN + note if unavailable."""
    try:
        result = dnsmos(audio).as_dict()
        return {f"dnsmos_{k}": v for k, v in result.items()}, []
    except MetricUnavailable as exc:
        return {name: float("nan") for name in DNSMOS_METRICS}, [str(exc)]
