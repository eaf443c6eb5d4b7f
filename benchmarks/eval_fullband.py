"""Full-band (48 kHz) table: what a 16 kHz network does to the 8-24 kHz band, and what the full-band stage
puts back, on ``shared/eval/fullband48k_dev`` (metrics: its README; means over the files).

    DENOISE_WEIGHTS_MIRROR=../shared/weights python benchmarks/eval_fullband.py --model gtcrn \\
        --peer deepfilternet3=runs/peers/fullband48k_dev/deepfilternet3

Rows: the noisy input; the network band-limited (``full_band=False``: the engine resamples to 16 kHz
and back); the network plus the noisy high band added back unchanged; the network plus each method of
:mod:`denoise.fullband` (applied to the whole arrays); the engine's default output (the stage inside the
streaming engine, end to end: must match the `tracked` row); any peer whose enhanced files (same names, 48 kHz, delay removed) are given
with ``--peer NAME=DIR`` (DeepFilterNet3: ``benchmarks/eval_peers.py``, in its own venv).

``--own N`` scores N mixtures of our own instead, built from the source recordings in
``shared/audio/fullband`` (another seed, pairings and SNRs than the dev set): a check that what was
chosen on the dev set holds on other mixtures. They share the dev set's sources, so they are not a
test set either.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from denoise import Denoiser
from denoise.audio import resample
from denoise.fullband import METHODS, NETWORK_RATE, apply_full_band
from denoise.metrics_fullband import FULLBAND_METRICS, fullband_scores
from denoise.tutorial import shared_dir
from denoise_models.atomic import atomic_output

RATE = 48000  # the dev set's rate
COLUMNS = {
    "fb_si_sdr": "SI-SDR 0–24k",
    "lb_si_sdr": "SI-SDR 0–8k",
    "gap": "0–8k − 0–24k",
    "hf_segsnr": "HF segSNR",
    "hf_lsd": "HF LSD",
    "hf_energy_db": "HF energy re clean",
    "worst_vs_deleted": "worst file vs band-deleted",
}


def dev_set() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, noisy, clean) of every dev-set pair, float32 at 48 kHz."""
    folder = shared_dir() / "eval" / "fullband48k_dev"
    items = []
    for path in sorted((folder / "noisy").glob("*.wav")):
        noisy, sr = sf.read(path, dtype="float32")
        clean, _ = sf.read(folder / "clean" / path.name, dtype="float32")
        if sr != RATE:
            raise SystemExit(f"{path}: expected {RATE} Hz, got {sr}")
        items.append((path.stem, noisy, clean))
    if not items:
        raise SystemExit(f"no dev set at {folder} (set DENOISE_SHARED)")
    return items


def own_mixtures(count: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``count`` 4 s mixtures of the full-band sources: random speech, noise window, SNR in [0, 15] dB."""
    from scipy.signal import butter, sosfiltfilt

    folder = shared_dir() / "audio" / "fullband"
    rng = np.random.default_rng(seed)

    def load(path: Path) -> np.ndarray:
        x, sr = sf.read(path, dtype="float64", always_2d=True)
        x = resample(x[:, 0], sr, RATE).astype(np.float64)
        return x - x.mean()

    speech = sorted((folder / "clean_speech").iterdir())
    noises = sorted((folder / "noise").iterdir())
    n = 4 * RATE
    highpass = butter(4, 50.0, "highpass", fs=RATE, output="sos")
    items = []
    for k in range(count):
        s = sosfiltfilt(highpass, load(speech[rng.integers(len(speech))]))
        s = np.pad(s, (0, max(0, n - s.size)))[:n]
        noise = load(noises[rng.integers(len(noises))])
        start = rng.integers(0, max(1, noise.size - n))
        noise = np.pad(noise[start : start + n], (0, max(0, n - noise[start:].size)))[:n]
        s *= 10 ** (rng.uniform(-32.0, -22.0) / 20.0) / np.sqrt(_active(s))  # active level, dBFS
        snr = rng.uniform(0.0, 15.0)
        noise *= np.sqrt(_active(s) / (np.mean(noise**2) + 1e-20) * 10 ** (-snr / 10.0))
        items.append((f"own_{k:02d}", (s + noise).astype(np.float32), s.astype(np.float32)))
    return items


def _active(x: np.ndarray) -> float:
    """Mean power over the 20 ms frames within 35 dB of the loudest (the dev set's active speech level)."""
    frames = (x[: x.size // 960 * 960].reshape(-1, 960) ** 2).mean(1)
    return float(frames[frames > frames.max() * 10**-3.5].mean())


def round_trip(x: np.ndarray) -> np.ndarray:
    """The engine's 16 kHz round trip (what the network's band limit leaves of the input)."""
    return resample(resample(x, RATE, NETWORK_RATE), NETWORK_RATE, RATE)[: x.size]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gtcrn")
    p.add_argument("--weights", default="default")
    p.add_argument("--peer", action="append", default=[], metavar="NAME=DIR", help="enhanced files of a peer")
    p.add_argument("--own", type=int, default=0, metavar="N", help="score N own mixtures, not the dev set")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--per-file", action="store_true", help="also print every file's scores")
    p.add_argument("--json", type=Path, default=None, help="write every file's scores here")
    args = p.parse_args()

    items = own_mixtures(args.own, args.seed) if args.own else dev_set()
    denoiser = Denoiser(model=args.model, weights=args.weights, full_band=False)  # today's output
    engine = Denoiser(model=args.model, weights=args.weights)  # the default: the stage inside the engine
    peers = dict(spec.split("=", 1) for spec in args.peer)
    label = args.model.upper()
    systems = ["noisy", f"{label} today (band deleted)", f"{label} + noisy band added back"]
    systems += [f"{label} + full band `{m}`" for m in METHODS if m != "passthrough"]
    systems += [f"{label} through the engine (default, full band)", *peers]
    scores: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    stage_wall = stage_cpu = 0.0
    for name, noisy, clean in items:
        band_limited = denoiser.enhance(noisy, RATE)
        x_low = round_trip(noisy)
        outputs = {systems[0]: noisy, systems[1]: band_limited}
        outputs[systems[2]] = apply_full_band(noisy, x_low, band_limited, RATE, "passthrough")
        for method in METHODS:
            if method != "passthrough":
                wall, cpu = time.perf_counter(), time.process_time()
                outputs[f"{label} + full band `{method}`"] = apply_full_band(
                    noisy, x_low, band_limited, RATE, method
                )
                if method == "tracked":
                    stage_wall += time.perf_counter() - wall
                    stage_cpu += time.process_time() - cpu
        outputs[f"{label} through the engine (default, full band)"] = engine.enhance(noisy, RATE)
        for peer, folder in peers.items():
            out, sr = sf.read(Path(folder) / f"{name}.wav", dtype="float32")
            if sr != RATE or out.shape != noisy.shape:
                raise SystemExit(f"{peer}/{name}.wav: expected {noisy.size} samples at {RATE} Hz")
            outputs[peer] = out
        deleted_fb = fullband_scores(band_limited, clean, RATE)["fb_si_sdr"]
        for system, out in outputs.items():
            row = {"file": name, **fullband_scores(out, clean, RATE)}
            row["gap"] = row["lb_si_sdr"] - row["fb_si_sdr"]
            row["worst_vs_deleted"] = row["fb_si_sdr"] - deleted_fb
            scores[system].append(row)

    print(f"| system | {' | '.join(COLUMNS.values())} |")
    print("|---|" + "---|" * len(COLUMNS))
    for system, rows in scores.items():
        cells = [
            f"{min(r[c] for r in rows):+.2f}"
            if c == "worst_vs_deleted"
            else f"{np.mean([r[c] for r in rows]):.2f}"
            for c in COLUMNS
        ]
        print(f"| {system} | {' | '.join(cells)} |")
        if args.per_file:
            for r in rows:
                print("|  " + r["file"] + " | " + " | ".join(f"{r[c]:.2f}" for c in COLUMNS) + " |")
    seconds = len(items) * 4.0
    print(
        f"\n{len(items)} files; stage `tracked`: {stage_wall / seconds * 1000:.1f} ms wall, "
        f"{stage_cpu / seconds * 1000:.1f} ms CPU per second of mono 48 kHz audio"
    )
    if args.json:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps({"metrics": list(FULLBAND_METRICS), "scores": scores}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
