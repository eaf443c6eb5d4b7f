"""FRCRN side by side with the ModelScope reference implementation: same weights, same input, one run.

The reference runs in its own interpreter (a separate venv with ``torch==2.13.0`` and ``modelscope==1.40.2``;
never the project's), ours in this one; both in fresh subprocesses so each peak RSS is its own::

    python -m venv /tmp/msvenv && /tmp/msvenv/bin/pip install torch==2.13.0 && \
        /tmp/msvenv/bin/pip install modelscope==1.40.2 numpy scipy addict six
    python benchmarks/compare_modelscope.py --reference-python /tmp/msvenv/bin/python

Measured: the ModelScope ``FRCRN`` module's forward on the whole input in one call (what its ANSPipeline
does up to 120 s; the pipeline adds only I/O and level normalisation), against our engine with the torch
backend (default chunking) and with ONNX Runtime FP32/INT8 graphs. Parity: the reference's ``wav_l2`` against
our torch backend on the same raw input (no level normalisation), max abs difference. Weights: the FRCRN
test weights (seed 0), the released architecture and cost.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
CONFIG = dict(
    complex=True, model_complexity=45, model_depth=14, log_amp=False, padding_mode="zeros",
    win_len=640, win_inc=320, fft_len=640, win_type="hann",
)  # fmt: skip


def reference_child(weights: str, wav_npy: str, out_npy: str, threads: int, repeats: int) -> dict:
    """Runs inside the ModelScope venv: time the reference forward, save its ``wav_l2``."""
    import torch
    from modelscope.models.audio.ans.frcrn import FRCRN

    torch.set_num_threads(threads)
    net = FRCRN(**CONFIG)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=False)  # as ModelScope itself loads the released file
    net.eval()
    x = torch.from_numpy(np.load(wav_npy))
    times, cpu_times = [], []
    with torch.no_grad():
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            y = net(x)[4]
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
    np.save(out_npy, y.numpy())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"times": times, "cpu_times": cpu_times, "peak_rss_mb": peak}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference-python", default="/tmp/msvenv/bin/python")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workdir", default="/tmp/denoise-bench", help="ORT graphs from run_benchmarks.py")
    p.add_argument("--out", default=None, help="append JSON lines here")
    p.add_argument(
        "--network", action="store_true", help="also time our networks alone (one call on the whole input)"
    )
    p.add_argument(
        "--child", nargs=5, metavar=("WEIGHTS", "IN", "OUT", "THREADS", "REPEATS"), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    if args.child:
        w, i, o, t, r = args.child
        print(json.dumps(reference_child(w, i, o, int(t), int(r))))
        return 0

    sys.path.insert(0, str(HERE.parents[1]))
    from denoise.backends.torch_backend import TorchBackend
    from denoise.bench import TABLE_HEADER, BenchConfig, format_row, make_input, measure
    from denoise.tutorial import shared_dir

    weights = str(shared_dir() / "fixtures/frcrn/frcrn_testweights_seed0.pt")
    x, sr = make_input(args.seconds)
    assert sr == 16000
    x = x[:, : (x.shape[1] // 320) * 320]  # whole frames: both implementations return the same length
    rows = []
    print(TABLE_HEADER, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav, ref_out = Path(tmp) / "x.npy", Path(tmp) / "ref.npy"
        np.save(wav, x)
        for threads in args.threads:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            cmd = [
                args.reference_python,
                str(HERE),
                "--child",
                weights,
                str(wav),
                str(ref_out),
                str(threads),
                str(args.repeats),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            ref = json.loads(proc.stdout.strip().splitlines()[-1])
            ref_rtf = min(ref["times"]) / args.seconds
            ref_cpu = min(ref["cpu_times"]) / args.seconds
            audio = f"{args.seconds:.0f} s"
            rows.append(
                f"| frcrn | ModelScope 1.40.2 reference (forward only) | {audio} | {threads} | {ref_rtf:.3f} | "
                f"{ref_cpu:.3f} | {min(ref['times']):.2f} s | {ref['peak_rss_mb']:,.0f} MB | - |"
            )
            print(rows[-1], flush=True)
            ours = []
            graphs = {"torch FP32": None, "ORT FP32": "frcrn.onnx", "ORT INT8": "frcrn.int8.onnx"}
            for engine in [True, False] if args.network else [True]:
                for name, graph in graphs.items():
                    path = None if graph is None else Path(args.workdir) / graph
                    if path is not None and not path.is_file():
                        continue
                    label = f"ours: {'engine' if engine else 'network only'}, {name}"
                    backend = "torch" if path is None else "onnx"
                    ours.append(
                        BenchConfig(
                            "frcrn", weights, backend, None if path is None else str(path), label, args.seconds,
                            threads, args.repeats, engine=engine,
                        )
                    )  # fmt: skip
            for config in ours:
                r = measure(config)
                rows.append(
                    format_row(r)
                    + f" {ref_rtf / r.rtf:.2f}x wall, {ref_cpu / r.cpu_rtf:.2f}x CPU vs reference"
                )
                print(rows[-1], flush=True)
                if args.out:
                    with open(args.out, "a") as fh:
                        fh.write(
                            json.dumps({**r.as_dict(), "reference_rtf": ref_rtf, "reference": ref}) + "\n"
                        )
        y_ref = np.load(ref_out)
        y_ours = TorchBackend("frcrn", weights, device="cpu").process(x)
        n = min(y_ref.shape[1], y_ours.shape[1])
        diff = float(np.max(np.abs(y_ref[:, :n] - y_ours[:, :n])))
        print(f"parity on the same {args.seconds:.0f} s input: max |reference - ours (torch)| = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
