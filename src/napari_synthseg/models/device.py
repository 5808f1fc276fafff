"""One place that decides where models run.

Order: an explicit request, then the ``SYNTHSEG_DEVICE`` environment variable, then CUDA, then
Apple MPS, then CPU. Every model and training loop calls :func:`select_device` so that a user can
force a device for the whole program with one variable.
"""

from __future__ import annotations

import os

import torch

from ..errors import SynthsegError

DEVICE_ENV = "SYNTHSEG_DEVICE"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(preference: str | torch.device | None = None) -> torch.device:
    """Return the device to run on.

    Parameters
    ----------
    preference : str or torch.device, optional
        ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"`` or ``"auto"``. ``None`` or ``"auto"``
        falls back to ``$SYNTHSEG_DEVICE`` and then to cuda > mps > cpu.

    Raises
    ------
    SynthsegError
        If the requested device is not available on this machine.
    """
    if isinstance(preference, torch.device):
        preference = str(preference)
    if preference in (None, "", "auto"):
        preference = os.environ.get(DEVICE_ENV, "auto") or "auto"
    preference = preference.strip().lower()
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SynthsegError(f"device {preference!r} was requested but CUDA is not available here")
        return torch.device(preference)
    if preference == "mps":
        if not _mps_available():
            raise SynthsegError("device 'mps' was requested but Apple MPS is not available here")
        return torch.device("mps")
    if preference == "cpu":
        return torch.device("cpu")
    raise SynthsegError(f"unknown device {preference!r}; use auto, cpu, cuda, cuda:N or mps")


def autocast_context(device: torch.device, enabled: bool = True):
    """Mixed precision on CUDA (bf16 where supported, else fp16); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)
    return torch.autocast(device_type="cpu", enabled=False)
