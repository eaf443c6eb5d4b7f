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

from denoise.backends import pad_to_valid
from denoise.onnx_metadata import read_metadata
from denoise.stft import istft, sqrt_hann, stft

# sqrt_hann is defined in denoise.stft; gtcrn_stream still imports it from here (owner: switch to denoise.stft)
__all__ = ["OnnxBackend", "make_session", "select_providers", "sqrt_hann"]
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


def make_session(path: str | Path, device: str = "auto", threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` with full graph optimisation and ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # keep ORT's warnings about unused initializers off the user's console
    return ort.InferenceSession(str(path), options, providers=select_providers(device))


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
        self.input_name = self.session.get_inputs()[0].name
        self.sample_rate = self.spec.sample_rate
        self.hop_length = self.spec.hop_length
        self.min_samples = self.spec.min_samples
        self.is_gpu = self.session.get_providers()[0] == "CUDAExecutionProvider"
        # "onnx:cuda" / "onnx:cpu" (+ precision): what the CLI shows
        self.name = f"onnx:{'cuda' if self.is_gpu else 'cpu'}" + (
            "" if self.meta.precision == "fp32" else f":{self.meta.precision}"
        )
        self.stateful = False  # an exported graph holds no state between calls

    def process(self, batch: np.ndarray) -> np.ndarray:
        """float32 ``[B, T]`` -> float32 ``[B, T]`` (zero-padded to the graph's hop, cropped back)."""
        length = batch.shape[-1]
        x = pad_to_valid(np.ascontiguousarray(batch, dtype=np.float32), self.hop_length, self.min_samples)
        if self.spec.export_io == "spec":
            spectrum = stft(x, self.spec.n_fft, self.hop_length)
            enhanced = self.session.run(None, {self.input_name: spectrum})[0]
            y = istft(enhanced, self.spec.n_fft, self.hop_length)
        else:
            y = self.session.run(None, {self.input_name: x})[0]
        if y.shape[-1] < length:  # the network may return a few samples less; keep timing aligned
            y = np.pad(y, [(0, 0), (0, length - y.shape[-1])])
        return np.asarray(y[:, :length], dtype=np.float32)
