"""Real-time GTCRN: the official streaming ONNX graph, one 16 ms frame per call, with our own STFT framing.

The graph (``gtcrn_simple_stream.onnx``, opset 11, manifest name ``gtcrn_simple_stream_onnx``) maps one
STFT frame ``mix [1, 257, 1, 2]`` plus three state caches to the enhanced frame and the new caches; it
embeds the ``gtcrn_dns3_stream`` checkpoint. It is kept as the reference real-time path of GTCRN's authors;
the project's own export (``--backend onnx``) carries the same state, runs any GTCRN weights, takes every
complete frame of a block in one call and is faster per frame (docs/benchmarks.md, "Live streaming").
:class:`GtcrnStreamer` frames audio exactly like ``torch.stft(center=True, pad_mode="reflect")`` as it
arrives, so pushing a whole file and flushing gives the offline torch output (>= 60 dB SNR, tested);
:class:`GtcrnStreamBackend` is the engine backend built on it.

Latency: an output sample is final once both frames that cover it are complete, at most ``n_fft - 1`` = 511
samples after it; :meth:`GtcrnStreamBackend.open_stream` releases output at that fixed delay (the GTCRN spec's
``stream_delay``, 31.9 ms at 16 kHz).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from denoise.backends import FixedDelayStream, NetStream, pad_to_valid
from denoise.backends.onnx_backend import make_session
from denoise.stft import SpecStream
from denoise_models.spec import spec_of

STREAM_WEIGHTS = "gtcrn_simple_stream_onnx"  # manifest name of the official streaming graph
EMBEDDED_WEIGHTS = "gtcrn_dns3_stream"  # the checkpoint the graph embeds
SPEC = spec_of("gtcrn")
N_FFT, HOP, SAMPLE_RATE = SPEC.n_fft, SPEC.hop_length, SPEC.sample_rate


class GtcrnStreamer:
    """Push 16 kHz float32 samples in blocks of any size; get enhanced samples back as soon as they are final.

    ``push(x)`` returns the newly finished output samples (possibly none); ``flush()`` ends the stream and
    returns the rest. After ``flush`` the total output is ``256 * (n // 256)`` samples for ``n`` pushed (the
    length ``GTCRN.forward`` returns). A streamer holds the network state of one signal: use one per channel.
    The framing is :class:`denoise.stft.SpecStream`'s; the graph takes one frame per call, with its caches.
    """

    def __init__(self, session) -> None:
        self.session = session
        shapes = {i.name: i.shape for i in session.get_inputs()}
        self._state = {
            k: np.zeros(shapes[k], dtype=np.float32) for k in ("conv_cache", "tra_cache", "inter_cache")
        }
        self._outputs = [o.name for o in session.get_outputs()]
        self._framer = SpecStream(self._run, 1, N_FFT, HOP)
        self._seen = 0
        self.closed = False

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feed ``samples`` float32 ``[n]``; returns the enhanced samples that are now final (float32 ``[m]``)."""
        if self.closed:
            raise RuntimeError("stream already flushed; make a new GtcrnStreamer")
        x = np.asarray(samples, dtype=np.float32).reshape(1, -1)
        self._seen += x.shape[1]
        return self._framer.push(x)[0]

    def flush(self) -> np.ndarray:
        """End of input: reflect-pad the end like ``torch.stft(center=True)`` and return the remaining output."""
        if self.closed:
            return np.zeros(0, dtype=np.float32)
        self.closed = True
        if self._seen == 0:
            return np.zeros(0, dtype=np.float32)
        return self._framer.finish()[0]

    def _run(self, spec: np.ndarray) -> np.ndarray:
        """Frames ``[1, 257, n, 2]`` -> enhanced, one graph call per frame (the graph's shape)."""
        out = np.empty_like(spec)
        for t in range(spec.shape[2]):
            enh, conv, tra, inter = self.session.run(
                self._outputs, {"mix": spec[:, :, t : t + 1], **self._state}
            )
            self._state = {"conv_cache": conv, "tra_cache": tra, "inter_cache": inter}
            out[:, :, t : t + 1] = enh
        return out


def stream_graph_path(onnx_path: str | Path | None = None) -> Path:
    """The official streaming graph: ``onnx_path`` if given, else the manifest entry (store or mirror)."""
    if onnx_path:
        return Path(onnx_path)
    from denoise_models import resolve_weights

    return resolve_weights(STREAM_WEIGHTS, progress=False)


class GtcrnStreamBackend:
    """Engine backend over :class:`GtcrnStreamer`: each row of a batch is streamed frame by frame.

    Same constructor keywords as every non-torch backend. ``weights`` must be the checkpoint the graph
    embeds (``"default"`` or ``"gtcrn_dns3_stream"``): other weights cannot be swapped into this graph.
    """

    def __init__(
        self,
        arch: str = "gtcrn",
        weights: str | Path | None = "default",
        onnx_path: str | Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        if arch.lower() != "gtcrn":
            raise ValueError("the streaming backend runs GTCRN only: use --model gtcrn")
        if weights not in ("default", EMBEDDED_WEIGHTS):
            raise ValueError(
                f"the official streaming graph embeds {EMBEDDED_WEIGHTS!r}; weights {str(weights)!r} cannot be "
                "used with it (use --backend onnx for other GTCRN weights)"
            )
        self.path = stream_graph_path(onnx_path)
        # One frame per call is far too small to spread over threads: one thread is fastest.
        self.session = make_session(self.path, "cpu" if device == "auto" else device, threads or 1)
        self.arch = "gtcrn"
        self.sample_rate = SAMPLE_RATE
        self.hop_length = HOP
        self.min_samples = SPEC.min_samples
        self.stateful = True
        self.is_gpu = "CUDA" in self.session.get_providers()[0]
        self.name = "onnx-stream:" + ("cuda" if self.is_gpu else "cpu")

    def streamer(self) -> GtcrnStreamer:
        """A fresh real-time stream (zero state) over this backend's session."""
        return GtcrnStreamer(self.session)

    def open_stream(self, batch: int) -> NetStream:
        """``batch`` rows, one :class:`GtcrnStreamer` each, at the spec's fixed ``stream_delay``."""
        rows = [self.streamer() for _ in range(batch)]
        return FixedDelayStream(
            lambda x: np.stack([s.push(row) for s, row in zip(rows, x, strict=True)]),
            lambda: np.stack([s.flush() for s in rows]),
            batch=batch,
            delay=SPEC.stream_delay,
            hop_length=self.hop_length,
            min_samples=self.min_samples,
        )

    def process(self, batch: np.ndarray) -> np.ndarray:
        """float32 ``[B, T]`` -> ``[B, T]``: each row zero-padded to whole hops (as the other backends do),
        pushed whole, flushed, and cropped back to ``T``."""
        length = batch.shape[-1]
        padded = pad_to_valid(np.asarray(batch, dtype=np.float32), self.hop_length, self.min_samples)
        out = np.zeros((padded.shape[0], max(length, padded.shape[1])), dtype=np.float32)
        for row, x in enumerate(padded):
            s = self.streamer()
            y = np.concatenate([s.push(x), s.flush()])
            out[row, : y.size] = y
        return out[:, :length]
