"""Machine description written next to every benchmark's timings."""

import os
import platform
import sys

import numpy as np
import scipy

import klfrontier


def machine_info():
    info = {"platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0], "numpy": np.__version__,
            "scipy": scipy.__version__, "klfrontier": getattr(klfrontier, "__version__", "?")}
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
