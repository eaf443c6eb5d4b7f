"""Score a folder of noisy files before and after enhancement: per-file CSV, summary with 95 % CI.

Pairing (all by file name, extension ignored):
- noisy -> clean reference: the same name (VoiceBank-DEMAND ``p232_001.wav`` <-> ``p232_001.wav``), else
  the DNS-Challenge id (``…_fileid_12.wav`` <-> ``clean_fileid_12.wav``). A noisy file without a
  reference is still scored with the non-intrusive DNSMOS.
- noisy -> enhanced (when scoring another system's outputs): the same name, else the same DNS id.

Every signal is scored at 16 kHz, channel 0 only (the metrics are mono). Intrusive metrics of the noisy
input and of the enhanced output are computed over one common span (the shortest of the three files),
so that their difference is a fair improvement. A file that cannot be read or enhanced is reported and
skipped; a metric that cannot be computed (e.g. PESQ on < 0.25 s) is NaN with a note.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from denoise import metrics
from denoise.audio import AudioError, is_audio_path, read_audio, write_audio

# An enhancer maps (mono samples [T] float32, rate Hz) -> (enhanced [T'] float32, rate Hz).
Enhancer = Callable[[np.ndarray, int], tuple[np.ndarray, int]]

_DNS_ID = re.compile(r"(?:^|_)(fileid_\d+)$")

# Length differences below this (seconds) are normal model/resampler edge effects and not worth a note.
_LENGTH_NOTE_S = 0.05


# ------------------------------------------------------------------------------------------- pairing


def audio_files(folder: str | Path) -> list[Path]:
    """Audio files directly inside ``folder`` (by extension, hidden files skipped), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_audio_path(p))


def dns_id(stem: str) -> str | None:
    """``"fileid_12"`` for DNS-Challenge names such as ``clnsp3_…_fileid_12`` or ``clean_fileid_12``."""
    match = _DNS_ID.search(stem)
    return match.group(1) if match else None


class _NameIndex:
    """Find a file of a folder by exact stem or, failing that, by DNS file id."""

    def __init__(self, files: Iterable[Path]) -> None:
        self.by_stem: dict[str, Path] = {}
        self.by_id: dict[str, Path] = {}
        ambiguous_ids: set[str] = set()
        for path in files:
            if path.stem in self.by_stem:
                raise ValueError(f"two files share the name {path.stem!r}: {self.by_stem[path.stem]}, {path}")
            self.by_stem[path.stem] = path
            key = dns_id(path.stem)
            if key is not None:
                if key in self.by_id:
                    ambiguous_ids.add(key)
                self.by_id[key] = path
        for key in ambiguous_ids:  # an id shared by several files identifies none of them
            del self.by_id[key]

    def find(self, stem: str) -> Path | None:
        if stem in self.by_stem:
            return self.by_stem[stem]
        key = dns_id(stem)
        return self.by_id.get(key) if key is not None else None


@dataclass(frozen=True)
class Pair:
    """One noisy file with its optional clean reference and optional pre-computed enhanced file."""

    noisy: Path
    clean: Path | None = None
    enhanced: Path | None = None

    @property
    def name(self) -> str:
        return self.noisy.stem


def pair_files(
    noisy_dir: str | Path,
    clean_dir: str | Path | None = None,
    enhanced_dir: str | Path | None = None,
    exclude: Iterable[str] = (),
) -> list[Pair]:
    """Match every audio file of ``noisy_dir`` with its reference and enhanced file (see module doc).

    ``exclude`` holds noisy stems to leave out (e.g. a known-bad reference output). An enhanced file that
    is missing is kept as ``None`` here and reported as an error when the pair is scored.
    """
    skip = set(exclude)
    clean = _NameIndex(audio_files(clean_dir)) if clean_dir is not None else None
    enhanced = _NameIndex(audio_files(enhanced_dir)) if enhanced_dir is not None else None
    pairs = []
    for noisy in audio_files(noisy_dir):
        if noisy.stem in skip:
            continue
        pairs.append(
            Pair(
                noisy=noisy,
                clean=clean.find(noisy.stem) if clean else None,
                enhanced=enhanced.find(noisy.stem) if enhanced else None,
            )
        )
    return pairs


# ------------------------------------------------------------------------------------------ scoring


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


def _mono(samples: np.ndarray) -> np.ndarray:
    """Channel 0 of ``[channels, samples]`` (the ModelScope pipeline scores and keeps channel 0 too)."""
    return np.asarray(samples[0] if samples.ndim == 2 else samples, dtype=np.float32)


def _length_note(what: str, n_ref: int, n_other: int) -> str | None:
    diff = (n_other - n_ref) / metrics.SAMPLE_RATE
    if abs(diff) < _LENGTH_NOTE_S:
        return None
    return f"{what} is {abs(diff):.2f} s {'longer' if diff > 0 else 'shorter'}; scored over the common span"


def score_signals(
    noisy: np.ndarray, enhanced: np.ndarray, clean: np.ndarray | None, dnsmos: bool = True
) -> tuple[dict[str, float], list[str]]:
    """All metrics of noisy and enhanced 16 kHz 1-D signals (clean optional) and their improvement.

    Returns ``(scores, notes)`` with the keys of :func:`metric_columns`; unavailable metrics are NaN.
    """
    scores: dict[str, float] = {}
    notes: list[str] = []
    names: list[str] = []
    if clean is not None:
        n = min(len(clean), len(noisy), len(enhanced))
        for which, signal in (("noisy", noisy), ("enhanced", enhanced)):
            values, why = metrics.intrusive_scores(clean[:n], signal[:n])
            scores.update({f"{which}_{k}": v for k, v in values.items()})
            notes += [f"{which}: {w}" for w in why]
        names += list(metrics.INTRUSIVE_METRICS)
    if dnsmos:
        for which, signal in (("noisy", noisy), ("enhanced", enhanced)):
            values, why = metrics.dnsmos_scores(signal)
            scores.update({f"{which}_{k}": v for k, v in values.items()})
            notes += [f"{which}: {w}" for w in why]
        names += list(metrics.DNSMOS_METRICS)
    for m in names:
        key = "si_snri" if m == "si_snr" else f"delta_{m}"
        scores[key] = scores[f"enhanced_{m}"] - scores[f"noisy_{m}"]
    return scores, notes


def _read_16k(path: Path) -> tuple[np.ndarray, int, float, list[str]]:
    """Channel 0 of ``path`` at 16 kHz as float64, plus native rate (Hz), duration (s) and read notes."""
    audio = read_audio(path)
    notes = list(audio.notes)
    if audio.channels > 1:
        notes.append(f"{audio.channels} channels: channel 0 scored")
    return metrics.to_16k(_mono(audio.samples), audio.sample_rate), audio.sample_rate, audio.duration, notes


def score_pair(
    pair: Pair, enhance: Enhancer | None = None, dnsmos: bool = True, save_to: Path | None = None
) -> FileResult:
    """Score one pair; any failure to read, match or enhance becomes ``FileResult.error`` (no exception).

    ``enhance`` runs the model on the noisy file when the pair has no pre-computed enhanced file;
    ``save_to`` (a folder) keeps that output as ``<name>.wav`` at 16 kHz.
    """
    result = FileResult(file=pair.noisy.name, clean_file=pair.clean.name if pair.clean else "")
    try:
        audio = read_audio(pair.noisy)
        result.duration_s, result.sample_rate = audio.duration, audio.sample_rate
        result.notes += audio.notes
        if audio.channels > 1:
            result.notes.append(f"{audio.channels} channels: channel 0 scored")
        noisy_native = _mono(audio.samples)
        noisy = metrics.to_16k(noisy_native, audio.sample_rate)

        if pair.enhanced is not None:
            enhanced, _, _, notes = _read_16k(pair.enhanced)
            result.notes += [f"enhanced file: {n}" for n in notes]
        elif enhance is not None:
            out, out_sr = enhance(noisy_native, audio.sample_rate)
            enhanced = metrics.to_16k(np.asarray(out, dtype=np.float32), out_sr)
            if save_to is not None:
                save_to.mkdir(parents=True, exist_ok=True)
                write_audio(
                    save_to / f"{pair.noisy.stem}.wav",
                    enhanced[None, :].astype(np.float32),
                    metrics.SAMPLE_RATE,
                )
        else:
            raise AudioError("no enhanced file with this name")

        clean = None
        if pair.clean is not None:
            clean, _, _, notes = _read_16k(pair.clean)
            result.notes += [f"clean file: {n}" for n in notes]
            if note := _length_note("noisy vs clean: noisy", len(clean), len(noisy)):
                result.notes.append(note)
        if note := _length_note("enhanced", len(noisy), len(enhanced)):
            result.notes.append(note)
        result.scores, notes = score_signals(noisy, enhanced, clean, dnsmos=dnsmos)
        result.notes += notes
    except (AudioError, ValueError, RuntimeError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


# ------------------------------------------------------------------------------------------ summary


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
    columns = [c for c in metric_columns() if any(c in r.scores for r in ok)]
    return [summarize_column(c, (r.scores.get(c, float("nan")) for r in ok)) for c in columns]


# ------------------------------------------------------------------------------------------- output


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
    columns = [c for c in metric_columns() if any(c in r.scores for r in results)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
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
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
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
    json_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return csv_path, json_path


def evaluate(config: EvalConfig, enhance: Enhancer | None = None) -> EvalResult:
    """Pair, score and write ``per_file.csv``, ``summary.csv``/``.json`` and ``report.md`` to ``out_dir``.

    Exactly one source of enhanced audio is needed: ``config.enhanced_dir`` or ``enhance``.
    """
    if (config.enhanced_dir is None) == (enhance is None):
        raise ValueError("give exactly one of an enhanced folder or a model (enhance function)")
    pairs = pair_files(config.noisy_dir, config.clean_dir, config.enhanced_dir, config.exclude)
    if config.limit is not None:
        pairs = pairs[: config.limit]
    if not pairs:
        raise FileNotFoundError(f"no audio files in {config.noisy_dir}")
    config.out_dir.mkdir(parents=True, exist_ok=True)
    save_to = config.out_dir / "enhanced" if config.save_enhanced and enhance is not None else None

    from tqdm import tqdm

    start = time.perf_counter()
    results: list[FileResult] = []
    bar = tqdm(pairs, desc=f"eval {config.label}", unit="file", disable=not config.progress)
    for pair in bar:
        result = score_pair(pair, enhance, dnsmos=config.dnsmos, save_to=save_to)
        if not result.ok:
            bar.write(f"skipped {pair.noisy.name}: {result.error}", file=sys.stderr)
        results.append(result)
    seconds = time.perf_counter() - start

    summary = summarize(results)
    paths = {"csv": write_csv(config.out_dir / "per_file.csv", results)}
    info = {
        "label": config.label,
        "noisy_dir": str(config.noisy_dir),
        "clean_dir": str(config.clean_dir) if config.clean_dir else None,
        "enhanced_dir": str(config.enhanced_dir) if config.enhanced_dir else None,
        "files": len(results),
        "scored": sum(r.ok for r in results),
        "with_reference": sum(bool(r.clean_file) for r in results if r.ok),
        "failed": {r.file: r.error for r in results if not r.ok},
        "excluded": list(config.exclude),
        "seconds": round(seconds, 1),
    }
    paths["summary_csv"], paths["summary_json"] = write_summary(config.out_dir, summary, info)
    outcome = EvalResult(config, results, summary, paths, seconds)
    if config.report:
        from denoise.report import write_report

        paths["report"] = write_report(outcome, enhance=enhance)
    return outcome


def engine_enhancer(model: str | None = None, weights: str = "default", **engine_options: object) -> Enhancer:
    """The project's engine (``denoise.engine.Denoiser``) as an :data:`Enhancer`.

    ``model`` is "frcrn" or "gtcrn" (default: the architecture of ``weights``, else FRCRN); ``weights`` a
    manifest name (e.g. "gtcrn_vctk") or checkpoint file; other keywords go to ``DenoiserConfig``
    (backend, device, threads, chunk_seconds, compat, ...). The output keeps the input's rate.
    """
    from denoise.engine import Denoiser, DenoiserConfig, resolve_arch

    denoiser = Denoiser(DenoiserConfig(model=resolve_arch(model, weights), weights=weights, **engine_options))

    def enhance(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
        result = denoiser.enhance_report(samples[None, :], sample_rate)
        return result.samples[0], result.sample_rate

    enhance.backend_name = denoiser.backend.name  # type: ignore[attr-defined]  # shown by the CLI
    enhance.arch = denoiser.config.model  # type: ignore[attr-defined]
    return enhance


def evaluate_folder(
    noisy: str | Path,
    out: str | Path = "runs/eval",
    *,
    clean: str | Path | None = None,
    enhanced: str | Path | None = None,
    model: str | None = None,
    weights: str = "default",
    engine_options: dict[str, object] | None = None,
    **config: object,
) -> EvalResult:
    """One call for notebooks: score ``enhanced`` files, or run the engine (``model``/``weights``) on ``noisy``.

    Example::

        r = evaluate_folder("../shared/eval/vbd/noisy", "runs/vbd_gtcrn", clean="../shared/eval/vbd/clean",
                            weights="gtcrn_vctk")
        r.mean("delta_pesq"), r.paths["report"]

    ``config`` holds further :class:`EvalConfig` fields (label, exclude, dnsmos, save_enhanced, ...).
    """
    enhance = None if enhanced is not None else engine_enhancer(model, weights, **(engine_options or {}))
    if "label" not in config:
        config["label"] = (
            Path(enhanced).name if enhanced is not None else f"{enhance.arch} ({weights or 'random weights'})"
        )
    cfg = EvalConfig(
        noisy_dir=Path(noisy), out_dir=Path(out), clean_dir=clean, enhanced_dir=enhanced, **config
    )
    return evaluate(cfg, enhance)


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
