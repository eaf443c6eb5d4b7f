"""ONNX export, INT8 / FP16 quantization and parity reports for FRCRN and GTCRN.

What the exported graphs compute (both with a dynamic batch and time axis):

* FRCRN: ``wav [batch, samples] -> enh [batch, samples']`` at 16 kHz, the conv-STFT/iSTFT **inside** the graph
  (they are plain Conv1d / ConvTranspose1d in the network). ``samples' = (frames - 1) * 320 + 640`` with
  ``frames = (samples - 640) // 320 + 1``; the backend pads inputs to a multiple of 320.
* GTCRN: ``(spec [batch, 257, frames, 2], state0..state15) -> (enh [batch, 257, frames, 2], state0_next..)``,
  ``GTCRN.stream_step`` with its state as graph inputs and outputs: from zero state it is the official network
  (``forward_spec``), with the state carried from call to call it runs a signal in pieces of any number of
  frames (live audio, exact chunking). The STFT/iSTFT stay **outside** the graph, in numpy
  (:mod:`denoise.backends.onnx_backend`): a DFT written as a convolution would double GTCRN's cost, and
  ``torch.istft`` does not export.

Graphs are exported from the networks exactly as the torch backend runs them (``model.optimize_for_inference``)
with one export-only rewrite: every transposed convolution is traced as an equivalent polyphase ``Conv``
(:func:`polyphase_conv_transpose2d`), because ONNX Runtime's CPU ConvTranspose kernel is several times
slower than its Conv kernel (it was ~47 % of FRCRN's ORT time). The legacy TorchScript exporter is used
(opset 17): the dynamo exporter produced a FRCRN graph that outputs NaN.

Every graph carries a metadata record (``metadata_props['denoise']``, JSON; see :class:`OnnxMetadata`) and
passes ``onnx.checker``. Every export and quantization can end with a parity report (:mod:`denoise.parity`).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from denoise.onnx_metadata import EXPORT_VERSION, OnnxMetadata, read_metadata, write_metadata
from denoise_models.atomic import atomic_output

DEFAULT_OPSET = 17


# ------------------------------------------------------------------------------- export-only rewrites


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def polyphase_conv_transpose2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
) -> Tensor:
    """``F.conv_transpose2d`` computed with one ``F.conv2d`` (same output, same arguments).

    Along an axis with stride ``s`` and kernel ``k``, output row ``o' = s*m + r`` (before cropping the
    padding) only receives taps ``k' = r + s*d`` from input rows ``m - d``: each phase ``r`` is an ordinary
    stride-1 convolution with ``ceil(k / s)`` taps. The ``s_h * s_w`` phases are stacked on the output
    channel axis of one convolution, interleaved back and cropped by ``padding``. A stride-1 axis is the
    classic identity "transposed conv = conv with the flipped kernel, padded by ``k - 1 - p``".

    ONNX Runtime's CPU Conv kernel is several times faster than its ConvTranspose kernel, which was ~47 % of
    FRCRN's ORT time. The weight shuffling runs on constants, so the exporter folds it into initializers.
    Arguments it does not cover (groups, dilation, output padding) go to the original function.

    Shapes: ``x [B, C_in, H, W]``, ``weight [C_in, C_out, k_h, k_w]`` -> ``[B, C_out, H_out, W_out]`` with
    ``H_out = (H - 1) * s_h + k_h - 2 p_h`` (likewise W).
    """
    if groups != 1 or _pair(dilation) != (1, 1) or _pair(output_padding) != (0, 0):
        return _ORIGINAL_CONV_TRANSPOSE2D(x, weight, bias, stride, padding, output_padding, groups, dilation)
    (s_h, s_w), (p_h, p_w) = _pair(stride), _pair(padding)
    # Kernel sizes are constants (int() keeps the tracer from recording them as graph arithmetic, where
    # the legacy exporter turns a floor division of negative ints into a truncating Div).
    c_in, c_out, k_h, k_w = (int(v) for v in weight.shape)
    n_h, n_w = (k_h + s_h - 1) // s_h, (k_w + s_w - 1) // s_w  # taps per phase
    if (s_h == 1 and p_h > k_h - 1) or (s_w == 1 and p_w > k_w - 1):
        return _ORIGINAL_CONV_TRANSPOSE2D(x, weight, bias, stride, padding, output_padding, groups, dilation)
    # phase kernels: w[r_h, r_w, :, :, j_h, j_w] = weight[:, :, r_h + s_h (n_h-1-j_h), r_w + s_w (n_w-1-j_w)]
    padded_w = F.pad(weight, (0, s_w * n_w - k_w, 0, s_h * n_h - k_h))  # taps beyond k are zero
    w = padded_w.reshape(c_in, c_out, n_h, s_h, n_w, s_w).flip(2, 4)  # [C_in, C_out, j_h, r_h, j_w, r_w]
    w = w.permute(3, 5, 1, 0, 2, 4).reshape(s_h * s_w * c_out, c_in, n_h, n_w)
    b = None if bias is None else bias.repeat(s_h * s_w)
    # stride-1 axes: pad k - 1 - p (exact output); strided axes: pad n - 1, crop p after interleaving
    pad_h = k_h - 1 - p_h if s_h == 1 else n_h - 1
    pad_w = k_w - 1 - p_w if s_w == 1 else n_w - 1
    y = F.conv2d(F.pad(x, (pad_w, pad_w, pad_h, pad_h)), w, b)  # [B, s_h s_w C_out, H', W']
    if s_h == s_w == 1:
        return y
    batch, _, rows, cols = y.shape
    y = y.reshape(batch, s_h, s_w, c_out, rows, cols).permute(0, 3, 4, 1, 5, 2)
    y = y.reshape(batch, c_out, rows * s_h, cols * s_w)
    h_in, w_in = x.shape[2], x.shape[3]
    if s_h > 1:
        y = y[:, :, p_h : (h_in - 1) * s_h + k_h - p_h]
    if s_w > 1:
        y = y[:, :, :, p_w : (w_in - 1) * s_w + k_w - p_w]
    return y


_ORIGINAL_CONV_TRANSPOSE2D = F.conv_transpose2d


@contextlib.contextmanager
def conv_transpose_as_conv() -> Iterator[None]:
    """Within the block, ``torch.nn.functional.conv_transpose2d`` is :func:`polyphase_conv_transpose2d`.

    Used around tracing so that every transposed conv of a network (whatever module calls it) is exported
    as a Conv; the networks in ``denoise_models/`` stay untouched.
    """
    F.conv_transpose2d = polyphase_conv_transpose2d
    try:
        yield
    finally:
        F.conv_transpose2d = _ORIGINAL_CONV_TRANSPOSE2D


class _StreamStep(nn.Module):
    """GTCRN's ``stream_step`` with its state as batch-first tensors (what the exporter traces).

    ``(spec [B, 257, n, 2], *state) -> (enhanced [B, 257, n, 2], *state after the n frames)``: from zero
    state this is ``forward_spec``; with the state carried from call to call it is the stream.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, spec: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        from denoise_models.gtcrn import GTCRNState

        enhanced, after = self.net.stream_step(spec, GTCRNState.from_batch_first(list(state)))
        return (enhanced, *after.batch_first())


# ------------------------------------------------------------------------------------------ exporting


@dataclass(frozen=True)
class ExportConfig:
    """What to export and where. ``weights``: manifest name, file path, "default", or None (random)."""

    arch: str
    weights: str | None = "default"
    output: Path | None = None  # None: the cache location (see :func:`cached_onnx_path`)
    opset: int = DEFAULT_OPSET
    example_seconds: float = 2.0  # length of the tracing input; any length works afterwards


@dataclass
class ExportResult:
    path: Path
    metadata: OnnxMetadata
    seconds: float  # wall time of the export
    size_bytes: int


def weights_identity(weights: str | Path | None) -> tuple[str, str, Path | None]:
    """``(name, sha256, path)`` of a manifest name or file path; ``("random", "", None)`` for None.

    Resolving a manifest name may copy/download the file into the store (as loading would).
    """
    if weights is None:
        return "random", "", None
    from denoise_models import manifest, resolve_weights
    from denoise_models.weights import sha256_of

    name = str(weights)
    entry = manifest().get(name)
    path = resolve_weights(name, progress=False)
    if entry is not None:  # the manifest's sha256 was verified when the file entered the store
        return name, entry.sha256, path
    return Path(name).name, sha256_of(path), path


def resolved_weights(arch: str, weights: str | None) -> str | None:
    """``weights`` with "default" replaced by the manifest's default name for ``arch``."""
    if weights == "default":
        from denoise_models import default_weights

        return default_weights(arch)
    return weights


def cache_dir() -> Path:
    """Where on-the-fly exports live: ``<weights store>/onnx``."""
    from denoise_models.weights import store_dir

    return store_dir() / "onnx"


def cached_onnx_path(arch: str, weights: str | None, opset: int = DEFAULT_OPSET) -> Path | None:
    """The cache file for ``arch`` + ``weights`` (keyed by the weights' sha256), or None for random weights."""
    _, sha, _ = weights_identity(resolved_weights(arch, weights))
    if not sha:
        return None
    return cache_dir() / f"{arch}-{sha[:16]}-v{EXPORT_VERSION}-opset{opset}.onnx"


def load_network(arch: str, weights: str | None) -> nn.Module:
    """The torch network exactly as the torch backend runs it (fused where available), on CPU."""
    from denoise_models import load_model, optimize_for_inference

    return optimize_for_inference(
        load_model(arch, resolved_weights(arch, weights), device="cpu", progress=False)
    )


def export_onnx(config: ExportConfig) -> ExportResult:
    """Export ``config.arch`` to ONNX (dynamic batch and time), embed metadata, run ``onnx.checker``.

    The file is written atomically (temp file + rename). Returns where it went and its metadata.
    """
    import onnx

    arch = config.arch.lower()
    weights = resolved_weights(arch, config.weights)
    name, sha, _ = weights_identity(weights)
    output = Path(config.output) if config.output else cached_onnx_path(arch, weights, config.opset)
    if output is None:
        raise ValueError("random weights have no cache location: pass an output path")
    started = time.perf_counter()
    net = load_network(arch, weights)
    sr = int(getattr(net, "sample_rate", 16000))
    n = max(int(config.example_seconds * sr), 4 * int(net.hop_length))
    if arch == "frcrn":
        module = net
        n = -(-n // net.hop_length) * net.hop_length
        example = (torch.randn(1, n) * 0.1,)
        names, dyn = (
            (["wav"], ["enh"]),
            {"wav": {0: "batch", 1: "samples"}, "enh": {0: "batch", 1: "samples_out"}},
        )
        framing = dict(
            n_fft=net.win_length, io="wav",
            stft="inside the graph: conv-STFT/iSTFT, sqrt periodic Hann 640, hop 320, no centring",
        )  # fmt: skip
    elif arch == "gtcrn":
        module = _StreamStep(net).eval()
        zero_state = net.stream_init(1).batch_first()
        example = (net.stft(torch.randn(1, n) * 0.1), *zero_state)
        state = tuple(f"state{i}" for i in range(len(zero_state)))
        names = (["spec", *state], ["enh", *(f"{s}_next" for s in state)])
        dyn = {name: {0: "batch"} for name in names[0] + names[1]}
        dyn["spec"], dyn["enh"] = {0: "batch", 2: "frames"}, {0: "batch", 2: "frames"}
        framing = dict(
            n_fft=net.n_fft, io="spec", state=state,
            stft="outside the graph (numpy): centred, reflect padding, sqrt periodic Hann 512, hop 256",
        )  # fmt: skip
    else:
        raise ValueError(f"unknown architecture {arch!r}: export 'frcrn' or 'gtcrn'")
    meta = OnnxMetadata(
        model=arch, weights=name, weights_sha256=sha, sample_rate=sr, win_length=net.win_length,
        hop_length=net.hop_length, min_samples=net.min_samples, opset=config.opset,
        exporter=f"torch.onnx legacy TorchScript exporter (torch {torch.__version__})", **framing,
    )  # fmt: skip
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), conv_transpose_as_conv():
        warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic are expected and harmless
        torch.onnx.export(
            module, example, buffer, input_names=names[0], output_names=names[1], dynamic_axes=dyn,
            opset_version=config.opset, do_constant_folding=True, dynamo=False,
        )  # fmt: skip
    model = onnx.load_from_string(buffer.getvalue())
    write_metadata(model, meta)
    onnx.checker.check_model(model, full_check=True)
    _save_atomic(model, output)
    return ExportResult(output, meta, time.perf_counter() - started, output.stat().st_size)


def _save_atomic(model: object, output: Path) -> None:
    import onnx

    with atomic_output(output) as tmp:
        onnx.save(model, str(tmp))


def ensure_onnx(arch: str, weights: str | None) -> Path:
    """An FP32 export of ``arch`` + ``weights``: the cached one if present, else exported now.

    Random weights (None) are exported into a fresh temporary directory (tests only).
    """
    path = cached_onnx_path(arch, weights)
    if path is None:
        tmp = Path(tempfile.mkdtemp(prefix=f"denoise-{arch}-onnx-"))
        return export_onnx(ExportConfig(arch, weights, tmp / f"{arch}-random.onnx")).path
    if not path.is_file():
        export_onnx(ExportConfig(arch, weights, path))
    return path


# ----------------------------------------------------------------------------------------- quantizing


def quantize_onnx(src: str | Path, dst: str | Path, mode: str = "int8") -> Path:
    """Quantize an exported graph; the metadata is carried over with the new precision.

    Modes:
        ``int8``: dynamic INT8 (``onnxruntime.quantization.quantize_dynamic``): MatMul/Gemm weights stored
            as signed 7-bit (``reduce_range``) per output channel, activations quantized per call (except
            GTCRN's ERB filterbanks, see :func:`_int8_excluded`). 7-bit weights because x86 CPUs without
            VNNI (AVX2, AVX-512 without VNNI) sum u8*s8 pairs in saturating int16: with 8-bit weights the
            same graph measured 14 dB (FRCRN test weights) / 26 dB (GTCRN) SNR against FP32 on an AVX2 CPU
            (any onnxruntime 1.23-1.32), with 7-bit 33 dB / 46 dB. Conv is left in FP32: ORT's dynamic
            ``ConvInteger`` kernel measured 2x *slower* than its FP32 Conv on FRCRN, and less accurate.
        ``fp16``: weights and activations in float16 (inputs/outputs stay float32) - for the CUDA EP;
            on CPU ORT mostly casts back to float32, so it is not faster there.
    """
    import onnx

    src, dst = Path(src), Path(dst)
    meta = read_metadata(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process

        with tempfile.TemporaryDirectory() as tmp:
            pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "q.onnx"
            with contextlib.redirect_stderr(io.StringIO()), _quiet_logging():
                # shape inference + graph cleanup first, so that every MatMul/Gemm is seen with its shapes
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                quantize_dynamic(
                    pre, out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                    per_channel=True, reduce_range=True,  # no int16 saturation on non-VNNI CPUs (docstring)
                    nodes_to_exclude=_int8_excluded(pre), extra_options={"MatMulConstBOnly": True},
                )  # fmt: skip
            model = onnx.load(str(out))
        precision = "int8-dynamic"
    elif mode == "fp16":
        model = _to_fp16(onnx.load(str(src)))
        precision = "fp16"
    else:
        raise ValueError(f"unknown quantization mode {mode!r}: use 'int8' or 'fp16'")
    write_metadata(model, replace(meta, precision=precision))
    onnx.checker.check_model(model)
    _save_atomic(model, dst)
    return dst


def _int8_excluded(path: Path) -> list[str]:
    """MatMul nodes kept in FP32: GTCRN's ERB band merge/split (``erb_fc``/``ierb_fc``).

    Their input is the raw spectrum (magnitude, real, imaginary) whose dynamic range one 8-bit scale per
    tensor cannot hold: quantized, quiet bins collapse to zero (measured: mean PESQ -0.052 over the 56
    VoiceBank-DEMAND pairs, -0.5 on the worst). They are fixed filterbanks and cost almost nothing.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "MatMul" and "erb_fc" in n.name]


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """Silence onnxruntime.quantization's per-tensor warnings (root logger) for the duration."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _to_fp16(model: object) -> object:
    """Float16 weights and activations, float32 graph inputs/outputs (``onnxruntime.transformers.float16``)."""
    from onnxruntime.transformers import float16

    converted = float16.convert_float_to_float16(model, keep_io_types=True)
    _topological_sort(converted.graph)  # the converter appends its input casts at the end of the node list
    return converted


def _topological_sort(graph: object) -> None:
    """Reorder ``graph.node`` so that every node comes after the producers of its inputs (stable)."""
    nodes = list(graph.node)  # type: ignore[attr-defined]
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}  # type: ignore[attr-defined]
    ordered, pending = [], nodes
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError("graph has a cycle or a dangling input; cannot sort it")
        pending = rest
    del graph.node[:]  # type: ignore[attr-defined]
    graph.node.extend(ordered)  # type: ignore[attr-defined]
