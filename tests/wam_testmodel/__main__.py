"""``python -m wam_testmodel --out DIR``: writes the test bundle into DIR."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import write_bundle


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wam_testmodel",
        description="Write the wam_test_v1 test bundle (wam.yaml + 4 ONNX stages + vocab).",
    )
    parser.add_argument(
        "--out", required=True, help="output folder (created if missing; files are overwritten)"
    )
    parser.add_argument(
        "--nan-on-unknown-word",
        action="store_true",
        help="write the faulty variant: NaN actions when the instruction's first word is unknown",
    )
    args = parser.parse_args(argv)
    for path in write_bundle(args.out, nan_on_unknown_word=args.nan_on_unknown_word):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
