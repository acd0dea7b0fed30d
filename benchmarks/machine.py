"""Which machine a benchmark figure comes from (recorded beside every figure)."""

import datetime
import os
import platform


def describe() -> dict:
    """CPU model, cores this process may use, GPU (if CUDA is available), torch version, date."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
