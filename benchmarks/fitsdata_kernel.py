"""What the raw writer's one pass costs per byte on its own, next to a memory copy of
the same bytes measured in the same run (ADR 0035, ADR 0041).

    python -m benchmarks.fitsdata_kernel [--runs 5] [--files 4]

One file's pixels (16 segments of 2048 x 576 random int32, 75 MB) laid out into a
page-aligned staging buffer, as ``write_raw_fits`` does, ``--files`` times a run, and
the CPU time of this process per GB (``time.process_time``), the best of ``--runs``:

* baseline: ``np.copyto`` of each segment into its place (a memcpy: no swap, no sum);
* ``lay_out`` without the Adler-32: byte swap + ``DATASUM`` (the MD5 path's pass);
* ``lay_out`` with it, block by block while each block is in cache (the default path);
* the Adler-32 as a pass of its own over the laid-out buffer (zlib-ng, as before ADR
  0041), and ``segment_sums`` (the check of pixels that are not laid out: ``RICE_1``).

Printed: CPU s/GB of each and its ratio to the copy. The pixels are fresh for each run
(out of cache, as the DAQ's receive buffers are).
"""

from __future__ import annotations

import argparse
import mmap
import time
from collections.abc import Callable

import numpy as np
from zlib_ng import zlib_ng

from cscs.camera._fitsdata import lay_out, segment_sums

SEGMENTS, ROWS, COLUMNS = 16, 2048, 576
BLOCK = 2880


def _padded(nbytes: int) -> int:
    return -(-nbytes // BLOCK) * BLOCK


def layout() -> tuple[list[int], int]:
    """Each segment's offset in a file whose headers are one block each."""
    offsets, position = [], BLOCK
    for _ in range(SEGMENTS):
        position += BLOCK
        offsets.append(position)
        position += _padded(ROWS * COLUMNS * 4)
    return offsets, position


def ways(staging: mmap.mmap, offsets: list[int]) -> dict[str, Callable[[list[np.ndarray]], object]]:
    view = np.frombuffer(staging, dtype=np.uint8)

    def copy(segments: list[np.ndarray]) -> None:
        for offset, segment in zip(offsets, segments, strict=True):
            np.copyto(view[offset : offset + segment.nbytes], segment.view(np.uint8).reshape(-1))

    return {
        "memcpy (baseline)": copy,
        "lay_out: swap + DATASUM": lambda segments: lay_out(staging, offsets, segments, False),
        "lay_out: swap + DATASUM + Adler-32": lambda segments: lay_out(
            staging, offsets, segments, True
        ),
        "Adler-32 as its own pass (zlib-ng)": lambda _: zlib_ng.adler32(staging),
        "segment_sums (sums only)": segment_sums,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=4, help="files laid out per run")
    args = parser.parse_args()
    offsets, size = layout()
    staging = mmap.mmap(-1, size)
    rng = np.random.default_rng(1)
    best: dict[str, float] = {}
    for _ in range(args.runs):
        for name, way in ways(staging, offsets).items():
            files = [[rng.integers(-(2**31), 2**31 - 1, (ROWS, COLUMNS), dtype=np.int32)
                      for _ in range(SEGMENTS)] for _ in range(args.files)]  # fmt: skip
            start = time.process_time()
            for segments in files:
                way(segments)
            per_gb = (time.process_time() - start) / (args.files * size / 1e9)
            best[name] = min(best.get(name, per_gb), per_gb)
    baseline = best["memcpy (baseline)"]
    print(f"one file: {SEGMENTS} segments, {size / 1e6:.1f} MB; best of {args.runs} runs, "
          f"{args.files} files each; CPU s/GB (ratio to the memcpy)")  # fmt: skip
    for name, per_gb in best.items():
        print(f"  {name:<38} {per_gb:.3f} s/GB  ({per_gb / baseline:.2f}x)")


if __name__ == "__main__":
    main()
