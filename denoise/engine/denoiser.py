"""The :class:`Denoiser`: arrays, files and live streams through one streaming pipeline.

File mode reads the source in blocks and writes blocks through the atomic block writer: nothing holds
the whole file. Models with a working level (FRCRN) first read the file twice for exact statistics
(:mod:`denoise.engine.levels`); every model gets one statistics pass that finds silent channels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

import denoise.modelscope_compat as modelscope_compat
from denoise.audio import (
    AudioError,
    AudioSink,
    container_for,
    output_subtype,
    read_audio,
    required_subtype,
    write_audio,
)
from denoise.audio.source import BLOCK_FRAMES, AudioSource
from denoise.backends import Backend, create_backend
from denoise.engine.batching import BatchGate
from denoise.engine.chunks import ChunkRunner, StateRunner
from denoise.engine.config import DenoiserConfig, Enhanced
from denoise.engine.levels import SILENCE_RMS, LoudStats, PowerStats
from denoise.engine.pipeline import EngineStream, Pipeline
from denoise.engine.stages import Resampler
from denoise_models.spec import EngineDefaults, spec_of

Blocks = Callable[[], Iterator[np.ndarray]]  # a fresh pass over a signal, block by block


class Denoiser:
    """Denoise arrays, files or live streams with FRCRN or GTCRN.

    Example::

        from denoise import Denoiser
        d = Denoiser(model="gtcrn")
        clean = d.enhance(noisy, 48000)        # [channels, samples] -> same shape, same rate
        d.enhance_file("talk.wav", "talk.clean.wav")   # any length, bounded memory
        live = d.stream(48000, 2)              # live.process(block) / live.flush(), live.latency

    ``backend`` runs the network: an object with the :class:`denoise.backends.Backend` shape, or the
    name of a registered kind (``"torch"``, ``"onnx"``; the same as ``config.backend``) to make one.
    """

    def __init__(
        self,
        config: DenoiserConfig | None = None,
        *,
        backend: Backend | str | None = None,
        **overrides: object,
    ) -> None:
        if isinstance(backend, str):  # the config's backend kind ("torch", "onnx", ...), as before
            overrides["backend"], backend = backend, None
        self.config = replace(config or DenoiserConfig(), **overrides)
        self.spec = spec_of(self.config.model)
        self.defaults: EngineDefaults = self.spec.engine
        self.backend: Backend = backend if backend is not None else self._make_backend()
        if self.config.precision != "fp32" and not self.backend.is_gpu:
            raise ValueError(f"--precision {self.config.precision} needs a CUDA device; on CPU use fp32")
        self.batch_size = self.config.batch_size or (8 if self.backend.is_gpu else 1)
        if self.batch_size > 1:  # every call [batch_size, width], rows shared by files in flight
            self.backend = BatchGate(self.backend, self.batch_size)

    def _make_backend(self) -> Backend:
        c = self.config
        options: dict[str, object] = {"arch": c.model, "weights": c.weights, "device": c.device}
        if c.backend == "torch":
            options["precision"] = c.precision
        elif c.backend == "onnx":
            # Backends run a given graph and never export: the cached export is located (or made) here.
            if c.onnx_path is None:
                from denoise.export import ensure_onnx

                options["onnx_path"] = str(ensure_onnx(c.model, c.weights))
            else:
                options["onnx_path"] = c.onnx_path
        else:
            options["onnx_path"] = c.onnx_path
        return create_backend(c.backend, threads=c.threads, **options)

    @property
    def sample_rate(self) -> int:
        """The rate the network runs at (Hz)."""
        return self.backend.sample_rate

    @property
    def stateful(self) -> bool:
        """True when the network carries its state across blocks (chunking changes nothing)."""
        return self.spec.stateful and bool(getattr(self.backend, "stateful", False))

    # ------------------------------------------------------------------ public API

    def enhance(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """Denoise ``samples`` (``[channels, samples]`` or ``[samples]``) recorded at ``sample_rate`` Hz.

        Returns float32 of the same shape at the same rate (compat mode: see :meth:`enhance_report`).
        """
        x = np.asarray(samples, dtype=np.float32)
        out = self.enhance_report(x if x.ndim == 2 else x[None], sample_rate).samples
        return out if x.ndim == 2 else out[0]

    def enhance_report(self, samples: np.ndarray, sample_rate: int) -> Enhanced:
        """Like :meth:`enhance`, with notes (limiting, silence, ...) and output rate/subtype."""
        if samples.ndim != 2 or samples.shape[1] == 0:
            raise AudioError("expected audio shaped [channels, samples] with at least one sample")
        samples = np.asarray(samples, dtype=np.float32)
        if self.config.compat == "modelscope":
            out, rate, notes = modelscope_compat.modelscope_pipeline(self.backend, samples, sample_rate)
            return Enhanced(out, rate, notes, modelscope_compat.SUBTYPE)

        def blocks() -> Iterator[np.ndarray]:
            for at in range(0, samples.shape[1], BLOCK_FRAMES):
                yield samples[:, at : at + BLOCK_FRAMES]

        out = np.empty_like(samples)
        notes = self._run(blocks, sample_rate, samples.shape[0], self._writer(out))
        return Enhanced(out, sample_rate, notes)

    def enhance_file(self, src: str | Path, dst: str | Path, *, subtype: str | None = None) -> Enhanced:
        """Read ``src`` in blocks, denoise, write ``dst`` atomically in blocks; returns the notes.

        Memory does not depend on the file's length. The returned ``samples`` is a placeholder of the
        result's shape (see :class:`Enhanced`).
        """
        dst = Path(dst)
        if self.config.compat == "modelscope":
            return self._compat_file(src, dst, subtype)
        source = AudioSource(src)
        chosen = subtype or required_subtype(dst) or output_subtype(source.info, container_for(dst))
        rate, channels = source.sample_rate, source.channels
        with AudioSink(dst, rate, channels, subtype=chosen) as sink:
            notes = self._run(source.blocks, rate, channels, sink.write)
        notes[:0] = source.notes
        if sink.clipped:
            notes.append(f"{sink.clipped:,} samples clipped at full scale")
        placeholder = np.broadcast_to(np.float32(0.0), (channels, sink.frames))
        return Enhanced(placeholder, rate, notes, chosen)

    def stream(self, sample_rate: int, channels: int) -> EngineStream:
        """A live stream: ``process(block [channels, n]) -> [channels, n]``, ``flush()``, ``latency``.

        Output equals file mode's, ``latency`` frames later, except for what file mode learns from the
        whole file: silent channels are not detected, and a working level (FRCRN) is computed from each
        chunk as it completes instead of from the whole file.
        """
        if self.config.compat:
            raise ValueError("compat='modelscope' is whole-file by definition; it cannot stream")
        level = self._level_dbfs
        notes: list[str] = []
        if self.stateful:
            if level is not None:
                raise ValueError("a working level for a stateful network needs the whole file: use files")
            core: ChunkRunner | StateRunner = StateRunner(self.backend, channels, gains=np.ones(channels))
        else:
            core = self._chunk_runner(channels, gains=None, level_dbfs=level)
            if level is not None:
                notes.append(f"live: working level ({level:g} dBFS) set per chunk, not from the whole file")
        pipeline = self._pipeline(core, sample_rate, channels)
        return EngineStream(pipeline, sample_rate, channels, notes)

    # ------------------------------------------------------------------ the pipeline

    @property
    def _level_dbfs(self) -> float | None:
        return self.defaults.working_level_dbfs if self.config.keep_level else None

    def _run(
        self, blocks: Blocks, rate: int, channels: int, write: Callable[[np.ndarray], None]
    ) -> list[str]:
        """Statistics pass(es), then the pipeline from ``blocks()`` to ``write``; returns the notes."""
        gains = self._gains(blocks, rate, channels)
        notes: list[str] = []
        silent = gains == 0.0
        if silent.all():
            for block in blocks():
                write(np.zeros_like(block))
            return ["silent input: written as silence"]
        if silent.any():
            notes.append(f"{int(silent.sum())} silent channel(s) left silent")
        if self.stateful:
            feed = round((self.config.chunk_seconds or self.defaults.chunk_seconds) * self.sample_rate)
            core: ChunkRunner | StateRunner = StateRunner(self.backend, channels, gains=gains, feed=feed)
        else:
            core = self._chunk_runner(channels, gains=gains, level_dbfs=None)
        pipeline = self._pipeline(core, rate, channels)
        for block in blocks():
            write(pipeline.push(block))
        write(pipeline.finish())
        return notes + pipeline.notes()

    def _gains(self, blocks: Blocks, rate: int, channels: int) -> np.ndarray:
        """Per-channel working gain from whole-signal statistics; 0.0 marks a silent channel."""
        native = PowerStats(channels)
        level = self._level_dbfs
        if level is None:
            for block in blocks():
                native.add(block)
            return np.where(np.sqrt(native.mean) < SILENCE_RMS, 0.0, 1.0)
        power = PowerStats(channels)  # pass 1 at the network's rate: mean power
        for x16 in self._at_net_rate(blocks, rate, channels, also=native.add):
            power.add(x16)
        loud = LoudStats(power.mean)  # pass 2: mean power of the samples above it
        for x16 in self._at_net_rate(blocks, rate, channels):
            loud.add(x16)
        return np.where(np.sqrt(native.mean) < SILENCE_RMS, 0.0, loud.gains(level))

    def _at_net_rate(
        self, blocks: Blocks, rate: int, channels: int, also: Callable[[np.ndarray], None] | None = None
    ) -> Iterator[np.ndarray]:
        down = Resampler(rate, self.sample_rate, channels)
        for block in blocks():
            if also:
                also(block)
            yield down.push(block)
        yield down.finish()

    def _chunk_runner(
        self, channels: int, *, gains: np.ndarray | None, level_dbfs: float | None
    ) -> ChunkRunner:
        sr = self.sample_rate
        return ChunkRunner(
            self.backend,
            channels,
            chunk=round((self.config.chunk_seconds or self.defaults.chunk_seconds) * sr),
            overlap=round(self.config.overlap_seconds * sr),
            preroll=round(self.defaults.preroll_seconds * sr),
            batch_size=self.batch_size,
            gains=gains,
            level_dbfs=level_dbfs,
        )

    def _pipeline(self, core: ChunkRunner | StateRunner, rate: int, channels: int) -> Pipeline:
        return Pipeline(
            core,
            rate=rate,
            net_rate=self.sample_rate,
            channels=channels,
            atten_lim_db=self.config.atten_lim_db,
            full_band=self.config.full_band,
        )

    @staticmethod
    def _writer(out: np.ndarray) -> Callable[[np.ndarray], None]:
        """A ``write`` that fills ``out`` from the left."""
        at = 0

        def write(block: np.ndarray) -> None:
            nonlocal at
            out[:, at : at + block.shape[1]] = block
            at += block.shape[1]

        return write

    def _compat_file(self, src: str | Path, dst: Path, subtype: str | None) -> Enhanced:
        """ModelScope's whole-file pipeline; refuses before decoding what it cannot hold."""
        source = AudioSource(src)
        modelscope_compat.check_length(source.info.duration)
        audio = read_audio(src)
        result = self.enhance_report(audio.samples, audio.sample_rate)
        result.notes[:0] = audio.notes
        chosen = subtype or result.subtype or output_subtype(audio, container_for(dst))
        clipped = write_audio(dst, result.samples, result.sample_rate, subtype=chosen)
        if clipped:
            result.notes.append(f"{clipped:,} samples clipped at full scale")
        return result
