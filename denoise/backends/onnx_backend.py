"""ONNX Runtime backend: an exported FRCRN or GTCRN graph on CPU, or CUDA when present.

The engine (:class:`denoise.engine.Denoiser`) does chunking, levels, resampling and I/O for every backend;
this class only runs the graph on ``[B, T]`` batches. What the graph expects is read from its metadata
(:class:`denoise.onnx_metadata.OnnxMetadata`): ``io="wav"`` graphs (FRCRN) take waveforms, ``io="spec"``
graphs (GTCRN) take the STFT computed here with :mod:`denoise.stft`, framed as the architecture's spec says.

A backend runs a given graph and never exports one: whoever builds the engine's config finds or makes
the graph (``denoise export-onnx``, or :func:`denoise.export.ensure_onnx` for the cached export).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from denoise.backends import FixedDelayStream, NetStream, pad_to_valid
from denoise.onnx_metadata import read_metadata
from denoise.stft import SpecStream, istft, stft

__all__ = ["OnnxBackend", "make_session", "select_providers"]
from denoise_models.spec import spec_of

# ---------------------------------------------------------------------------------------- providers


def select_providers(device: str = "auto") -> list[str | tuple[str, dict]]:
    """ONNX Runtime execution providers for ``device`` ("auto", "cpu", "cuda", "cuda:1").

    "auto" takes the CUDA EP when this onnxruntime build has it (``onnxruntime-gpu``), else CPU.

    Raises:
        RuntimeError: CUDA was asked for but the installed onnxruntime has no CUDA EP.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if not has_cuda:
            raise RuntimeError(
                "device 'cuda' requested but this onnxruntime has no CUDAExecutionProvider "
                "(install onnxruntime-gpu, or use --device cpu)"
            )
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise ValueError(f"unknown device {device!r} for the onnx backend: use auto, cpu or cuda[:N]")


def make_session(
    path: str | Path | bytes,
    device: str = "auto",
    threads: int | None = None,
    fixed_dims: dict[str, int] | None = None,
):
    """An ``onnxruntime.InferenceSession`` with full graph optimisation and ``threads`` intra-op threads.

    ``fixed_dims`` pins named dynamic axes (e.g. ``{"batch": 1, "frames": 1}``) so that ONNX Runtime folds
    the shape arithmetic around them: a session for one exact input shape.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for name, size in (fixed_dims or {}).items():
        options.add_free_dimension_override_by_name(name, size)
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # keep ORT's warnings about unused initializers off the user's console
    model = path if isinstance(path, bytes) else str(path)  # a graph file, or a graph already read
    return ort.InferenceSession(model, options, providers=select_providers(device))


# ------------------------------------------------------------------------------------------ backend


class OnnxBackend:
    """Runs an exported graph with ONNX Runtime; same contract as :class:`TorchBackend`.

    Args:
        arch: "frcrn" or "gtcrn"; must match the graph's metadata.
        onnx_path: an exported graph (FP32, INT8 or FP16).
        weights: not used (the graph holds its weights); accepted so the engine can pass the same
            options to every backend.
        device: "auto" (CUDA EP when available), "cpu", "cuda", "cuda:N".
        threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
    """

    def __init__(
        self,
        arch: str,
        weights: str | Path | None = None,
        onnx_path: str | Path | None = None,
        device: str = "auto",
        threads: int | None = None,
    ) -> None:
        del weights  # the graph carries its own
        self.arch = arch.lower()
        self.spec = spec_of(self.arch)
        if onnx_path is None:
            raise ValueError(
                "the onnx backend runs a given graph: pass onnx_path (make one with `denoise export-onnx`, "
                "or denoise.export.ensure_onnx(arch, weights) for the cached export)"
            )
        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX graph {path} does not exist; create it with `denoise export-onnx`")
        self.meta = read_metadata(path)
        if self.meta.model != self.arch:
            raise ValueError(f"{path} is a {self.meta.model!r} graph, not {self.arch!r}")
        framing = (self.meta.sample_rate, self.meta.n_fft, self.meta.hop_length, self.meta.io)
        if framing != (self.spec.sample_rate, self.spec.n_fft, self.spec.hop_length, self.spec.export_io):
            raise ValueError(f"{path} was exported with another framing than {self.arch}'s spec: {framing}")
        self.path = path
        providers = select_providers(device)
        if self.meta.precision == "fp16" and "CUDAExecutionProvider" not in str(providers):
            # onnxruntime's CPU EP has few float16 kernels; loading such a graph can even crash the process
            raise RuntimeError(f"{path} is an FP16 graph for the CUDA EP; on CPU use the FP32 or INT8 export")
        self.session = make_session(path, device, threads)
        self._device, self._threads = device, threads
        self._one_frame_sessions: dict[int, object] = {}  # batch -> session for one frame per call (live)
        self.input_name = self.session.get_inputs()[0].name
        self.sample_rate = self.spec.sample_rate
        self.hop_length = self.spec.hop_length
        self.min_samples = self.spec.min_samples
        self.is_gpu = self.session.get_providers()[0] == "CUDAExecutionProvider"
        # "onnx:cuda" / "onnx:cpu" (+ precision): what the CLI shows
        self.name = f"onnx:{'cuda' if self.is_gpu else 'cpu'}" + (
            "" if self.meta.precision == "fp32" else f":{self.meta.precision}"
        )
        # A graph with state inputs (GTCRN) runs a signal in pieces: the engine then streams it (exact
        # chunking, live audio); graphs exported before state existed (EXPORT_VERSION 1) run chunked.
        self.state_names = list(self.meta.state)
        self.stateful = bool(self.state_names)
        # kept to make pinned-shape sessions later even if the file has moved (a GTCRN graph is ~0.4 MB)
        self._graph = path.read_bytes() if self.stateful else b""
        self._state_shapes = {
            i.name: i.shape[1:] for i in self.session.get_inputs() if i.name in self.state_names
        }

    def process(self, batch: np.ndarray) -> np.ndarray:
        """float32 ``[B, T]`` -> float32 ``[B, T]`` (zero-padded to the graph's hop, cropped back)."""
        length = batch.shape[-1]
        x = pad_to_valid(np.ascontiguousarray(batch, dtype=np.float32), self.hop_length, self.min_samples)
        if self.spec.export_io == "spec":
            spectrum = stft(x, self.spec.n_fft, self.hop_length)
            enhanced, _ = self._run_spec(spectrum, self.zero_state(x.shape[0]))
            y = istft(enhanced, self.spec.n_fft, self.hop_length)
        else:
            y = self.session.run(None, {self.input_name: x})[0]
        if y.shape[-1] < length:  # the network may return a few samples less; keep timing aligned
            y = np.pad(y, [(0, 0), (0, length - y.shape[-1])])
        return np.asarray(y[:, :length], dtype=np.float32)

    def open_stream(self, batch: int) -> NetStream:
        """``batch`` signals streamed through a graph with state (see :class:`denoise.backends.NetStream`):
        each block's complete STFT frames go through the graph in one call, its state carried to the next."""
        if not self.stateful:
            raise ValueError(
                f"{self.path} has no state inputs: re-export it (`denoise export-onnx`) to stream"
            )
        state = self.zero_state(batch)

        def run(spectrum: np.ndarray) -> np.ndarray:
            nonlocal state
            one_frame = spectrum.shape[2] == 1  # live audio: one 16 ms hop per call
            enhanced, state = self._run_spec(
                spectrum, state, self._one_frame_session(batch) if one_frame else None
            )
            return enhanced

        framer = SpecStream(run, batch, self.spec.n_fft, self.hop_length)
        return FixedDelayStream(
            framer.push,
            framer.finish,
            batch=batch,
            delay=self.spec.stream_delay,
            hop_length=self.hop_length,
            min_samples=self.min_samples,
        )

    def zero_state(self, batch: int) -> list[np.ndarray]:
        """The state before the first frame of ``batch`` signals (empty for a graph without state)."""
        return [np.zeros((batch, *self._state_shapes[name]), np.float32) for name in self.state_names]

    def _run_spec(
        self, spectrum: np.ndarray, state: list[np.ndarray], session: object | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One call of a spectrum graph (``session``: the backend's own by default): (enhanced spectrum,
        state after its frames)."""
        feeds = {self.input_name: spectrum, **dict(zip(self.state_names, state, strict=True))}
        enhanced, *after = (session or self.session).run(None, feeds)
        return enhanced, after

    def _one_frame_session(self, batch: int) -> object:
        """The same graph with batch and frame count pinned: ~20 % less per call, made once per batch size."""
        if batch not in self._one_frame_sessions:
            fixed = {"batch": batch, "frames": 1}
            self._one_frame_sessions[batch] = make_session(self._graph, self._device, self._threads, fixed)
        return self._one_frame_sessions[batch]
