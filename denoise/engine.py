"""The denoising engine: everything between a decoded file and a decoded result.

The way a signal travels (see docs/architecture in README)::

    [channels, samples] @ any rate
      -> resample to 16 kHz (soxr) -> per channel: level to the model's working level
      -> overlapping chunks -> backend (batches) -> raised-cosine cross-fade overlap-add
      -> level restored -> resample back -> optional attenuation limit -> never clips

Memory grows with the chunk, not with the file: the network only ever sees ``batch_size`` chunks.
``compat="modelscope"`` instead reproduces ModelScope's ANSPipeline bit for bit (see
:mod:`denoise.modelscope_compat`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from denoise.audio import AudioError, resample
from denoise.backends import Backend, create_backend


@dataclass(frozen=True)
class ModelDefaults:
    """Per-architecture engine defaults (the networks' own STFT facts live in ``denoise_models/``)."""

    chunk_seconds: float
    # Context a chunk sees before its output is used: recurrent state needs time to settle.
    preroll_seconds: float
    # RMS level (dBFS) the network was trained at; None = feed the input as it is.
    working_level_dbfs: float | None


PREROLL_GTCRN = 4.0

MODEL_DEFAULTS: dict[str, ModelDefaults] = {
    # 10 s chunks keep FRCRN's peak memory near 1 GB on CPU; ModelScope trains at -25 dBFS.
    "frcrn": ModelDefaults(chunk_seconds=10.0, preroll_seconds=0.0, working_level_dbfs=-25.0),
    # GTCRN is tiny; long chunks mean fewer seams. Its GRUs remember for seconds, so each chunk gets
    # a pre-roll whose output is discarded. Its official inference feeds raw input.
    "gtcrn": ModelDefaults(chunk_seconds=30.0, preroll_seconds=PREROLL_GTCRN, working_level_dbfs=None),
}


@dataclass(frozen=True)
class DenoiserConfig:
    """Every knob of the engine, with the defaults the one-click script uses."""

    model: str = "frcrn"
    weights: str | None = "default"  # manifest name, file path, "default", or None (random; tests)
    backend: str = "torch"  # "torch" or "onnx"
    onnx_path: str | None = None  # the exported graph for backend="onnx" (None: export/locate by name)
    device: str = "auto"  # "auto" -> CUDA when present, else CPU
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" (autocast; CUDA only)
    threads: int | None = None  # CPU threads for the backend (None = library default)
    chunk_seconds: float | None = None  # None -> MODEL_DEFAULTS[model]
    overlap_seconds: float = 1.0  # cross-fade length between chunks
    batch_size: int | None = None  # chunks per forward; None -> 1 on CPU, 8 on CUDA
    atten_lim_db: float | None = None  # suppress by at most this many dB (None = no limit)
    keep_level: bool = True  # undo the working-level gain so the output keeps the input's loudness
    compat: str | None = None  # "modelscope": reproduce ModelScope's pipeline output


@dataclass
class Enhanced:
    """A result plus what the user should know about how it was made."""

    samples: np.ndarray  # float32 [channels, samples]
    sample_rate: int
    notes: list[str] = field(default_factory=list)
    subtype: str | None = None  # forced output subtype (compat mode writes int16)


class Denoiser:
    """Denoise arrays or files with FRCRN or GTCRN.

    Example::

        from denoise import Denoiser
        d = Denoiser(model="gtcrn")
        clean = d.enhance(noisy, 48000)        # [channels, samples] -> same shape, same rate
    """

    def __init__(self, config: DenoiserConfig | None = None, **overrides: object) -> None:
        config = replace(config or DenoiserConfig(), **overrides)
        arch = config.model.lower()
        if arch not in MODEL_DEFAULTS:
            raise ValueError(f"unknown model {config.model!r}; choose one of {', '.join(MODEL_DEFAULTS)}")
        if config.compat not in (None, "modelscope"):
            raise ValueError(f"unknown compat mode {config.compat!r}; the only one is 'modelscope'")
        if config.compat and arch != "frcrn":
            raise ValueError("compat='modelscope' reproduces ModelScope's FRCRN pipeline: use model='frcrn'")
        self.config = replace(config, model=arch)
        self.defaults = MODEL_DEFAULTS[arch]
        self.backend: Backend = self._make_backend()
        on_cuda = "cuda" in self.backend.name
        self.batch_size = config.batch_size or (8 if on_cuda else 1)

    def _make_backend(self) -> Backend:
        c = self.config
        if c.backend == "torch":
            return create_backend(
                "torch",
                arch=c.model,
                weights=c.weights,
                device=c.device,
                precision=c.precision,
                threads=c.threads,
            )
        return create_backend(
            c.backend,
            arch=c.model,
            weights=c.weights,
            onnx_path=c.onnx_path,
            device=c.device,
            threads=c.threads,
        )

    @property
    def sample_rate(self) -> int:
        """The rate the network runs at (Hz)."""
        return self.backend.sample_rate

    # ------------------------------------------------------------------ public API

    def enhance(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """Denoise ``samples`` (``[channels, samples]`` or ``[samples]``) recorded at ``sample_rate`` Hz.

        Returns float32 of the same shape at the same rate (compat mode: see :meth:`enhance_report`).
        """
        x = np.asarray(samples, dtype=np.float32)
        out = self.enhance_report(x if x.ndim == 2 else x[None], sample_rate).samples
        return out if x.ndim == 2 else out[0]

    def enhance_report(self, samples: np.ndarray, sample_rate: int) -> Enhanced:
        """Like :meth:`enhance`, with notes (clipping avoided, silence, ...) and output rate/subtype."""
        if samples.ndim != 2 or samples.shape[1] == 0:
            raise AudioError("expected audio shaped [channels, samples] with at least one sample")
        if self.config.compat == "modelscope":
            from denoise.modelscope_compat import modelscope_pipeline

            return modelscope_pipeline(self.backend, samples, sample_rate)
        return self._enhance(samples, sample_rate)

    def enhance_file(self, src: str | Path, dst: str | Path, *, subtype: str | None = None) -> Enhanced:
        """Read ``src``, denoise, write ``dst`` atomically; returns the result with notes."""
        from denoise.audio import container_for, output_subtype, read_audio, write_audio

        audio = read_audio(src)
        result = self.enhance_report(audio.samples, audio.sample_rate)
        result.notes[:0] = audio.notes
        dst = Path(dst)
        chosen = subtype or result.subtype or output_subtype(audio, container_for(dst))
        clipped = write_audio(dst, result.samples, result.sample_rate, subtype=chosen)
        if clipped:
            result.notes.append(f"{clipped:,} samples clipped at full scale")
        return result

    # ------------------------------------------------------------------ the default path

    def _enhance(self, samples: np.ndarray, sample_rate: int) -> Enhanced:
        notes: list[str] = []
        sr = self.sample_rate
        x16 = resample(samples, sample_rate, sr)
        gains = np.array([self._working_gain(ch) for ch in x16], dtype=np.float64)
        silent = gains == 0.0
        if silent.all():
            notes.append("silent input: written as silence")
            return Enhanced(np.zeros_like(samples, dtype=np.float32), sample_rate, notes)
        if silent.any():
            notes.append(f"{int(silent.sum())} silent channel(s) left silent")
        y16 = self._run_chunked(x16 * gains[:, None].astype(np.float32), active=~silent)
        if self.config.keep_level:
            with np.errstate(divide="ignore", invalid="ignore"):
                y16 = np.where(silent[:, None], 0.0, y16 / np.where(silent, 1.0, gains)[:, None])
        y = _fit_length(resample(y16.astype(np.float32), sr, sample_rate), samples.shape[1])
        if self.config.atten_lim_db is not None:
            lim = 10.0 ** (-abs(self.config.atten_lim_db) / 20.0)
            y = (1.0 - lim) * y + lim * samples
        peak = float(np.max(np.abs(y)))
        if peak > 1.0:
            y = y / peak * 0.999
            notes.append(f"lowered by {20 * math.log10(peak / 0.999):.1f} dB to avoid clipping")
        return Enhanced(y.astype(np.float32, copy=False), sample_rate, notes)

    def _working_gain(self, channel: np.ndarray) -> float:
        """Gain that brings ``channel`` to the network's working level; 0.0 marks a silent channel."""
        rms = float(np.sqrt(np.mean(np.square(channel, dtype=np.float64))))
        if rms < 1e-7:  # below -140 dBFS: nothing to denoise, and a gain would only amplify dither
            return 0.0
        level = self.defaults.working_level_dbfs
        if level is None or not self.config.keep_level:
            return 1.0
        return working_level_gain(channel, level)

    def _run_chunked(self, x: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Run the backend over overlapping chunks of every active channel; overlap-add the results."""
        sr = self.sample_rate
        chunk = round((self.config.chunk_seconds or self.defaults.chunk_seconds) * sr)
        if chunk < self.backend.min_samples or self.config.overlap_seconds < 0:
            raise ValueError("chunk_seconds must cover at least one frame and overlap_seconds be >= 0")
        preroll = round(self.defaults.preroll_seconds * sr)
        if chunk <= 2 * preroll:  # short chunks (tests, tiny memory budgets): less context
            preroll = chunk // 4
        overlap = min(round(self.config.overlap_seconds * sr), (chunk - preroll) // 3)
        # Zero margins so the first and last samples are seen by full analysis frames.
        margin = 2 * self.backend.hop_length
        channels, length = x.shape
        padded = np.pad(x, [(0, 0), (margin, margin)])
        total = padded.shape[1]
        out = np.zeros((channels, total), dtype=np.float64)
        norm = np.zeros(total, dtype=np.float64)
        if total <= chunk + preroll + overlap:  # the margins alone must not cost a second chunk
            chunk = total
        spans = list(chunk_spans(total, chunk, overlap, preroll))
        for start, stop, weight in spans:
            norm[start:stop] += weight
        jobs = [(c, start, stop, weight) for c in np.flatnonzero(active) for start, stop, weight in spans]
        for i in range(0, len(jobs), self.batch_size):
            group = jobs[i : i + self.batch_size]
            width = max(stop - start for _, start, stop, _ in group)
            batch = np.zeros((len(group), width), dtype=np.float32)
            for row, (c, start, stop, _) in enumerate(group):
                batch[row, : stop - start] = padded[c, start:stop]
            result = self.backend.process(batch)
            for row, (c, start, stop, weight) in enumerate(group):
                out[c, start:stop] += result[row, : stop - start] * weight
        out /= np.maximum(norm, 1e-12)
        return out[:, margin : margin + length].astype(np.float32)


def chunk_spans(
    total: int, chunk: int, overlap: int, preroll: int = 0
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Split ``[0, total)`` into chunks of ``chunk`` samples for overlap-add.

    Consecutive chunks share ``preroll + overlap`` samples. Within that, the later chunk's first
    ``preroll`` samples are context only (weight 0: a recurrent network's state is still warming up),
    then the two cross-fade with complementary raised-cosine ramps over ``overlap`` samples.

    Yields ``(start, stop, weight)``; the weights of all chunks sum to one at every sample. The last
    chunk is aligned to the end of the signal (never zero-padded), which matters for FRCRN whose SE
    blocks pool over the whole chunk.
    """
    if total <= chunk:
        yield 0, total, np.ones(total)
        return
    if chunk < preroll + 2 * overlap + 1:
        raise ValueError("chunk must be longer than preroll + 2 x overlap")
    step = chunk - overlap - preroll
    starts = [*range(0, total - chunk, step), total - chunk]
    for k, start in enumerate(starts):
        weight = np.ones(chunk)
        if k > 0:  # fade in over the previous chunk's last `overlap` samples; before that, context only
            fade_at = starts[k - 1] + chunk - overlap - start
            weight[:fade_at] = 0.0
            weight[fade_at : fade_at + overlap] = _ramp(overlap)
        if k + 1 < len(starts):
            weight[chunk - overlap :] *= _ramp(overlap)[::-1]
        yield start, start + chunk, weight


def _ramp(n: int) -> np.ndarray:
    """Raised-cosine ramp 0 -> 1 over n samples (complementary to its mirror image)."""
    return 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)


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


def _fit_length(y: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad the last axis to ``length`` (resampling may be off by a sample)."""
    if y.shape[-1] >= length:
        return y[..., :length]
    return np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, length - y.shape[-1])])


def resolve_arch(model: str | None, weights: str | None) -> str:
    """``model`` if given, else the architecture the weights name/file belongs to, else FRCRN."""
    if model:
        return model.lower()
    if weights and weights != "default":
        from denoise_models import arch_of

        try:
            found = arch_of(weights)
        except Exception:  # an unreadable file is reported when the model loads
            found = None
        if found in MODEL_DEFAULTS:
            return found
    return "frcrn"
