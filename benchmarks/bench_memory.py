"""Streaming engine: peak RSS and CPU time of ``Denoiser.enhance_file`` against the input's length.

Writes 48 kHz stereo 24-bit WAV inputs of the asked lengths (real noisy speech tiled; written in blocks),
then runs each (model, length, code) in a fresh process under ``/usr/bin/time -v``: peak RSS = "Maximum
resident set size", CPU = user + system seconds. ``--code`` picks whose engine runs (``PYTHONPATH``), so
the same command measures before (``/work/main``: the whole-file engine) and after (this tree).

    DENOISE_WEIGHTS_MIRROR=../shared/weights OMP_NUM_THREADS=1 \\
        python benchmarks/bench_memory.py --model gtcrn --minutes 1 10 60 --code . /work/main

Prints markdown rows for docs/benchmarks.md and appends JSON lines to ``--out``. Not a test (timings
depend on the machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from denoise.tutorial import shared_dir

RATE, CHANNELS = 48000, 2
SPEECH = "audio/noisy/modelscope_frcrn__speech_with_noise.wav"
FRCRN_TEST_WEIGHTS = "fixtures/frcrn/frcrn_testweights_seed0.pt"
RUN = "from denoise.engine import Denoiser; import sys; Denoiser(model=sys.argv[1], weights=sys.argv[2])" \
    ".enhance_file(sys.argv[3], sys.argv[4])"  # fmt: skip


def make_input(path: Path, minutes: float) -> Path:
    """``minutes`` of 48 kHz stereo 24-bit speech-in-noise, written block by block."""
    if path.is_file():
        return path
    import soxr

    speech, rate = sf.read(shared_dir() / SPEECH, dtype="float32", always_2d=True)
    base = soxr.resample(speech, rate, RATE)
    # a second channel that differs (delayed, quieter) so channels are not identical
    base = np.stack([base[:, 0], 0.7 * np.roll(base[:, 0], 480)], axis=1)
    frames = round(minutes * 60 * RATE)
    with sf.SoundFile(path, "w", RATE, CHANNELS, "PCM_24") as f:
        written = 0
        while written < frames:
            block = base[: frames - written]
            f.write(block)
            written += block.shape[0]
    return path


def measure(code: Path, model: str, weights: str, src: Path, dst: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code.resolve()), "OMP_NUM_THREADS": "1"}
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", RUN, model, weights, str(src), str(dst)]
    # cwd: not a source tree, or "-c" would import the package from the current folder before PYTHONPATH
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=src.parent)
    if run.returncode:
        return {"error": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else str(run.returncode)}

    def field(name: str) -> float:
        return float(re.search(rf"{re.escape(name)}: ([\d.:]+)", run.stderr).group(1))

    return {
        "peak_rss_mb": field("Maximum resident set size (kbytes)") * 1024 / 1e6,
        "cpu_s": field("User time (seconds)") + field("System time (seconds)"),
        "wall_s": wall_seconds(
            re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", run.stderr)[1]
        ),
    }


def wall_seconds(text: str) -> float:
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gtcrn", choices=["gtcrn", "frcrn"])
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    p.add_argument("--code", type=Path, nargs="+", default=[Path(".")], help="trees whose engine runs")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "denoise-bench-memory")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results_memory.jsonl"))
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    weights = "default" if args.model == "gtcrn" else str(shared_dir() / FRCRN_TEST_WEIGHTS)
    print("| model | input | engine | peak RSS | CPU s | CPU s / audio s | wall s | load |")
    print("|---|---|---|---|---|---|---|---|")
    for minutes in args.minutes:
        src = make_input(args.workdir / f"speech_{minutes:g}min_48k_stereo_pcm24.wav", minutes)
        for code in args.code:
            load = os.getloadavg()[0]
            r = measure(code, args.model, weights, src, args.workdir / "out.wav")
            row = {"model": args.model, "minutes": minutes, "code": str(code), "load": load, **r}
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            if "error" in r:
                print(f"| {args.model} | {minutes:g} min | {code} | failed: {r['error']} |||||")
                continue
            print(
                f"| {args.model} | {minutes:g} min | {code} | {r['peak_rss_mb']:,.0f} MB | {r['cpu_s']:,.1f} | "
                f"{r['cpu_s'] / (minutes * 60):.3f} | {r['wall_s']:,.1f} | {load:.1f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
