"""One-click batch denoising: every audio file in input/ -> output/ (FRCRN, GPU when present).

    python 1键推理.py                      # defaults: input/ -> output/, FRCRN, device auto
    python 1键推理.py --model gtcrn        # the light model (fast on CPU)
    python 1键推理.py --help               # every option

This script is `denoise run` with folders beside this file as defaults; all logic lives in the
`denoise` package.
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # works from a plain checkout too, before `pip install -e .`

from denoise.commands import run  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="1键推理.py", description=run.HELP)
    run.add_arguments(parser, input_default=str(HERE / "input"), output_default=str(HERE / "output"))
    sys.exit(run.main(parser.parse_args()))
