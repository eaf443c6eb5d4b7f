"""``denoise fetch-weights``: put pretrained weights into the local store ahead of time (image builds)."""

from __future__ import annotations

import argparse
import sys

HELP = (
    "Download (or copy from $DENOISE_WEIGHTS_MIRROR) pretrained weights into the local store and verify "
    "their sha256. With no NAME, lists the known weights."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="weights names; 'all' for every published one")
    p.add_argument("--list", action="store_true", help="list known weights and whether they are present")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from denoise_models.weights import WeightsError, fetch, manifest, store_dir

    entries = manifest()
    if args.list or not args.names:
        print(f"local store: {store_dir()}")
        for name, e in sorted(entries.items()):
            present = "present" if (store_dir() / e.file).is_file() else "absent"
            size = f"{e.size / 1e6:.1f} MB" if e.size else ""
            print(f"  {name:28s} {e.arch:18s} {size:>9s}  {present:8s} {e.license:10s} {e.description}")
        return 0
    names = [n for n in entries if not entries[n].local] if args.names == ["all"] else args.names
    failed = 0
    for name in names:
        try:
            path = fetch(name, progress=not args.quiet)
            print(f"✓ {name}: {path}")
        except WeightsError as err:
            failed += 1
            print(f"✗ {err}", file=sys.stderr)
    return 2 if failed else 0
