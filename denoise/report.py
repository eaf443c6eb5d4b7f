"""Figures and a Markdown report for an evaluation: before/after spectrograms, per-file improvement.

The report takes scores (:mod:`denoise.scores`) and signals; it never runs or imports the evaluator, which
hands it a function that returns the signals of one example file. Figures come from :mod:`denoise.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from denoise.plots import figure, log_spectrogram, save_png, spectrogram_figure
from denoise.scores import EvalResult, FileResult, summary_table
from denoise_models.atomic import atomic_output

# The signals of one example file, by panel name ("noisy", the system's label, "clean reference"), and
# the rate they are at (the noisy file's own: a 48 kHz file shows its full band).
ExampleSignals = Callable[[FileResult], tuple[dict[str, np.ndarray], int]]

__all__ = [
    "IMPROVEMENT_PLOTS", "ExampleSignals", "comparison_table", "improvement_png", "improvement_table",
    "log_spectrogram", "pick_examples", "write_report",
]  # fmt: skip

# Improvement columns plotted per file, in order of preference, with axis labels.
IMPROVEMENT_PLOTS: dict[str, str] = {
    "delta_pesq": "Δ PESQ-WB",
    "delta_estoi": "Δ eSTOI",
    "si_snri": "SI-SNRi (dB)",
    "delta_dnsmos_ovrl": "Δ DNSMOS OVRL",
}


def improvement_png(path: Path, results: list[FileResult], label: str) -> Path | None:
    """Per-file improvement bars (sorted) for each available column of :data:`IMPROVEMENT_PLOTS`."""
    ok = [r for r in results if r.ok]
    columns = [c for c in IMPROVEMENT_PLOTS if any(math.isfinite(r.scores.get(c, float("nan"))) for r in ok)]
    if not columns:
        return None
    fig = figure(figsize=(4.2 * len(columns), 3.6))
    axes = fig.subplots(1, len(columns), squeeze=False)
    for ax, col in zip(axes[0], columns, strict=True):
        values = np.sort([v for r in ok if math.isfinite(v := r.scores.get(col, float("nan")))])
        colours = ["tab:green" if v >= 0 else "tab:red" for v in values]
        ax.bar(np.arange(len(values)), values, color=colours, width=1.0)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.axhline(float(np.mean(values)), color="tab:blue", linestyle="--", linewidth=1, label="mean")
        ax.set_title(IMPROVEMENT_PLOTS[col], fontsize=10)
        ax.set_xlabel(f"files, sorted (n={len(values)})")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Per-file improvement: {label}", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def pick_examples(results: list[FileResult], count: int) -> list[FileResult]:
    """Up to ``count`` files spanning the range of improvement: worst, median, best, then evenly between.

    The ranking column is the first available of Δ PESQ, SI-SNRi, Δ DNSMOS OVRL.
    """
    ok = [r for r in results if r.ok]
    if count <= 0 or not ok:
        return []
    for col in ("delta_pesq", "si_snri", "delta_dnsmos_ovrl"):
        ranked = [r for r in ok if math.isfinite(r.scores.get(col, float("nan")))]
        if ranked:
            ranked.sort(key=lambda r, c=col: r.scores[c])
            break
    else:
        ranked = ok
    if len(ranked) <= count:
        return ranked
    if count == 1:
        return [ranked[len(ranked) // 2]]
    idx = sorted({round(i * (len(ranked) - 1) / (count - 1)) for i in range(count)})
    return [ranked[i] for i in idx]


def _caption(row: FileResult) -> str:
    parts = []
    for col, name in (("delta_pesq", "ΔPESQ"), ("si_snri", "SI-SNRi"), ("delta_dnsmos_ovrl", "ΔOVRL")):
        v = row.scores.get(col, float("nan"))
        if math.isfinite(v):
            parts.append(f"{name} {v:+.2f}")
    return ", ".join(parts)


def write_report(result: EvalResult, example_signals: ExampleSignals | None = None) -> Path:
    """Write ``report.md`` and its ``figures/`` into the evaluation's output folder; returns the .md path.

    ``example_signals`` returns the signals of one file for its spectrogram (None: no example figures).
    """
    cfg = result.config
    out = cfg.out_dir
    figures = out / "figures"
    lines = [
        f"# Evaluation: {cfg.label}",
        "",
        f"- noisy: `{cfg.noisy_dir}`",
        f"- clean references: `{cfg.clean_dir}`"
        if cfg.clean_dir
        else "- clean references: none (DNSMOS only)",
        f"- enhanced: `{cfg.enhanced_dir}`"
        if cfg.enhanced_dir
        else f"- enhanced: model run by the engine ({cfg.label})",
        f"- files: {len(result.results)} scored {len(result.results) - len(result.failed)}, "
        f"failed {len(result.failed)}" + (f", excluded: {', '.join(cfg.exclude)}" if cfg.exclude else ""),
        f"- time: {result.seconds:.1f} s",
        "",
        "All metrics at 16 kHz on channel 0. PESQ = wide-band P.862.2; DNSMOS = P.835 SIG/BAK/OVRL and P.808.",
        "Files above 16 kHz with a clean reference also get the full-band metrics at their own rate: "
        "`fb_si_sdr` (whole band), `lb_si_sdr` (0-8 kHz), and of the 8 kHz-Nyquist band `hf_segsnr`, "
        "`hf_lsd` (log-spectral distance, dB) and `hf_energy_db` (output vs clean; 0 is right).",
        "`delta_*` / `si_snri` = enhanced − noisy per file; the 95 % CI is Student-t over files.",
        "",
        "## Summary",
        "",
        summary_table(result.summary),
        "",
    ]
    plot = improvement_png(figures / "improvement.png", result.results, cfg.label)
    if plot is not None:
        lines += [
            "## Per-file improvement",
            "",
            f"![per-file improvement]({plot.relative_to(out).as_posix()})",
            "",
        ]
    examples = pick_examples(result.results, cfg.report_examples) if example_signals is not None else []
    if examples:
        lines += ["## Examples (worst, median, best)", ""]
    for row in examples:
        try:
            signals, rate = example_signals(row)
        except (OSError, ValueError, RuntimeError) as exc:
            lines += [f"- {row.file}: no spectrogram ({exc})"]
            continue
        fig = spectrogram_figure(signals, rate, f"{row.file}  ({_caption(row)})")
        png = save_png(fig, figures / f"{Path(row.file).stem}.png")
        lines += [
            f"### {row.file}",
            "",
            _caption(row),
            "",
            f"![{row.file}]({png.relative_to(out).as_posix()})",
            "",
        ]
    if result.failed:
        lines += ["## Skipped files", ""] + [f"- `{r.file}`: {r.error}" for r in result.failed] + [""]
    noted = [r for r in result.results if r.ok and r.notes]
    if noted:
        lines += ["## Notes", ""] + [f"- `{r.file}`: {'; '.join(r.notes)}" for r in noted] + [""]
    lines += ["Per-file scores: [per_file.csv](per_file.csv); summary: [summary.csv](summary.csv).", ""]
    path = out / "report.md"
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    return path


# Columns of the system comparison table: (metric without prefix, header, decimals).
COMPARISON_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("pesq", "PESQ-WB", 2),
    ("stoi", "STOI", 3),
    ("estoi", "eSTOI", 3),
    ("si_snr", "SI-SNR dB", 2),
    ("dnsmos_sig", "SIG", 2),
    ("dnsmos_bak", "BAK", 2),
    ("dnsmos_ovrl", "OVRL", 2),
    ("dnsmos_p808", "P.808", 2),
)


def comparison_table(runs: dict[str, Path], ci: bool = True) -> str:
    """Markdown table comparing systems, one row per evaluation output folder (``label -> out_dir``).

    The first row is the noisy input (taken from the first run; every run of one data set scores the
    same noisy files). Cells are ``mean ± 95 % CI half-width`` read from each ``summary.json``; the
    ``n`` columns give the pairs with a reference and the files scored by DNSMOS.
    """
    import json

    def cell(stats: dict[str, object] | None, decimals: int) -> str:
        if not stats or stats.get("mean") is None:
            return "–"
        text = f"{stats['mean']:.{decimals}f}"
        if ci and stats.get("ci95") is not None:
            text += f" ± {stats['ci95']:.{decimals}f}"
        return text

    header = ["system", "n pairs", *[h for _, h, _ in COMPARISON_COLUMNS[:4]], "n files"]
    header += [h for _, h, _ in COMPARISON_COLUMNS[4:]]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    summaries = {label: json.loads((Path(d) / "summary.json").read_text()) for label, d in runs.items()}
    rows = []
    if summaries:
        rows.append(("noisy input", next(iter(summaries.values())), "noisy"))
    rows += [(label, s, "enhanced") for label, s in summaries.items()]
    for label, summary, prefix in rows:
        m = summary["metrics"]
        n_pairs = m.get(f"{prefix}_pesq", {}).get("n", 0)
        n_files = m.get(f"{prefix}_dnsmos_ovrl", {}).get("n", 0)
        cells = [cell(m.get(f"{prefix}_{k}"), d) for k, _, d in COMPARISON_COLUMNS]
        lines.append("| " + " | ".join([label, str(n_pairs), *cells[:4], str(n_files), *cells[4:]]) + " |")
    return "\n".join(lines)


IMPROVEMENT_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("delta_pesq", "Δ PESQ-WB", 2),
    ("delta_stoi", "Δ STOI", 3),
    ("delta_estoi", "Δ eSTOI", 3),
    ("si_snri", "SI-SNRi dB", 2),
    ("delta_dnsmos_sig", "Δ SIG", 2),
    ("delta_dnsmos_bak", "Δ BAK", 2),
    ("delta_dnsmos_ovrl", "Δ OVRL", 2),
)


def improvement_table(runs: dict[str, Path]) -> str:
    """Markdown table of per-file improvements (enhanced − noisy), ``mean ± 95 % CI`` from each summary.

    The interval is over the paired per-file differences, so it is narrower than the difference of two
    independent intervals and is the one to use when asking "is A better than B on these files".
    """
    import json

    header = ["system", *[h for _, h, _ in IMPROVEMENT_COLUMNS]]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for label, folder in runs.items():
        m = json.loads((Path(folder) / "summary.json").read_text())["metrics"]
        cells = []
        for key, _, d in IMPROVEMENT_COLUMNS:
            s = m.get(key)
            if not s or s.get("mean") is None:
                cells.append("–")
            else:
                cells.append(
                    f"{s['mean']:+.{d}f}" + (f" ± {s['ci95']:.{d}f}" if s.get("ci95") is not None else "")
                )
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)
