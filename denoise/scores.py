"""The data of an evaluation: its config, per-file scores, summaries with 95 % CI, and their tables.

Shared by the evaluator (:mod:`denoise.evaluate`, which computes them) and the report
(:mod:`denoise.report`, which draws them); neither imports the other. Every table is written through
:func:`denoise_models.atomic.atomic_output`, so a killed run never leaves half a CSV.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from denoise import metrics
from denoise.metrics_fullband import fullband_columns
from denoise_models.atomic import atomic_output


@dataclass
class EvalConfig:
    """What to evaluate and where the results go."""

    noisy_dir: Path
    out_dir: Path
    clean_dir: Path | None = None
    enhanced_dir: Path | None = None  # score these files instead of running a model
    label: str = "enhanced"  # name of the system under test, shown in the report
    exclude: tuple[str, ...] = ()  # noisy stems to leave out
    dnsmos: bool = True  # DNSMOS costs ~0.1 s per second of audio per signal on this CPU
    save_enhanced: bool = False  # keep the model's outputs as out_dir/enhanced/<name>.wav
    report_examples: int = 3  # spectrogram PNGs for the worst, median and best files
    report: bool = True
    progress: bool = True
    limit: int | None = None  # score only the first N pairs (smoke runs)

    def __post_init__(self) -> None:
        self.noisy_dir = Path(self.noisy_dir)
        self.out_dir = Path(self.out_dir)
        self.clean_dir = Path(self.clean_dir) if self.clean_dir is not None else None
        self.enhanced_dir = Path(self.enhanced_dir) if self.enhanced_dir is not None else None
        self.exclude = tuple(self.exclude)


@dataclass
class FileResult:
    """Scores of one file. Metric keys: ``noisy_<m>``, ``enhanced_<m>``, ``delta_<m>`` and ``si_snri``."""

    file: str
    clean_file: str = ""
    duration_s: float = float("nan")  # of the noisy input
    sample_rate: int = 0  # of the noisy input, Hz
    scores: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str = ""  # non-empty: the file was skipped

    @property
    def ok(self) -> bool:
        return not self.error


def metric_columns(intrusive: bool = True, dnsmos: bool = True) -> list[str]:
    """The score columns of the CSV, in order: noisy, enhanced, then their differences."""
    names = [m for m in metrics.INTRUSIVE_METRICS if intrusive] + [
        m for m in metrics.DNSMOS_METRICS if dnsmos
    ]
    cols = [f"noisy_{m}" for m in names] + [f"enhanced_{m}" for m in names]
    cols += ["si_snri" if m == "si_snr" else f"delta_{m}" for m in names]
    return cols


def score_columns() -> list[str]:
    """Every score column a result can have: the 16 kHz metrics, then the full-band ones (> 16 kHz files)."""
    return metric_columns() + fullband_columns()


@dataclass(frozen=True)
class MetricSummary:
    """Mean of one column over the files where it is defined, with a Student-t 95 % confidence interval."""

    metric: str
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1)
    ci95: float  # half-width: the interval is mean ± ci95 (NaN for n < 2)

    @property
    def low(self) -> float:
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        return self.mean + self.ci95


def summarize_column(name: str, values: Iterable[float]) -> MetricSummary:
    """Mean and 95 % CI (t-distribution, n-1 dof) of the finite values; NaN/inf are left out."""
    from scipy import stats  # pystoi already depends on scipy

    arr = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(arr)
    if n == 0:
        return MetricSummary(name, 0, float("nan"), float("nan"), float("nan"))
    mean = float(arr.mean())
    if n < 2:
        return MetricSummary(name, 1, mean, float("nan"), float("nan"))
    std = float(arr.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))
    return MetricSummary(name, n, mean, std, half)


def summarize(results: list[FileResult]) -> list[MetricSummary]:
    """One :class:`MetricSummary` per score column present in the successful results."""
    ok = [r for r in results if r.ok]
    columns = [c for c in score_columns() if any(c in r.scores for r in ok)]
    return [summarize_column(c, (r.scores.get(c, float("nan")) for r in ok)) for c in columns]


@dataclass
class EvalResult:
    """Everything an evaluation produced; ``paths`` maps ``csv``/``summary_csv``/``summary_json``/``report``."""

    config: EvalConfig
    results: list[FileResult]
    summary: list[MetricSummary]
    paths: dict[str, Path]
    seconds: float

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if not r.ok]

    def mean(self, column: str) -> float:
        return next((s.mean for s in self.summary if s.metric == column), float("nan"))


def _fmt(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def write_csv(path: Path, results: list[FileResult]) -> Path:
    """Per-file table: file, clean_file, duration_s, sample_rate, every score column, notes, error."""
    columns = [c for c in score_columns() if any(c in r.scores for r in results)]
    with atomic_output(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "clean_file", "duration_s", "sample_rate", *columns, "notes", "error"])
        for r in results:
            writer.writerow(
                [r.file, r.clean_file, _fmt(r.duration_s), r.sample_rate or ""]
                + [_fmt(r.scores.get(c, float("nan"))) for c in columns]
                + ["; ".join(r.notes), r.error]
            )
    return path


def read_csv(path: str | Path) -> list[FileResult]:
    """Read back a per-file CSV written by :func:`write_csv` (e.g. to re-plot or compare systems)."""
    out = []
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            fixed = {"file", "clean_file", "duration_s", "sample_rate", "notes", "error"}
            scores = {k: float(v) if v else float("nan") for k, v in row.items() if k not in fixed}
            out.append(
                FileResult(
                    file=row["file"],
                    clean_file=row["clean_file"],
                    duration_s=float(row["duration_s"]) if row["duration_s"] else float("nan"),
                    sample_rate=int(row["sample_rate"]) if row["sample_rate"] else 0,
                    scores=scores,
                    notes=[n for n in row["notes"].split("; ") if n],
                    error=row["error"],
                )
            )
    return out


def write_summary(out_dir: Path, summary: list[MetricSummary], info: dict[str, object]) -> tuple[Path, Path]:
    """``summary.csv`` (metric, n, mean, std, ci95, low, high) and ``summary.json`` (same + run info)."""
    csv_path, json_path = out_dir / "summary.csv", out_dir / "summary.json"
    with atomic_output(csv_path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["metric", "n", "mean", "std", "ci95", "low", "high"])
        for s in summary:
            writer.writerow(
                [s.metric, s.n, _fmt(s.mean), _fmt(s.std), _fmt(s.ci95), _fmt(s.low), _fmt(s.high)]
            )

    def clean(v: float) -> float | None:  # JSON has no NaN
        return None if not math.isfinite(v) else round(v, 6)

    payload = {
        **info,
        "metrics": {
            s.metric: {"n": s.n, "mean": clean(s.mean), "std": clean(s.std), "ci95": clean(s.ci95)}
            for s in summary
        },
    }
    with atomic_output(json_path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return csv_path, json_path


def paired_difference(
    run_a: str | Path, run_b: str | Path, columns: Iterable[str] | None = None
) -> list[MetricSummary]:
    """Per-file ``B − A`` of two evaluations of the same files, with the paired 95 % CI.

    ``run_a``/``run_b`` are output folders (their ``per_file.csv``); only files scored in both count.
    Use this, not two overlapping intervals, to decide whether system B beats system A.
    """
    a = {r.file: r for r in read_csv(Path(run_a) / "per_file.csv") if r.ok}
    b = {r.file: r for r in read_csv(Path(run_b) / "per_file.csv") if r.ok}
    common = sorted(a.keys() & b.keys())
    names = list(columns) if columns is not None else [f"enhanced_{m}" for m in metrics.ALL_METRICS]
    return [
        summarize_column(c, (b[f].scores.get(c, math.nan) - a[f].scores.get(c, math.nan) for f in common))
        for c in names
    ]


def summary_table(summary: list[MetricSummary]) -> str:
    """A Markdown table of ``metric | n | mean | 95 % CI`` rows."""
    lines = ["| metric | n | mean | 95 % CI |", "|---|---:|---:|---|"]
    for s in summary:
        ci = f"[{s.low:.3f}, {s.high:.3f}]" if math.isfinite(s.ci95) else "–"
        lines.append(f"| {s.metric} | {s.n} | {s.mean:.3f} | {ci} |")
    return "\n".join(lines)


def as_dict(result: FileResult) -> dict[str, object]:
    """A flat dict of one result (for DataFrames in the notebooks)."""
    row = asdict(result)
    scores = row.pop("scores")
    row["notes"] = "; ".join(result.notes)
    return {**row, **scores}
