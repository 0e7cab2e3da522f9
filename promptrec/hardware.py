"""Which device and dtype a generator runs in: chosen from the hardware, never a fixed bf16.

``dtype="auto"`` (the default of every backend):

* CUDA: bfloat16 where the GPU supports it, else float16.
* CPU: bfloat16 only where torch dispatches to an ISA with a bf16 path (AVX512-BF16 or AMX)
  and the kernel library is allowed to use it; else float32. On an AVX2-only CPU bf16 has no
  hardware path: SmolLM2-135M, one 600-token forward on 2 threads, took 9.0 s in bf16 against
  1.47 s in float32 (6.1x). Where AVX512-BF16 or AMX exists bf16 is 2-3x faster than float32.

`hardware_info` describes the machine for results, eval manifests and benchmarks.
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` makes a bf16-capable CPU behave (and be
reported) as an AVX2 one, which is how the AVX2 figures can be reproduced anywhere.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from functools import lru_cache

from pydantic import BaseModel

DTYPE_NAMES: dict[str, str] = {
    "auto": "auto",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}

# ATen CPU capabilities with vector units wide enough for the bf16 instructions.
_BF16_CAPABLE_ATEN = {"AVX512", "AMX", "AVX512_BF16"}
# oneDNN ISA caps below which oneDNN will not use AVX512-BF16 / AMX.
_ONEDNN_BELOW_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


class HardwareInfo(BaseModel):
    """Where a generator runs: device, dtype and (on CPU) what the CPU can do."""

    device: str  # "cpu" or "cuda" / "cuda:0"
    dtype: str  # the dtype actually used: float32 | bfloat16 | float16
    cpu_capability: str  # torch.backends.cpu.get_cpu_capability(), e.g. "AVX2", "AVX512"
    cpu_bf16: bool  # bf16 has a hardware path on this CPU (AVX512-BF16 or AMX, not capped)
    torch_threads: int
    gpu: str | None = None  # the CUDA device's name


def normalize_dtype(name: str | None) -> str:
    """A dtype name in canonical form ("auto", "float32", "bfloat16", "float16")."""
    key = "auto" if name is None else str(name).lower().replace("torch.", "")
    try:
        return DTYPE_NAMES[key]
    except KeyError:
        raise ValueError(
            f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16 (setting ranker.dtype)"
        ) from None


@lru_cache(maxsize=1)
def cpu_capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """bf16 has a hardware path here: AVX512-BF16 or AMX present, and neither ATen nor oneDNN
    is capped below it (``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA``)."""
    import torch

    if cpu_capability().upper() not in _BF16_CAPABLE_ATEN:
        return False
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()
    if cap in _ONEDNN_BELOW_BF16:
        return False
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(p()) for p in probes if p is not None)


def resolve_device(device: str = "auto") -> str:
    """"auto" → "cuda" when a CUDA device is visible to torch, else "cpu"."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def auto_dtype(device: str) -> str:
    """The fastest dtype that keeps the scores usable on ``device`` (see the module docstring)."""
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_fast_bf16() else "float32"


def resolve_dtype_name(dtype: str | None, device: str) -> str:
    """A concrete dtype name for ``device``: "auto" is decided from the hardware."""
    name = normalize_dtype(dtype)
    return auto_dtype(resolve_device(device)) if name == "auto" else name


def hardware_info(device: str, dtype: str) -> HardwareInfo:
    import torch

    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None
    return HardwareInfo(
        device=device,
        dtype=normalize_dtype(dtype),
        cpu_capability=cpu_capability(),
        cpu_bf16=cpu_has_fast_bf16(),
        torch_threads=torch.get_num_threads(),
        gpu=gpu,
    )


def set_compute_threads(threads: int) -> Callable[[], None]:
    """Use ``threads`` threads for torch and for the BLAS and OpenMP pools (threadpoolctl) in this
    process; returns what restores the counts before. Two processes with equal counts sum
    floats in the same order, so they score bit-equal (other counts can differ in the last digits)."""
    import threadpoolctl
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    limits = threadpoolctl.threadpool_limits(threads)

    def restore() -> None:
        limits.restore_original_limits()
        torch.set_num_threads(before)

    return restore


@contextlib.contextmanager
def compute_threads(threads: int | None) -> Iterator[None]:
    """`set_compute_threads` for the block (None: the counts as they are)."""
    if not threads:
        yield
        return
    restore = set_compute_threads(threads)
    try:
        yield
    finally:
        restore()


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far, in bytes (getrusage; Linux counts KiB)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
