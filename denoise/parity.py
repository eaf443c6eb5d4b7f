"""Parity reports: an exported (or quantized) graph against the torch network, through the same engine.

On real speech the two outputs are compared sample by sample (max abs error, SI-SNR); on a few
VoiceBank-DEMAND pairs their quality is scored (PESQ-WB, DNSMOS OVRL). Paths to that data are given by the
caller (``shared``: see :func:`denoise.tutorial.shared_dir`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from denoise.export import resolved_weights, weights_identity
from denoise.onnx_metadata import read_metadata

# Real speech for parity checks and a few VoiceBank-DEMAND pairs for the quality check (paths relative
# to the shared data folder; never copied into the repository).
PARITY_SPEECH = "audio/noisy/modelscope_frcrn__speech_with_noise.wav"
QUALITY_PAIRS = ("p232_005", "p232_013", "p257_008", "p257_022")


@dataclass
class QualityRow:
    """One eval pair: PESQ-WB and DNSMOS OVRL of the torch output and of the ONNX output."""

    name: str
    pesq_torch: float
    pesq_onnx: float
    dnsmos_torch: float
    dnsmos_onnx: float


@dataclass
class ParityReport:
    """ONNX vs torch on the same input, same weights, through the same engine.

    ``max_abs_error``: largest sample difference (full scale = 1.0) on real speech; ``si_snr_db``: SI-SNR of
    the ONNX output taking the torch output as the reference (higher is closer; >= 60 dB is float noise).
    """

    onnx_path: str
    precision: str
    speech_file: str
    seconds_of_audio: float
    max_abs_error: float
    si_snr_db: float
    quality: list[QualityRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def pesq_change(self) -> float:
        """Mean PESQ(ONNX) - PESQ(torch) over the quality pairs (NaN when none were scored)."""
        rows = [r for r in self.quality if math.isfinite(r.pesq_onnx) and math.isfinite(r.pesq_torch)]
        return float(np.mean([r.pesq_onnx - r.pesq_torch for r in rows])) if rows else math.nan

    @property
    def dnsmos_change(self) -> float:
        rows = [r for r in self.quality if math.isfinite(r.dnsmos_onnx) and math.isfinite(r.dnsmos_torch)]
        return float(np.mean([r.dnsmos_onnx - r.dnsmos_torch for r in rows])) if rows else math.nan

    def as_text(self) -> str:
        lines = [
            f"parity of {self.onnx_path} ({self.precision}) against torch",
            f"  real speech: {self.speech_file} ({self.seconds_of_audio:.1f} s)",
            f"  max abs error {self.max_abs_error:.3g}   SI-SNR vs torch {self.si_snr_db:.1f} dB",
        ]
        if self.quality:
            lines.append(
                "  quality on VoiceBank-DEMAND pairs   PESQ torch -> onnx   DNSMOS OVRL torch -> onnx"
            )
            for r in self.quality:
                lines.append(
                    f"    {r.name:<10} {r.pesq_torch:5.3f} -> {r.pesq_onnx:5.3f}      "
                    f"{r.dnsmos_torch:5.3f} -> {r.dnsmos_onnx:5.3f}"
                )
            lines.append(
                f"  mean change: PESQ {self.pesq_change:+.3f}   DNSMOS OVRL {self.dnsmos_change:+.3f}"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.update(pesq_change=self.pesq_change, dnsmos_change=self.dnsmos_change)
        return d


def parity_report(
    onnx_path: str | Path,
    weights: str | None = "default",
    *,
    shared: Path,
    speech: Path | None = None,
    quality_pairs: Sequence[str] | None = QUALITY_PAIRS,
    threads: int | None = None,
) -> ParityReport:
    """Compare an exported graph with the torch network through the same :class:`Denoiser` engine.

    Args:
        onnx_path: graph from :func:`export_onnx` / :func:`quantize_onnx` (its metadata names the model).
        weights: the torch side's weights; must be those the graph was exported from.
        shared: the reference data folder (:func:`denoise.tutorial.shared_dir`): speech and VoiceBank-DEMAND.
        speech: real speech for the numerical comparison (default: a shared noisy clip).
        quality_pairs: VoiceBank-DEMAND stems scored with PESQ-WB and DNSMOS (None or empty: skip; only
            meaningful for trained weights).
    """
    from denoise.audio import read_audio
    from denoise.engine import Denoiser, DenoiserConfig
    from denoise.metrics import si_snr

    meta = read_metadata(onnx_path)
    speech = speech or shared / PARITY_SPEECH
    notes: list[str] = []
    if meta.weights_sha256:
        _, sha, _ = weights_identity(resolved_weights(meta.model, weights))
        if sha != meta.weights_sha256:
            notes.append(f"weights differ from the graph's ({sha[:12]} vs {meta.weights_sha256[:12]})")
    common = dict(model=meta.model, weights=weights, device="cpu", threads=threads)
    torch_dn = Denoiser(DenoiserConfig(backend="torch", **common))
    onnx_dn = Denoiser(DenoiserConfig(backend="onnx", onnx_path=str(onnx_path), **common))
    audio = read_audio(speech)
    x = audio.samples[:1]
    y_t = torch_dn.enhance(x, audio.sample_rate)[0]
    y_o = onnx_dn.enhance(x, audio.sample_rate)[0]
    report = ParityReport(
        onnx_path=str(onnx_path), precision=meta.precision, speech_file=str(speech),
        seconds_of_audio=x.shape[1] / audio.sample_rate, max_abs_error=float(np.max(np.abs(y_t - y_o))),
        si_snr_db=si_snr(estimate=y_o, reference=y_t), notes=notes,
    )  # fmt: skip
    if quality_pairs:
        report.quality = _quality_rows(torch_dn, onnx_dn, shared, quality_pairs)
    return report


def _quality_rows(torch_dn, onnx_dn, shared: Path, stems: Sequence[str]) -> list[QualityRow]:
    from denoise.audio import read_audio
    from denoise.metrics import MetricUnavailable, dnsmos, pesq_wb

    rows = []
    for stem in stems:
        noisy, clean = shared / "eval/vbd/noisy" / f"{stem}.wav", shared / "eval/vbd/clean" / f"{stem}.wav"
        if not (noisy.is_file() and clean.is_file()):
            continue
        a, c = read_audio(noisy), read_audio(clean)
        outs = [dn.enhance(a.samples[:1], a.sample_rate)[0] for dn in (torch_dn, onnx_dn)]
        scores = []
        for y in outs:
            try:
                p = pesq_wb(c.samples[0], y, c.sample_rate, a.sample_rate)
            except MetricUnavailable:
                p = math.nan
            scores.append((p, dnsmos(y, a.sample_rate).ovrl))
        rows.append(QualityRow(stem, scores[0][0], scores[1][0], scores[0][1], scores[1][1]))
    return rows
