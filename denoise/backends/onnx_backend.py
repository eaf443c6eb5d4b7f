"""ONNX Runtime backend: an exported FRCRN or GTCRN graph on CPU, or CUDA when present.

The engine (:class:`denoise.engine.Denoiser`) does chunking, levels, resampling and I/O for every backend;
this class only runs the graph on ``[B, T]`` batches. What the graph expects is read from its metadata
(:class:`denoise.export.OnnxMetadata`): ``io="wav"`` graphs (FRCRN) take waveforms, ``io="spec"`` graphs
(GTCRN) take the STFT computed here in numpy (:func:`stft` / :func:`istft`, the framing of ``torch.stft``
with ``center=True``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from denoise.backends import pad_to_valid

# --------------------------------------------------------------------------------- numpy STFT (GTCRN)


def sqrt_hann(n: int) -> np.ndarray:
    """Square root of the periodic Hann window of ``n`` samples (float32), as GTCRN uses."""
    return np.sqrt(0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def stft(wav: np.ndarray, n_fft: int = 512, hop: int = 256) -> np.ndarray:
    """``torch.stft(center=True, pad_mode="reflect", window=sqrt_hann)`` in numpy.

    Args:
        wav: float32 ``[B, samples]``, ``samples > n_fft // 2``.
    Returns:
        float32 ``[B, n_fft // 2 + 1, 1 + samples // hop, 2]`` (real, imaginary), GTCRN's input layout.
    """
    padded = np.pad(wav, [(0, 0), (n_fft // 2, n_fft // 2)], mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]  # [B, F, n_fft]
    spec = np.fft.rfft(frames * sqrt_hann(n_fft), axis=-1)  # [B, frames, bins]
    out = np.stack([spec.real, spec.imag], axis=-1).astype(np.float32)  # [B, frames, bins, 2]
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3))


def overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    """``[B, n_frames, n]`` (``n`` a multiple of ``hop``) -> ``[B, (n_frames - 1) * hop + n]``."""
    b, count, n = frames.shape
    parts = n // hop
    out = np.zeros((b, count + parts - 1, hop), dtype=np.float64)
    for p in range(parts):
        out[:, p : p + count] += frames[:, :, p * hop : (p + 1) * hop]
    return out.reshape(b, -1)


def istft(spec: np.ndarray, n_fft: int = 512, hop: int = 256) -> np.ndarray:
    """Inverse of :func:`stft` like ``torch.istft(center=True)`` without ``length``.

    ``[B, bins, frames, 2]`` -> float32 ``[B, (frames - 1) * hop]`` (window-normalised overlap-add, the
    centring padding removed).
    """
    window = sqrt_hann(n_fft).astype(np.float64)
    z = spec[..., 0].astype(np.float64) + 1j * spec[..., 1]  # [B, bins, frames]
    frames = np.fft.irfft(z.transpose(0, 2, 1), n=n_fft, axis=-1) * window  # [B, frames, n_fft]
    wav = overlap_add(frames, hop)
    envelope = overlap_add(np.broadcast_to(window**2, (1, frames.shape[1], n_fft)), hop)[0]
    half = n_fft // 2
    return (wav[:, half:-half] / envelope[half:-half]).astype(np.float32)


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
        weights: used only when ``onnx_path`` is None: the graph is then taken from the export cache
            (keyed by the weights' sha256) or exported there now.
        onnx_path: an exported graph (FP32, INT8 or FP16); None: see ``weights``.
        device: "auto" (CUDA EP when available), "cpu", "cuda", "cuda:N".
        threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
    """

    def __init__(
        self,
        arch: str,
        weights: str | Path | None = "default",
        onnx_path: str | Path | None = None,
        device: str = "auto",
        threads: int | None = None,
    ) -> None:
        from denoise.export import ensure_onnx, read_metadata

        self.arch = arch.lower()
        path = (
            Path(onnx_path)
            if onnx_path
            else ensure_onnx(self.arch, None if weights is None else str(weights))
        )
        if not path.is_file():
            raise FileNotFoundError(f"ONNX graph {path} does not exist; create it with `denoise export-onnx`")
        self.meta = read_metadata(path)
        if self.meta.model != self.arch:
            raise ValueError(f"{path} is a {self.meta.model!r} graph, not {self.arch!r}")
        self.path = path
        providers = select_providers(device)
        if self.meta.precision == "fp16" and "CUDAExecutionProvider" not in str(providers):
            # onnxruntime's CPU EP has few float16 kernels; loading such a graph can even crash the process
            raise RuntimeError(f"{path} is an FP16 graph for the CUDA EP; on CPU use the FP32 or INT8 export")
        self.session = make_session(path, device, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.sample_rate = self.meta.sample_rate
        self.hop_length = self.meta.hop_length
        self.min_samples = self.meta.min_samples
        self.is_gpu = self.session.get_providers()[0] == "CUDAExecutionProvider"
        where = "cuda" if self.is_gpu else "cpu"
        self.name = f"onnx:{where}" + ("" if self.meta.precision == "fp32" else f":{self.meta.precision}")

    def process(self, batch: np.ndarray) -> np.ndarray:
        """float32 ``[B, T]`` -> float32 ``[B, T]`` (zero-padded to the graph's hop, cropped back)."""
        length = batch.shape[-1]
        x = pad_to_valid(np.ascontiguousarray(batch, dtype=np.float32), self.hop_length, self.min_samples)
        if self.meta.io == "spec":
            spec = stft(x, self.meta.n_fft, self.hop_length)
            enh = self.session.run(None, {self.input_name: spec})[0]
            y = istft(enh, self.meta.n_fft, self.hop_length)
        else:
            y = self.session.run(None, {self.input_name: x})[0]
        if y.shape[-1] < length:  # the network may return a few samples less; keep timing aligned
            y = np.pad(y, [(0, 0), (0, length - y.shape[-1])])
        return np.asarray(y[:, :length], dtype=np.float32)
