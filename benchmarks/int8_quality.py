"""Quality change of a quantized graph against torch on every shared VoiceBank-DEMAND pair (PESQ-WB, DNSMOS).

    DENOISE_WEIGHTS_MIRROR=../shared/weights python benchmarks/int8_quality.py GRAPH.int8.onnx --weights default

Uses :func:`denoise.parity.parity_report` (same engine for both sides) with all pairs in
``../shared/eval/vbd``; prints the per-pair table, the mean change and the worst pair, and can save JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from denoise.parity import parity_report
from denoise.tutorial import shared_dir


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("graph")
    p.add_argument("--weights", default="default")
    p.add_argument("--limit", type=int, default=None, help="first N pairs only")
    p.add_argument("--json", default=None, help="write the report here")
    args = p.parse_args()
    stems = sorted(f.stem for f in (shared_dir() / "eval/vbd/noisy").glob("*.wav"))[: args.limit]
    report = parity_report(args.graph, args.weights, shared=shared_dir(), quality_pairs=stems)
    print(report.as_text())
    drops = sorted(report.quality, key=lambda r: r.pesq_onnx - r.pesq_torch)
    if drops:
        w = drops[0]
        print(
            f"worst pair: {w.name} PESQ {w.pesq_torch:.3f} -> {w.pesq_onnx:.3f}; pairs scored: {len(drops)}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
