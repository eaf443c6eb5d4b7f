"""Corpus throughput on one machine: ``denoise run`` today vs ``--workers N``, beside the backend-only bound.

Builds (once, under ``--work``) two folders from REAL audio of the reference data's ``audio/`` (``denoise.tutorial.shared_dir``): ``short/`` holds
``--short`` utterances of 3-5 s (clean speech cut at random places, mixed with real noise at 0-15 dB SNR,
fixed seed; every fifth file at 48 kHz, the rest at 16 kHz) and ``long/`` holds ``--long`` files of
``--long-seconds`` each (16 kHz). Then, for each folder, one row per configuration:

- ``today (defaults)``: ``denoise run`` of the code at ``--baseline`` (exported once under ``--work`` with
  ``git archive``, run through PYTHONPATH) with its defaults: one process, torch's own thread count;
- ``today, --threads 1``: the same with one thread;
- ``--workers 1 --threads 1`` / ``--workers 2``: this checkout's ``denoise run`` (in-process; two worker
  processes of one thread each);
- ``backend only, N process(es)``: the network alone (``TorchBackend.open_stream``, fed in the engine's
  30 s calls: one or two calls per short file, as the engine makes) over each file's 16 kHz samples already in memory, in N processes of one thread (files
  split evenly; start-up, decoding and resampling untimed): what the network costs, nothing else.

Each row: wall time (for a run: the whole command, start-up included), CPU time (the process and its
children), files/s, audio-s/s, its ratio to today's defaults and to the bound with the same parallelism. Results append to ``benchmarks/results.jsonl``; ``--markdown`` prints the
table for docs/benchmarks.md. Run it on a quiet machine (the load average is printed per row)::

    python benchmarks/bench_throughput.py --work /tmp/denoise-throughput --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
NET_RATE = 16000  # the corpus is made at the network's rate (plus some 48 kHz files)


def _load_16k(path: Path) -> np.ndarray:
    x, rate = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return soxr.resample(x, rate, NET_RATE) if rate != NET_RATE else x


def _mix(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    gain = np.sqrt(np.mean(speech**2) / (np.mean(noise**2) + 1e-12) / 10 ** (snr_db / 10))
    mixed = speech + gain * noise
    return (mixed * min(1.0, 0.9 / (np.abs(mixed).max() + 1e-9))).astype(np.float32)


def build_corpus(work: Path, n_short: int, n_long: int, long_seconds: float, seed: int = 13) -> None:
    """``work/short`` and ``work/long`` from real speech and noise (skipped when already there)."""
    rng = np.random.default_rng(seed)
    from denoise.tutorial import shared_dir  # the one place that finds the reference data

    audio = shared_dir() / "audio"
    speech = [_load_16k(p) for p in sorted((audio / "clean_speech").iterdir())]
    noises = [_load_16k(p) for p in sorted((audio / "noise").iterdir())]
    talk = np.concatenate(speech)  # one long stream of real speech to cut pieces from
    noise_bed = np.concatenate(noises)

    def noise_of(n: int) -> np.ndarray:
        at = int(rng.integers(0, noise_bed.size - n)) if noise_bed.size > n else 0
        return np.resize(noise_bed[at:], n)

    short = work / "short"
    if not short.is_dir() or len(list(short.iterdir())) != n_short:
        short.mkdir(parents=True, exist_ok=True)
        for k in range(n_short):
            n = int(rng.uniform(3.0, 5.0) * NET_RATE)
            at = int(rng.integers(0, talk.size - n))
            x = _mix(talk[at : at + n], noise_of(n), rng.uniform(0.0, 15.0))
            rate = 48000 if k % 5 == 4 else NET_RATE
            y = soxr.resample(x, NET_RATE, rate) if rate != NET_RATE else x
            sf.write(short / f"utt{k:04d}.wav", np.clip(y, -1, 1), rate, subtype="PCM_16")
    long = work / "long"
    if not long.is_dir() or len(list(long.iterdir())) != n_long:
        long.mkdir(parents=True, exist_ok=True)
        n = int(long_seconds * NET_RATE)
        for k in range(n_long):
            x = np.resize(np.roll(talk, -int(rng.integers(0, talk.size))), n)
            sf.write(long / f"long{k}.wav", _mix(x, noise_of(n), rng.uniform(0.0, 15.0)), NET_RATE, "PCM_16")


# ------------------------------------------------------------------ the backend-only bound
def _bound_shard(args: tuple[list[str], str]) -> tuple[float, float, float]:
    """One process of the bound: load its files at 16 kHz (untimed), then run the network over each.

    Returns (wall s, CPU s, audio s) of the network loop alone.
    """
    files, weights = args
    from denoise.backends import create_backend

    backend = create_backend(
        "torch", arch="gtcrn", weights=weights, device="cpu", precision="fp32", threads=1
    )
    signals = [_load_16k(Path(f))[None] for f in files]
    if not signals:
        return 0.0, 0.0, 0.0
    from denoise_models.spec import spec_of

    feed = round(spec_of("gtcrn").engine.chunk_seconds * NET_RATE)  # the calls the engine makes in file mode
    backend.process(signals[0][:, :16000])  # warm-up, as the engine's first file is not the bound's
    start, cpu = time.perf_counter(), time.process_time()
    for x in signals:
        stream = backend.open_stream(1)  # the carried state, as the engine runs GTCRN: same calls, same work
        for at in range(0, x.shape[1], feed):
            stream.process(x[:, at : at + feed])
        stream.flush()
    return time.perf_counter() - start, time.process_time() - cpu, sum(x.shape[1] for x in signals) / NET_RATE


def measure_bound(folder: Path, processes: int, weights: str) -> dict[str, float]:
    """The network alone (``TorchBackend.open_stream`` in the engine's 30 s calls) in ``processes``."""
    import multiprocessing

    files = sorted(str(p) for p in folder.iterdir())
    shards = [(files[k::processes], weights) for k in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_bound_shard, shards))
    return {
        "wall_s": max(p[0] for p in parts),
        "cpu_s": sum(p[1] for p in parts),
        "audio_s": sum(p[2] for p in parts),
        "files": len(files),
    }


# ------------------------------------------------------------------ the command a user runs
def measure_run(
    code: Path, folder: Path, out: Path, args: list[str], omp_threads: str | None = "1"
) -> dict[str, float]:
    """``denoise run`` of the code under ``code`` (fresh output folder): wall and CPU time, children included.

    ``omp_threads``: OMP_NUM_THREADS for the run (None: unset, torch's default thread count).
    """
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(code)
    if omp_threads:
        env["OMP_NUM_THREADS"] = omp_threads
    command = [sys.executable, "-m", "denoise", "run", "-i", str(folder), "-o", str(out), "-q", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # cwd = the code: `python -m` puts the working folder first on sys.path, ahead of PYTHONPATH.
    done = subprocess.run(command, env=env, cwd=code, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    audio = sum(sf.info(p).duration for p in folder.iterdir())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "audio_s": audio, "files": len(list(folder.iterdir()))}


def baseline_tree(work: Path, commit: str) -> Path:
    """The code at ``commit``, exported once under ``work`` (``git archive``: no worktree is registered)."""
    tree = work / f"code-{commit}"
    if not (tree / "denoise").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/denoise-throughput"))
    ap.add_argument("--short", type=int, default=320)
    ap.add_argument("--long", type=int, default=4)
    ap.add_argument("--long-seconds", type=float, default=120.0)
    ap.add_argument("--baseline", default="421f57b", help="commit that is 'today' (default: %(default)s)")
    ap.add_argument("--weights", default="default", help="GTCRN weights (default: the shipped ones)")
    ap.add_argument("--folders", default="short,long")
    ap.add_argument("--only", default="", help="run only the configurations whose label starts with this")
    ap.add_argument("--markdown", action="store_true")
    opts = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # the bound's processes (the runs set their own)
    build_corpus(opts.work, opts.short, opts.long, opts.long_seconds)
    today = baseline_tree(opts.work, opts.baseline)
    model = ["--model", "gtcrn", "--weights", opts.weights]
    t1 = ["--threads", "1"]
    configs = [  # label, code (None: the bound), arguments or processes, parallelism
        ("today (defaults)", today, [*model, "--defaults"], 1),
        ("today, --threads 1", today, [*model, *t1], 1),
        ("--workers 1 --threads 1", ROOT, [*model, *t1, "--workers", "1"], 1),
        ("--workers 2", ROOT, [*model, "--workers", "2"], 2),
        ("--workers 3 (one more than cores)", ROOT, [*model, "--workers", "3"], 2),
        ("backend only, 1 process", None, 1, 1),
        ("backend only, 2 processes", None, 2, 2),
    ]
    rows = []
    for name in opts.folders.split(","):
        folder = opts.work / name
        for label, code, what, parallel in configs:
            if not label.startswith(opts.only):
                continue
            load = os.getloadavg()[0]
            if code is None:
                figures = measure_bound(folder, what, opts.weights)
            elif "--defaults" in what:  # today's defaults: torch's own thread count
                figures = measure_run(code, folder, opts.work / "out", what[:-1], omp_threads=None)
            else:
                figures = measure_run(code, folder, opts.work / "out", what)
            row = {"bench": "throughput", "folder": name, "config": label, "parallel": parallel, **figures}
            row["load_before"] = round(load, 2)
            row["files_per_s"] = row["files"] / row["wall_s"]
            row["audio_s_per_s"] = row["audio_s"] / row["wall_s"]
            row["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            rows.append(row)
            print(json.dumps(row), flush=True)
    with open(ROOT / "benchmarks" / "results.jsonl", "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    if opts.markdown:
        print(markdown(rows))


def markdown(rows: list[dict]) -> str:
    """The table for docs/benchmarks.md: each row beside today's and beside the bound of its parallelism."""
    lines = [
        "| folder | run | files/s | audio-s/s | wall s | CPU s | files/s vs today | bound / this, wall "
        "| bound / this, CPU | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        same = [r for r in rows if r["folder"] == row["folder"]]
        today = next((r for r in same if r["config"].startswith("today (defaults)")), None)
        bound = next(
            (r for r in same if r["config"].startswith("backend only") and r["parallel"] == row["parallel"]),
            None,
        )
        vs_today = f"{row['files_per_s'] / today['files_per_s']:.2f}x" if today else "–"  # --only runs
        vs_bound = (
            f"{bound['wall_s'] / row['wall_s']:.2f} | {bound['cpu_s'] / row['cpu_s']:.2f}"
            if bound
            else "– | –"
        )
        lines.append(
            f"| {row['folder']} ({row['files']} files, {row['audio_s']:.0f} s) | {row['config']} "
            f"| {row['files_per_s']:.2f} | {row['audio_s_per_s']:.1f} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} "
            f"| {vs_today} | {vs_bound} | {row['load_before']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
