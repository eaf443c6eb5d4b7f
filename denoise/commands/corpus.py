"""``denoise corpus``: the engine of ``denoise run`` on a Ray cluster, for folders, globs or manifests of files
that may live on object storage (``s3://...``), with a run manifest and resume.

A command of its own rather than ``run --cluster``: its inputs are URLs and tables, not a local folder,
and it has options (cluster address, workers, per-worker CPUs/GPUs, storage options) that mean nothing to
the single-machine runner, which must keep working without Ray installed.
"""

from __future__ import annotations

import argparse
import sys

from denoise.commands.engine_options import add_engine_arguments, engine_config

HELP = (
    "Denoise a corpus on a Ray cluster (or a local Ray started for the run). INPUT is a folder, a glob, an "
    "audio file, or a CSV/JSONL/Parquet table with a 'path' column; INPUT and OUTPUT may be local or fsspec "
    "URLs (s3://bucket/prefix, credentials the usual AWS way). One JSONL row per input goes to the manifest "
    "as files finish; a second run skips inputs done with the same settings whose output is intact. "
    "Exit status: 0 all good, 1 some files failed, 2 nothing could run."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input", "-i", required=True, help="folder, glob, audio file or input manifest (path/URL)"
    )
    p.add_argument("--output", "-o", required=True, help="output folder (path or URL); sub-folders mirrored")
    p.add_argument(
        "--manifest", default=None, help="run manifest, a local JSONL (default: OUTPUT/manifest.jsonl)"
    )
    g = p.add_argument_group("cluster")
    g.add_argument(
        "--address",
        default=None,
        help="Ray cluster: 'auto', HOST:PORT or ray://HOST:10001 (default: $RAY_ADDRESS, else a local Ray)",
    )
    g.add_argument("--workers", type=int, default=1, help="actors, each loading the model once (default: 1)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs reserved per actor (default: 1)")
    g.add_argument(
        "--gpus-per-worker", type=float, default=0.0, help="GPUs per actor; fractions share a GPU, e.g. 0.25"
    )
    g.add_argument(
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec option for INPUT/OUTPUT, e.g. endpoint_url=http://minio:9000 (repeatable)",
    )
    add_engine_arguments(p)
    o = p.add_argument_group("outputs and records")
    o.add_argument(
        "--format", dest="out_format", default=None, help="output container by extension, e.g. flac"
    )
    o.add_argument("--subtype", default=None, help="output sample format, e.g. PCM_16 (default: as input)")
    o.add_argument(
        "--score", action="store_true", help="record DNSMOS SIG/BAK/OVRL before and after per file"
    )
    o.add_argument("--hash-inputs", action="store_true", help="record each input's sha256 (resume checks it)")
    o.add_argument("--quiet", "-q", action="store_true", help="no per-file lines or progress bars")


def parse_storage_options(pairs: list[str]) -> dict[str, object]:
    """``["endpoint_url=http://h:9000", "anon=true"]`` -> fsspec keyword arguments (true/false become bools)."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option {pair!r}: expected KEY=VALUE")
        options[key] = {"true": True, "false": False}.get(value.lower(), value)
    # s3fs takes the endpoint inside client_kwargs; accept the flat spelling people type
    if "endpoint_url" in options:
        options.setdefault("client_kwargs", {})["endpoint_url"] = options.pop("endpoint_url")  # type: ignore[index]
    return options


def main(args: argparse.Namespace) -> int:
    from denoise.corpus import CorpusError, CorpusOptions, run_corpus
    from denoise.corpus.driver import EXIT_SETUP

    try:
        options = CorpusOptions(
            input=args.input,
            output=args.output,
            manifest=args.manifest,
            address=args.address,
            workers=args.workers,
            cpus_per_worker=args.cpus_per_worker,
            gpus_per_worker=args.gpus_per_worker,
            storage_options=parse_storage_options(args.storage_option),
            suffix="." + args.out_format.lower().lstrip(".")
            if args.out_format
            else (".wav" if args.compat else None),
            subtype=args.subtype,
            score=args.score,
            hash_inputs=args.hash_inputs,
            progress=not args.quiet,
        )
        summary = run_corpus(engine_config(args), options)
    except (CorpusError, ValueError, ImportError, FileNotFoundError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_SETUP
    except Exception as err:
        from denoise_models import WeightsError

        if isinstance(err, WeightsError):
            print(f"error: {err}", file=sys.stderr)
            return EXIT_SETUP
        raise
    for line in summary.lines():
        print(line, file=sys.stderr)
    return summary.exit_code
