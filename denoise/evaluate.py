"""Score a folder of noisy files before and after enhancement: per-file CSV, summary with 95 % CI.

Noisy files are paired with their clean references and (when scoring another system's outputs) their
enhanced files by :func:`denoise.pairing.pair_folders`, the rule fine-tuning uses too. A noisy file
without a reference is still scored with the non-intrusive DNSMOS.

Every signal is scored at 16 kHz, channel 0 only (the metrics are mono). Files above 16 kHz with a clean
reference are also scored at their own rate with the full-band metrics (:mod:`denoise.metrics_fullband`:
the 8 kHz-Nyquist band the 16 kHz metrics cannot see); 16 kHz files leave those columns empty. Intrusive metrics of the noisy
input and of the enhanced output are computed over one common span (the shortest of the three files),
so that their difference is a fair improvement. A file that cannot be read or enhanced is reported and
skipped; a metric that cannot be computed (e.g. PESQ on < 0.25 s) is NaN with a note.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from denoise import metrics
from denoise.audio import AudioError, read_audio, resample, write_audio
from denoise.metrics_fullband import fullband_pair_scores
from denoise.pairing import Pair, pair_folders
from denoise.scores import (
    EvalConfig,
    EvalResult,
    FileResult,
    MetricSummary,
    as_dict,
    metric_columns,
    paired_difference,
    read_csv,
    summarize,
    summarize_column,
    summary_table,
    write_csv,
    write_summary,
)

# The evaluation's data types and tables live in denoise.scores (shared with the report); they are
# part of this module's API too, so ``from denoise.evaluate import EvalConfig`` keeps working.
__all__ = [
    "Enhancer", "EvalConfig", "EvalResult", "FileResult", "MetricSummary", "as_dict", "engine_enhancer",
    "evaluate", "evaluate_folder", "metric_columns", "paired_difference", "read_csv", "score_pair", "score_signals", "summarize", "summarize_column",
    "summary_table", "write_csv",
]  # fmt: skip

# An enhancer maps (mono samples [T] float32, rate Hz) -> (enhanced [T'] float32, rate Hz).
Enhancer = Callable[[np.ndarray, int], tuple[np.ndarray, int]]

# Length differences below this (seconds) are normal model/resampler edge effects and not worth a note.
_LENGTH_NOTE_S = 0.05


# ------------------------------------------------------------------------------------------- pairing


# ------------------------------------------------------------------------------------------ scoring


def _length_note(what: str, n_ref: int, n_other: int) -> str | None:
    diff = (n_other - n_ref) / metrics.SAMPLE_RATE
    if abs(diff) < _LENGTH_NOTE_S:
        return None
    return f"{what} is {abs(diff):.2f} s {'longer' if diff > 0 else 'shorter'}; scored over the common span"


def _read_channel0(path: Path) -> tuple[np.ndarray, int, list[str]]:
    """Channel 0 of an audio file at its own rate, the rate, and the read notes."""
    audio = read_audio(path)
    notes = list(audio.notes)
    if audio.channels > 1:
        notes.append(f"{audio.channels} channels: channel 0 scored")
    return metrics.channel0(audio.samples), audio.sample_rate, notes


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


def score_pair(
    pair: Pair, enhance: Enhancer | None = None, dnsmos: bool = True, save_to: Path | None = None
) -> FileResult:
    """Score one pair; any failure to read, match or enhance becomes ``FileResult.error`` (no exception).

    ``enhance`` runs the model on the noisy file when the pair has no pre-computed enhanced file;
    ``save_to`` (a folder) keeps that output as ``<name>.wav`` at the rate the model returned it.
    """
    result = FileResult(file=pair.noisy.name, clean_file=pair.clean.name if pair.clean else "")
    try:
        audio = read_audio(pair.noisy)
        result.duration_s, result.sample_rate = audio.duration, audio.sample_rate
        result.notes += audio.notes
        if audio.channels > 1:
            result.notes.append(f"{audio.channels} channels: channel 0 scored")
        noisy_native = metrics.channel0(audio.samples)
        noisy = metrics.to_16k(noisy_native, audio.sample_rate)

        if pair.enhanced is not None:
            enhanced_native, enhanced_sr, notes = _read_channel0(pair.enhanced)
            result.notes += [f"enhanced file: {n}" for n in notes]
        elif enhance is not None:
            out, enhanced_sr = enhance(noisy_native, audio.sample_rate)
            enhanced_native = np.asarray(out, dtype=np.float32)
            if save_to is not None:
                save_to.mkdir(parents=True, exist_ok=True)
                write_audio(save_to / f"{pair.noisy.stem}.wav", enhanced_native[None, :], enhanced_sr)
        else:
            raise AudioError("no enhanced file with this name")
        enhanced = metrics.to_16k(enhanced_native, enhanced_sr)

        clean = None
        if pair.clean is not None:
            clean_native, clean_sr, notes = _read_channel0(pair.clean)
            clean = metrics.to_16k(clean_native, clean_sr)
            result.notes += [f"clean file: {n}" for n in notes]
            if note := _length_note("noisy vs clean: noisy", len(clean), len(noisy)):
                result.notes.append(note)
        if note := _length_note("enhanced", len(noisy), len(enhanced)):
            result.notes.append(note)
        result.scores, notes = score_signals(noisy, enhanced, clean, dnsmos=dnsmos)
        result.notes += notes
        rate = audio.sample_rate
        if clean is not None and rate > metrics.SAMPLE_RATE:  # the band above 8 kHz, at the file's rate
            at_rate = [
                resample(v, r, rate) for v, r in ((enhanced_native, enhanced_sr), (clean_native, clean_sr))
            ]
            result.scores.update(fullband_pair_scores(noisy_native, *at_rate, rate))
    except (AudioError, ValueError, RuntimeError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def evaluate(config: EvalConfig, enhance: Enhancer | None = None) -> EvalResult:
    """Pair, score and write ``per_file.csv``, ``summary.csv``/``.json`` and ``report.md`` to ``out_dir``.

    Exactly one source of enhanced audio is needed: ``config.enhanced_dir`` or ``enhance``.
    """
    if (config.enhanced_dir is None) == (enhance is None):
        raise ValueError("give exactly one of an enhanced folder or a model (enhance function)")
    pairs = pair_folders(
        config.noisy_dir, config.clean_dir, enhanced_dir=config.enhanced_dir, exclude=config.exclude
    )
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

        paths["report"] = write_report(outcome, lambda row: _example_signals(outcome, row, enhance))
    return outcome


def _example_signals(
    result: EvalResult, row: FileResult, enhance: Enhancer | None
) -> tuple[dict[str, np.ndarray], int]:
    """Re-read (or re-enhance) one file for the report's spectrogram: noisy, enhanced and clean at the
    noisy file's rate (a 48 kHz file shows its full band), and that rate."""
    cfg = result.config
    pair = next(
        p
        for p in pair_folders(cfg.noisy_dir, cfg.clean_dir, enhanced_dir=cfg.enhanced_dir)
        if p.noisy.name == row.file
    )
    noisy, rate, _ = _read_channel0(pair.noisy)

    def at_rate(path: Path) -> np.ndarray:
        x, sr, _ = _read_channel0(path)
        return resample(x, sr, rate)

    signals = {"noisy": noisy}
    saved = cfg.out_dir / "enhanced" / f"{pair.noisy.stem}.wav"
    if pair.enhanced is not None:
        signals[cfg.label] = at_rate(pair.enhanced)
    elif saved.exists():
        signals[cfg.label] = at_rate(saved)
    elif enhance is not None:
        out, out_sr = enhance(noisy, rate)
        signals[cfg.label] = resample(np.asarray(out, dtype=np.float32), out_sr, rate)
    if pair.clean is not None:
        signals["clean reference"] = at_rate(pair.clean)
    return signals, rate


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
