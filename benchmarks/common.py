"""What the benchmarks share: waiting for the device, timing a call, GPU memory, medians and tables.

Imported by the scripts beside it (`from common import timed`); running one puts this folder on the
path. Importing it imports torch and does nothing else."""
import gc
import statistics
import time
from typing import Callable, Iterable, Sequence

import torch

GB = 1024 ** 3


def sync(device: torch.device | str):
    "Wait until the work queued on `device` is done (a CUDA device; a CPU runs each operation when it is called)."
    if torch.device(device).type == 'cuda': torch.cuda.synchronize(device)


def timed(fn: Callable, device: torch.device | str = 'cpu') -> tuple[float, object]:
    "The seconds `fn()` takes, the work it queued on `device` included, and its result."
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def reset_peak(device: torch.device | str):
    "Collect garbage, give cached GPU blocks back, and count `device`'s peak memory from here."
    gc.collect()
    if torch.device(device).type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def memory_gb(device: torch.device | str, peak: bool = False) -> float:
    "GiB of GPU memory allocated on `device` now, or (`peak`) at most since `reset_peak`; NaN off CUDA."
    if torch.device(device).type != 'cuda': return float('nan')
    return (torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)) / GB


def median_ms(seconds: Iterable[float]) -> str:
    "The median of `seconds`, in milliseconds, for a line of figures."
    return f'median {1000 * statistics.median(seconds):6.1f} ms'


def fmt(v) -> str:
    "A figure for a table: floats to 3 significant digits, anything else as it is."
    return f'{v:.3g}' if isinstance(v, float) else str(v)


def print_table(rows: Sequence[dict], cols: Sequence[str], width: int = 12):
    "Print `rows` (dicts) as columns `cols`, right-aligned, '-' for a missing value and a row's 'error' after it."
    print(' | '.join(f'{c:>{width}}' for c in cols))
    for r in rows:
        print(' | '.join(f'{fmt(r.get(c, "-")):>{width}}' for c in cols) + (f'   {r["error"]}' if 'error' in r else ''))


def quantile(xs: Iterable[float], q: float) -> float:
    "The `q` quantile of `xs` (the value at rank `q` of them sorted, p99 of few values being their largest); NaN for none."
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float('nan')
