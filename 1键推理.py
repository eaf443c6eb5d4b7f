"""One-click batch denoising: every audio file in input/ -> output/ (FRCRN, GPU when present).

    python 1键推理.py                      # defaults: input/ -> output/, FRCRN, device auto
    python 1键推理.py --model gtcrn        # the light model (fast on CPU)
    python 1键推理.py --help               # every option

This script is `denoise run` with folders beside this file as defaults; all logic lives in the
`denoise` package. Rerun it after an interruption: what is done (see output/.denoise-manifest.jsonl)
is skipped. Exit status: 0 all done, 1 some files failed, 2 nothing could run, 130/143 interrupted.
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # works from a plain checkout too, before `pip install -e .`


def main() -> int:
    try:
        from denoise.commands import run
    except KeyboardInterrupt:  # Ctrl-C while the libraries load: nothing was written, no traceback
        print("interrupted — nothing was written", file=sys.stderr)
        return 130
    parser = argparse.ArgumentParser(prog="1键推理.py", description=run.HELP)
    run.add_arguments(parser, input_default=str(HERE / "input"), output_default=str(HERE / "output"))
    return run.main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
