"""``compat="modelscope"``: reproduce ModelScope's ANSPipeline for FRCRN, quirks included.

What the original does (facts in ../shared/docs/frcrn_reference.md): first channel only, resample to
16 kHz, ``audio_norm`` to -25 dBFS (never undone), zero-pad by its window/stride rule, one forward
over the whole input (up to 120 s), ``wav_l2[:n] * 32768`` cast to int16, 16 kHz mono. The one
deliberate difference: where the original's cast wraps around (values >= 1.0 become large negative
numbers), we clip.
"""

from __future__ import annotations

import numpy as np

from denoise.audio import AudioError, resample
from denoise.backends import Backend
from denoise.engine import Enhanced, working_level_gain

WINDOW = 16000  # samples; the pipeline's decode window
STRIDE = 12000  # 0.75 of the window
MAX_SAMPLES = 120 * WINDOW  # above this the original switches to 1 s windows; not reproduced


def pipeline_padding(n: int) -> int:
    """How many zeros the original appends to an ``n``-sample input."""
    if n < WINDOW:
        return WINDOW - n
    if n < WINDOW + STRIDE:
        return WINDOW + STRIDE - n
    if (n - WINDOW) % STRIDE:
        return n - (n - WINDOW) // STRIDE * STRIDE
    return 0


def modelscope_pipeline(backend: Backend, samples: np.ndarray, sample_rate: int) -> Enhanced:
    """Run ``backend`` (an FRCRN) the way ModelScope's pipeline does; returns 16 kHz mono int16-ready."""
    sr = backend.sample_rate
    x = resample(samples[0].astype(np.float64), sample_rate, sr).astype(np.float64)
    n = x.shape[0]
    if n > MAX_SAMPLES:
        raise AudioError("compat=modelscope reproduces the pipeline only for inputs up to 120 s")
    rms = np.sqrt(np.mean(x**2))
    if rms == 0.0:  # the original divides by zero here and writes garbage; we write silence
        return Enhanced(np.zeros((1, n), np.float32), sr, ["silent input: written as silence"], "PCM_16")
    x = (x * working_level_gain(x, -25.0)).astype(np.float32)
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
    return Enhanced(pcm.astype(np.float32)[None] / 32768.0, sr, notes, "PCM_16")
