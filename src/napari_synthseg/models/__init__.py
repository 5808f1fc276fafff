"""Shared model plumbing: device choice, config dataclasses, safetensors weights."""

from .config import config_from_dict, config_to_dict
from .device import autocast_context, select_device
from .weights import (
    LoadedModel,
    file_sha256,
    load_extra_tensors,
    load_model,
    read_model_info,
    register_architecture,
    save_model,
)

__all__ = [
    "LoadedModel",
    "autocast_context",
    "config_from_dict",
    "config_to_dict",
    "file_sha256",
    "load_extra_tensors",
    "load_model",
    "read_model_info",
    "register_architecture",
    "save_model",
    "select_device",
]
