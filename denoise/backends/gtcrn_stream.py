"""Real-time GTCRN: the official streaming ONNX graph, one 16 ms frame per call, with our own STFT framing.

The graph (``gtcrn_simple_stream.onnx``, opset 11, manifest name ``gtcrn_simple_stream_onnx``) maps one
STFT frame ``mix [1, 257, 1, 2]`` plus three state caches to the enhanced frame and the new caches; it
embeds the ``gtcrn_dns3_stream`` checkpoint. :class:`GtcrnStreamer` frames audio exactly like
``torch.stft(center=True, pad_mode="reflect")`` as it arrives, so pushing a whole file and flushing gives the
offline torch output (>= 60 dB SNR, tested); :class:`GtcrnStreamBackend` is the engine backend built on it.

Latency: an output sample is released once the input is 256 samples (16 ms) ahead of it, plus the 512-sample
analysis frame: 32 ms algorithmic latency at 16 kHz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from denoise.backends import pad_to_valid
from denoise.backends.onnx_backend import make_session, sqrt_hann

STREAM_WEIGHTS = "gtcrn_simple_stream_onnx"  # manifest name of the official streaming graph
EMBEDDED_WEIGHTS = "gtcrn_dns3_stream"  # the checkpoint the graph embeds
N_FFT, HOP, SAMPLE_RATE = 512, 256, 16000


class GtcrnStreamer:
    """Push 16 kHz float32 samples in blocks of any size; get enhanced samples back as soon as they are final.

    ``push(x)`` returns the newly finished output samples (possibly none); ``flush()`` ends the stream and
    returns the rest. After ``flush`` the total output is ``256 * (n // 256)`` samples for ``n`` pushed (the
    length ``GTCRN.forward`` returns). A streamer holds the network state of one signal: use one per channel.
    """

    def __init__(self, session) -> None:
        self.session = session
        self.window = sqrt_hann(N_FFT)
        # OLA normaliser over one hop: sum of the squared windows that overlap there (1 up to rounding).
        w2 = self.window.astype(np.float64) ** 2
        self._norm = w2[:HOP] + w2[HOP:]
        shapes = {i.name: i.shape for i in session.get_inputs()}
        self._state = {
            k: np.zeros(shapes[k], dtype=np.float32) for k in ("conv_cache", "tra_cache", "inter_cache")
        }
        self._outputs = [o.name for o in session.get_outputs()]
        self._raw = np.zeros(0, dtype=np.float32)  # input not yet framed (in padded coordinates)
        self._seen = 0  # input samples pushed
        self._frames = 0  # frames processed
        self._started = False  # start reflection applied
        self._head = np.zeros(HOP)  # un-normalised OLA tail of the previous frame
        self._first = np.zeros(0, dtype=np.float32)  # the first 257 samples (for the start reflection)
        self._tail = np.zeros(0, dtype=np.float32)  # the last 257 samples (for the end reflection)
        self.closed = False

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feed ``samples`` float32 ``[n]``; returns the enhanced samples that are now final (float32 ``[m]``)."""
        if self.closed:
            raise RuntimeError("stream already flushed; make a new GtcrnStreamer")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._seen += x.size
        self._tail = np.concatenate([self._tail, x])[-(HOP + 1) :]
        if not self._started:
            self._first = np.concatenate([self._first, x])
            if self._first.size <= HOP:  # the reflection needs samples 1..256
                return np.zeros(0, dtype=np.float32)
            x = np.concatenate([self._first[HOP:0:-1], self._first])  # reflect-pad the start
            self._started = True
            self._first = np.zeros(0, dtype=np.float32)
        self._raw = np.concatenate([self._raw, x])
        return self._drain()

    def flush(self) -> np.ndarray:
        """End of input: reflect-pad the end like ``torch.stft(center=True)`` and return the remaining output."""
        if self.closed:
            return np.zeros(0, dtype=np.float32)
        if not self._started:
            if self._seen == 0:
                self.closed = True
                return np.zeros(0, dtype=np.float32)
            raise ValueError(f"GTCRN needs more than {HOP} samples, got {self._seen}")
        self._raw = np.concatenate([self._raw, self._tail[-2::-1][:HOP]])  # reflect-pad the end
        out = self._drain(final_frames=1 + self._seen // HOP)
        self.closed = True
        return out

    def _drain(self, final_frames: int | None = None) -> np.ndarray:
        out: list[np.ndarray] = []
        while self._raw.size >= N_FFT and (final_frames is None or self._frames < final_frames):
            frame = self._raw[:N_FFT]
            self._raw = self._raw[HOP:]
            out.append(self._step(frame))
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)

    def _step(self, frame: np.ndarray) -> np.ndarray:
        """One analysis frame -> the hop of output it completes (empty for the very first frame)."""
        spec = np.fft.rfft(frame * self.window)
        mix = np.stack([spec.real, spec.imag], axis=-1).astype(np.float32)[None, :, None, :]  # [1, 257, 1, 2]
        enh, conv, tra, inter = self.session.run(self._outputs, {"mix": mix, **self._state})
        self._state = {"conv_cache": conv, "tra_cache": tra, "inter_cache": inter}
        z = enh[0, :, 0, 0].astype(np.float64) + 1j * enh[0, :, 0, 1]
        y = np.fft.irfft(z, n=N_FFT) * self.window
        done = (self._head + y[:HOP]) / self._norm
        self._head = y[HOP:]
        self._frames += 1
        # padded coordinates: the first hop belongs to the centring pad that torch.istft removes
        return done if self._frames > 1 else np.zeros(0)


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
        self.min_samples = HOP + 1
        self.is_gpu = "CUDA" in self.session.get_providers()[0]
        self.name = "onnx-stream:" + ("cuda" if self.is_gpu else "cpu")

    def streamer(self) -> GtcrnStreamer:
        """A fresh real-time stream (zero state) over this backend's session."""
        return GtcrnStreamer(self.session)

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
