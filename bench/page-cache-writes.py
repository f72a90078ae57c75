#!/usr/bin/env python3
"""How long a 20 MB write takes appending to a new file against writing over cached pages.

    python3 bench/page-cache-writes.py [DIR]

Writes 20 MB twenty times with an fdatasync after each: once appending to a new file, then
twice over the start of one file. Prints the median and the slowest write of each. On the
benchmark VMs the append took ~180 ms a write and the overwrite ~2 ms (BENCHMARKS.md, issue 3,
thirteenth session): why the write-ahead log writes over its removed segments.

Then, as the table commits write Parquet files: forty new 4 MiB files, twice each way, 15 s
apart (long enough for freed memory to go cold): kept in the page cache, and synced then dropped
from it (`fdatasync` + `POSIX_FADV_DONTNEED`), so that the next file reuses the pages. Prints
the total time of the forty writes (BENCHMARKS.md, issue 3, fourteenth session).
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


def files(dropped, count=40):
    buf = BUF[: 4 << 20]
    times = []
    paths = [os.path.join(DIR, f"pcw-file-{i}") for i in range(count)]
    for path in paths:
        t = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, buf)
        if dropped:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        times.append(time.perf_counter() - t)
    for path in paths:
        os.unlink(path)
    times.sort()
    kind = "new files, synced and dropped" if dropped else "new files, kept in cache"
    print(f"{kind:30} median {times[count // 2] * 1e3:6.1f} ms  total {sum(times) * 1e3:7.1f} ms")


new, over = os.path.join(DIR, "pcw-new"), os.path.join(DIR, "pcw-over")
try:
    run(new, False)
    run(over, True)
    run(over, True)
finally:
    for p in (new, over):
        if os.path.exists(p):
            os.unlink(p)
for _ in range(2):
    for dropped in (False, True):
        time.sleep(15)
        files(dropped)
