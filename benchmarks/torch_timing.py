"""Timing shared by the PyTorch benchmark scripts (torch_resnet50.py, torch_small.py): one
warm-up step, then steps until min_time has passed, printed as compare.sh parses it:
`case  ms/iter  images/s (n iterations)`, optionally with the process's peak RSS."""

import resource
import time


def peak_rss_mib():
    # Linux reports ru_maxrss in KiB; a high-water mark over everything this process ran.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(case, step, batch, min_time, rss, width=14):
    step()  # warm-up, as the C++ benchmarks; also creates optimizer state
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            break
    ms = 1000 * elapsed / n
    line = f"{case:{width}s} {ms:10.1f} ms/iter {batch * n / elapsed:9.2f} images/s ({n} iterations)"
    if rss:
        line += f" peak RSS {peak_rss_mib():.0f} MiB"
    print(line, flush=True)
