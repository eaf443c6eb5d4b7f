"""``compat="modelscope"``: reproduce ModelScope's ANSPipeline for FRCRN, quirks included.

What the original does (facts in ../shared/docs/frcrn_reference.md): first channel only, resample to
16 kHz, ``audio_norm`` to -25 dBFS (never undone), zero-pad by its window/stride rule, one forward
over the whole input (up to 120 s), ``wav_l2[:n] * 32768`` cast to int16, 16 kHz mono. The one
deliberate difference: where the original's cast wraps around (values >= 1.0 become large negative
numbers), we clip.

The original is whole-file by definition, so this path is too; it refuses inputs above
:data:`MAX_SECONDS` before decoding them (:func:`check_length`) instead of exhausting memory.
This module depends on nothing of the engine (the engine imports it).
"""

from __future__ import annotations

import numpy as np

from denoise.audio import AudioError, resample
from denoise.backends import Backend

WINDOW = 16000  # samples; the pipeline's decode window
STRIDE = 12000  # 0.75 of the window
MAX_SECONDS = 120  # above this the original switches to 1 s windows; not reproduced
MAX_SAMPLES = MAX_SECONDS * WINDOW
LEVEL_DBFS = -25.0  # audio_norm's target
SUBTYPE = "PCM_16"  # the original writes int16


def working_level_gain(x: np.ndarray, level_dbfs: float) -> float:
    """The gain ModelScope's ``audio_norm`` applies: RMS to ``level`` then the RMS of the above-average
    power samples to ``level`` (so pauses do not inflate the gain)."""
    x = np.asarray(x, dtype=np.float64)
    target = 10.0 ** (level_dbfs / 20.0)
    g1 = target / np.sqrt(np.mean(x**2))
    power = (x * g1) ** 2
    loud = power[power > power.mean()]
    g2 = target / np.sqrt(loud.mean()) if loud.size else 1.0
    return float(g1 * g2)


def check_length(seconds: float) -> None:
    """Refuse, with one line, an input longer than the original pipeline handles."""
    if seconds > MAX_SECONDS:
        raise AudioError(
            f"compat=modelscope reproduces ModelScope's whole-file pipeline only up to {MAX_SECONDS} s "
            f"(this input: {seconds:,.1f} s); run without --compat for any length"
        )


def pipeline_padding(n: int) -> int:
    """How many zeros the original appends to an ``n``-sample input."""
    if n < WINDOW:
        return WINDOW - n
    if n < WINDOW + STRIDE:
        return WINDOW + STRIDE - n
    if (n - WINDOW) % STRIDE:
        return n - (n - WINDOW) // STRIDE * STRIDE
    return 0


def modelscope_pipeline(
    backend: Backend, samples: np.ndarray, sample_rate: int
) -> tuple[np.ndarray, int, list[str]]:
    """Run ``backend`` (an FRCRN) the way ModelScope's pipeline does.

    Returns ``(samples [1, n] float32 on the int16 grid, 16000, notes)``; write it as :data:`SUBTYPE`.
    """
    sr = backend.sample_rate
    check_length(samples.shape[1] / sample_rate)
    x = resample(samples[0].astype(np.float64), sample_rate, sr).astype(np.float64)
    n = x.shape[0]
    if n > MAX_SAMPLES:
        check_length(n / sr)
    rms = np.sqrt(np.mean(x**2))
    if rms == 0.0:  # the original divides by zero here and writes garbage; we write silence
        return np.zeros((1, n), np.float32), sr, ["silent input: written as silence"]
    x = (x * working_level_gain(x, LEVEL_DBFS)).astype(np.float32)
    x = np.concatenate([x, np.zeros(pipeline_padding(n), np.float32)])
    # The conv-STFT ignores a trailing partial frame, so cropping to whole frames changes nothing
    # and keeps the backend from adding padding of its own.
    frames = (x.shape[0] - backend.min_samples) // backend.hop_length + 1
    x = x[: (frames - 1) * backend.hop_length + backend.min_samples]
    y = backend.process(x[None])[0][:n] * np.float32(32768.0)
    wrapped = int(np.count_nonzero((y >= 32768.0) | (y < -32768.0)))
    pcm = np.clip(y, -32768.0, 32767.0).astype(np.int16)  # truncation toward zero, as the original
    notes = ["compat=modelscope: 16 kHz mono int16, level normalised to -25 dBFS"]
    if samples.shape[0] > 1:
        notes.append(f"compat=modelscope: kept channel 1 of {samples.shape[0]}")
    if wrapped:
        notes.append(f"{wrapped:,} samples clipped where ModelScope's cast would wrap around")
    return pcm.astype(np.float32)[None] / 32768.0, sr, notes
