"""Device and precision choice: CUDA when present, CPU otherwise; mixed precision on CUDA only.

Mixed precision (bfloat16 autocast) halves memory traffic on GPUs; on CPU it is slower and
changes numbers, so it is never used there. Thread counts are capped because the campaign runs
several searches per node and torch would otherwise oversubscribe the cores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

DevicePreference = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "float32", "bfloat16"]
_CPU = torch.device("cpu")


def select_device(preference: DevicePreference = "auto") -> torch.device:
    """The device to train on: ``cuda`` when asked or available (``auto``), else ``cpu``.

    Raises:
        ValueError: when ``cuda`` is asked for and no GPU is visible, or on an unknown name.
    """
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "option 'device': 'cuda' requested but no GPU is visible; allowed: auto, cpu"
            )
        return torch.device("cuda")
    if preference == "cpu":
        return torch.device("cpu")
    raise ValueError(f"option 'device': {preference!r} not allowed; allowed: auto, cpu, cuda")


def use_mixed_precision(device: torch.device, precision: Precision = "auto") -> bool:
    """Whether to autocast to bfloat16: only on CUDA (``auto`` or ``bfloat16``)."""
    return device.type == "cuda" and precision in ("auto", "bfloat16")


@contextlib.contextmanager
def autocast(device: torch.device, precision: Precision = "auto") -> Iterator[None]:
    """bfloat16 autocast on CUDA when :func:`use_mixed_precision` says so, a no-op otherwise."""
    if use_mixed_precision(device, precision):
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def configure_threads(n_threads: int | None) -> None:
    """Cap torch's intra-op threads (``None`` leaves torch's default)."""
    if n_threads is not None:
        torch.set_num_threads(max(1, int(n_threads)))


@contextlib.contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Cap torch's intra-op threads inside the block and restore them afterwards.

    Small networks gain nothing from a second thread, and on a node shared with other jobs
    two spinning threads made a flow's training seven times slower than one.
    """
    previous = torch.get_num_threads()
    configure_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Make ``dtype`` torch's default dtype inside the block and restore the previous one after.

    Results must not depend on what else ran in the process. BoTorch users often set
    ``torch.set_default_dtype(torch.float64)``, and pyhf's pytorch backend at 64-bit precision
    sets it when switched on. A network built under that default trained in double precision,
    so the same seed gave another model (an autoencoder test kept 321 instead of 382 events
    after a pyhf reference fit had run in the same process), and the CATHODE flow failed on
    float32 inputs. The networks therefore run in float32 and the GP surrogates in float64,
    whatever the default outside.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextlib.contextmanager
def seeded_global_rng(seed: int, *, device: torch.device = _CPU) -> Iterator[None]:
    """Seed torch's global generator for ``device`` inside the block and restore it afterwards.

    Layer initialisation, dropout masks and a flow's samples come from the global generator, not
    from a ``torch.Generator`` that can be passed in. Unseeded, a classifier trained with
    dropout depended on every random draw made earlier in the process: in a Ray worker, on
    which tasks had run there before. Only the generator of ``device`` is touched (forking all
    of them would start CUDA in a process that fits a GP on the CPU), and its state is restored,
    so the caller's own random stream stays where it was.
    """
    cuda = device.type == "cuda"
    index = (torch.cuda.current_device() if device.index is None else device.index) if cuda else 0
    with torch.random.fork_rng(devices=[index] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


@contextlib.contextmanager
def cpu_threads(n_threads: int = 1) -> Iterator[None]:
    """Limit OpenMP/BLAS threads (sklearn, numpy) inside the block.

    Spinning OpenMP workers on a shared, oversubscribed node can make a 0.4 s gradient-boosting
    fit take 14 s; one thread per task, with parallelism from running tasks side by side
    (Ray), is the robust default.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, int(n_threads))):
        yield
