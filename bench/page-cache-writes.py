#!/usr/bin/env python3
"""How long a 20 MB write takes appending to a new file against writing over cached pages.

    python3 bench/page-cache-writes.py [DIR]

Writes 20 MB twenty times with an fdatasync after each: once appending to a new file, then
twice over the start of one file. Prints the median and the slowest write of each. On the
benchmark VMs the append took ~180 ms a write and the overwrite ~2 ms (BENCHMARKS.md, issue 3,
thirteenth session): why the write-ahead log writes over its removed segments.
"""
import os
import sys
import tempfile
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else tempfile.gettempdir()
BUF = os.urandom(20 << 20)


def run(path, overwrite):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    times = []
    for _ in range(20):
        if overwrite:
            os.lseek(fd, 0, 0)
        t = time.perf_counter()
        os.write(fd, BUF)
        times.append(time.perf_counter() - t)
        os.fdatasync(fd)
    os.close(fd)
    times.sort()
    kind = "over cached pages" if overwrite else "appending to a new file"
    print(f"{kind:24} median {times[10] * 1e3:6.1f} ms  max {times[-1] * 1e3:6.1f} ms")


new, over = os.path.join(DIR, "pcw-new"), os.path.join(DIR, "pcw-over")
try:
    run(new, False)
    run(over, True)
    run(over, True)
finally:
    for p in (new, over):
        if os.path.exists(p):
            os.unlink(p)
