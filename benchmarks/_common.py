"""Shared by the benchmark scripts: machine description and best-of-k timing."""

import os
import platform
import sys

import numpy as np
import scipy

import klfrontier


def machine_info():
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "klfrontier": getattr(klfrontier, "__version__", "?"),
    }
    try:  # the CPU model is worth having next to the timings
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def best_time(fn, repeats):
    """Best wall time of ``repeats`` calls of ``fn`` and the last result."""
    import time

    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out
