"""The speed/memory matrix of docs/benchmarks.md: torch FP32, ORT FP32, ORT INT8 (and GTCRN streaming) for
FRCRN and GTCRN, 10 s and 10 min of speech, 1 and 2 threads; every configuration in a fresh process.

    DENOISE_WEIGHTS_MIRROR=../shared/weights python benchmarks/run_benchmarks.py --out /tmp/bench.jsonl
    python benchmarks/run_benchmarks.py --only gtcrn --long      # include the 10-minute inputs

FRCRN runs on the test weights (``../shared/fixtures/frcrn/frcrn_testweights_seed0.pt``): the same network
and cost as the released model, whose weights cannot be downloaded here. Results are appended to ``--out``
(one JSON object per line) and printed as markdown rows. Not a test: timings depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from denoise.bench import TABLE_HEADER, BenchConfig, format_row, measure
from denoise.export import ExportConfig, export_onnx, quantize_onnx
from denoise.tutorial import shared_dir


def graphs(workdir: Path, arch: str, weights: str) -> dict[str, Path]:
    """FP32 and INT8 graphs of ``arch`` in ``workdir`` (exported once, reused)."""
    fp32, int8 = workdir / f"{arch}.onnx", workdir / f"{arch}.int8.onnx"
    if not fp32.is_file():
        export_onnx(ExportConfig(arch, weights, fp32))
    if not int8.is_file():
        quantize_onnx(fp32, int8, "int8")
    return {"ORT FP32": fp32, "ORT INT8": int8}


def configs(args: argparse.Namespace, workdir: Path) -> list[BenchConfig]:
    frcrn_w = str(shared_dir() / "fixtures/frcrn/frcrn_testweights_seed0.pt")
    out: list[BenchConfig] = []
    for arch, weights in (("frcrn", frcrn_w), ("gtcrn", "default")):
        if args.only and arch != args.only:
            continue
        variants = [("torch FP32", "torch", None)]
        variants += [(label, "onnx", str(p)) for label, p in graphs(workdir, arch, weights).items()]
        if arch == "gtcrn":
            variants.append(("ORT stream (official graph)", "gtcrn-stream", None))
        durations = [10.0] + ([600.0] if args.long else [])
        for seconds in durations:
            for threads in (1, 2):
                for label, backend, path in variants:
                    if arch == "frcrn" and seconds > 60 and not args.frcrn_long:
                        continue  # 20-60 min each on this CPU; the engine chunks, so RTF does not grow with length
                    if backend == "gtcrn-stream" and threads == 2:
                        continue  # one frame per call: a second thread cannot help
                    repeats = 1 if seconds > 60 else (2 if arch == "frcrn" else args.repeats)
                    out.append(BenchConfig(arch, weights, backend, path, label, seconds, threads, repeats))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results.jsonl", help="JSON lines file to append to")
    p.add_argument("--workdir", default="/tmp/denoise-bench", help="where the exported graphs go")
    p.add_argument("--only", choices=["frcrn", "gtcrn"], default=None)
    p.add_argument("--long", action="store_true", help="also the 10-minute inputs")
    p.add_argument("--frcrn-long", action="store_true", help="FRCRN on 10 minutes too (very slow)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(TABLE_HEADER, flush=True)
    for config in configs(args, workdir):
        try:
            result = measure(config)
        except RuntimeError as err:
            print(f"| {config.model} | {config.label} | failed: {str(err).splitlines()[-1]} |", flush=True)
            continue
        with open(args.out, "a") as fh:
            fh.write(json.dumps(result.as_dict()) + "\n")
        print(format_row(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
