"""Save and load models as safetensors with their config and provenance.

The file header carries ``format`` (always ``napari-synthseg``), ``format_version``,
``architecture`` (a registered name), ``config`` (JSON) and ``provenance`` (JSON: data hashes,
steps, time, metrics...). Loading checks all of these before building the module, and refuses
anything that is not a safetensors file (a pickle, a zip ``.pt``, a truncated file) without ever
unpickling it.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import SynthsegError
from ..utils.atomic import atomic_path
from .config import config_from_dict, config_to_dict

FORMAT_NAME = "napari-synthseg"
FORMAT_VERSION = 1

# architecture name -> (module class, config class)
_REGISTRY: dict[str, tuple[type[torch.nn.Module], type]] = {}


def register_architecture(name: str, config_cls: type) -> Callable[[type], type]:
    """Class decorator: make a ``torch.nn.Module`` loadable by name.

    The module's ``__init__`` must take its config dataclass as the only argument.
    """

    def decorate(module_cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name][0] is not module_cls:
            raise RuntimeError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = (module_cls, config_cls)
        module_cls.architecture = name  # type: ignore[attr-defined]
        return module_cls

    return decorate


@dataclass
class LoadedModel:
    """What :func:`load_model` returns."""

    module: torch.nn.Module
    config: Any
    architecture: str
    provenance: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""


def _header(path: Path) -> dict[str, Any]:
    """Read and sanity-check the safetensors JSON header without touching tensors."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(9)
            if len(head) < 9:
                raise SynthsegError(f"{path.name} is not a model file (too short)")
            (n,) = struct.unpack("<Q", head[:8])
            # A safetensors file is its header length (u64, little endian) and then a JSON
            # object. Only when that does not fit is the file checked for a pickle's or a zip's
            # signature: a header length of 128 + 256k bytes also starts with 0x80.
            if not (head[8:9] == b"{" and 0 < n <= min(size - 8, 100_000_000)):
                if head[:2] == b"PK":
                    raise SynthsegError(
                        f"{path.name} is a zip/pickle checkpoint (torch.save); only safetensors "
                        "files are loaded, because pickles can run arbitrary code"
                    )
                if head[:1] == b"\x80":
                    raise SynthsegError(
                        f"{path.name} is a pickle; only safetensors files are loaded, because "
                        "pickles can run arbitrary code"
                    )
                raise SynthsegError(f"{path.name} is not a safetensors file (bad header length)")
            raw = head[8:] + fh.read(n - 1)
            if len(raw) < n:
                raise SynthsegError(f"{path.name} is truncated (its header is cut short)")
        header = json.loads(raw)
    except FileNotFoundError:
        raise SynthsegError(f"model file not found: {path}") from None
    except IsADirectoryError:
        raise SynthsegError(f"{path} is a folder, not a model file") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        # RecursionError: a header nested 100k levels deep
        raise SynthsegError(f"{path.name} is not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise SynthsegError(f"{path.name} is not a safetensors file (the header is not a JSON object)")
    _check_tensor_table(path, header, size - 8 - n)
    return header


def _check_tensor_table(path: Path, header: dict[str, Any], data_bytes: int) -> None:
    """Every tensor entry is well-formed and lies inside the file (a cut file is refused here)."""
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            if entry is not None and not (
                isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())
            ):
                raise SynthsegError(f"{path.name}: the header's metadata must map names to strings")
            continue
        try:
            shape = [int(v) for v in entry["shape"]]
            start, stop = (int(v) for v in entry["data_offsets"])
            str(entry["dtype"])
        except (KeyError, TypeError, ValueError):
            raise SynthsegError(f"{path.name}: tensor {str(name)[:40]!r} has a malformed header entry") from None
        if any(v < 0 for v in shape) or not 0 <= start <= stop:
            raise SynthsegError(f"{path.name}: tensor {str(name)[:40]!r} has a malformed header entry")
        end = max(end, stop)
    if end > data_bytes:
        raise SynthsegError(f"{path.name} is truncated: its tensors need {end} bytes, the file holds {data_bytes}")


def _json_field(path: Path, meta: dict[str, Any], key: str) -> dict[str, Any]:
    try:
        value = json.loads(meta.get(key, "{}"))
    except (json.JSONDecodeError, RecursionError, TypeError):
        raise SynthsegError(f"{path.name}: the {key} in its header is not valid JSON") from None
    if not isinstance(value, dict):
        raise SynthsegError(f"{path.name}: the {key} in its header must be a JSON object")
    return value


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(
    module: torch.nn.Module,
    config: Any,
    path: str | os.PathLike,
    provenance: dict[str, Any] | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``module``'s weights with its config and provenance, atomically.

    ``extra_tensors`` are stored under the ``extra/`` prefix (e.g. fixed noise maps, optimiser-free
    state a model needs at inference).
    """
    architecture = getattr(module, "architecture", None)
    if architecture not in _REGISTRY:
        raise RuntimeError(f"{type(module).__name__} is not a registered architecture")
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    for key, value in (extra_tensors or {}).items():
        tensors[f"extra/{key}"] = value.detach().to("cpu").contiguous()
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "architecture": architecture,
        "config": json.dumps(config_to_dict(config)),
        "provenance": json.dumps(provenance or {}, default=str),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_model_info(path: str | os.PathLike) -> dict[str, Any]:
    """Header information of a saved model: architecture, config dict, provenance."""
    path = Path(path)
    meta = _header(path).get("__metadata__") or {}
    if meta.get("format") != FORMAT_NAME:
        raise SynthsegError(
            f"{path.name} is a safetensors file but not a napari-synthseg model (no format tag)"
        )
    try:
        version = int(meta.get("format_version", "0"))
    except (TypeError, ValueError):
        raise SynthsegError(f"{path.name}: format_version {str(meta.get('format_version'))[:20]!r} is not a number") from None
    if version > FORMAT_VERSION:
        raise SynthsegError(
            f"{path.name} was written by a newer napari-synthseg (format "
            f"{meta.get('format_version')}); update the plugin"
        )
    return {
        "architecture": meta.get("architecture", ""),
        "config": _json_field(path, meta, "config"),
        "provenance": _json_field(path, meta, "provenance"),
    }


def load_model(
    path: str | os.PathLike,
    expected: str | tuple[str, ...] | None = None,
    device: torch.device | str | None = "cpu",
) -> LoadedModel:
    """Load a model saved by :func:`save_model`.

    Parameters
    ----------
    expected : str or tuple of str, optional
        Architecture name(s) the caller can use; anything else is refused with a clear message.
    """
    path = Path(path)
    info = read_model_info(path)
    architecture = info["architecture"]
    if expected is not None:
        allowed = (expected,) if isinstance(expected, str) else tuple(expected)
        if architecture not in allowed:
            raise SynthsegError(
                f"{path.name} holds a {architecture!r} model, but a {' or '.join(allowed)} "
                "model is needed here"
            )
    if architecture not in _REGISTRY:
        raise SynthsegError(f"{path.name} holds an unknown architecture {architecture!r}")
    module_cls, config_cls = _REGISTRY[architecture]
    try:
        config: Any = config_from_dict(config_cls, info["config"])
    except (TypeError, ValueError) as exc:
        raise SynthsegError(f"{path.name}: its {architecture} config is invalid ({str(exc)[:120]})") from None
    _check_shapes_before_building(path, module_cls, config, architecture)
    try:
        module = module_cls(config)
    except (TypeError, ValueError, ZeroDivisionError, RuntimeError) as exc:
        raise SynthsegError(f"{path.name}: its {architecture} config is invalid ({str(exc)[:120]})") from None
    state = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            for key in fh.keys():
                if not key.startswith("extra/"):
                    state[key] = fh.get_tensor(key)
    except Exception as exc:  # safetensors' own error type: cut or inconsistent file
        raise SynthsegError(f"{path.name} is corrupt or truncated ({str(exc).splitlines()[0][:100]})") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape mismatch"
        raise SynthsegError(
            f"{path.name} does not match its {architecture} config ({first})"
        ) from None
    if device is not None:
        module = module.to(device)
    module.eval()
    return LoadedModel(
        module=module,
        config=config,
        architecture=architecture,
        provenance=info["provenance"],
        sha256=file_sha256(path),
    )


def warm_up_model_loading() -> None:
    """Import now what the first :func:`load_model` of a process imports.

    The shape check below builds the module on PyTorch's ``meta`` device; the first time, that
    path imports ``torch._dynamo`` and ``sympy`` (about 800 modules, 1-2 s), holding the GIL in
    chunks of 100-400 ms whichever thread does it. A GUI calls this while it loads, so a model
    loaded in a worker in the middle of a session does not pause the UI thread.
    """
    with torch.device("meta"):
        torch.nn.Embedding(1, 1)  # normal_ init: the path that imports torch._dynamo


def _check_shapes_before_building(path: Path, module_cls, config, architecture: str) -> None:
    """Compare the config's parameter shapes with the file's before allocating anything.

    The module is first built on PyTorch's ``meta`` device (shapes, no memory), so a config
    asking for 60000 channels is refused in milliseconds instead of allocating gigabytes of
    random weights that ``load_state_dict`` would then reject.
    """
    header = _header(path)
    stored = {k: [int(v) for v in e["shape"]] for k, e in header.items()
              if k != "__metadata__" and not k.startswith("extra/")}
    try:
        with torch.device("meta"):
            skeleton = module_cls(config)
    except Exception:  # an architecture whose __init__ computes on real tensors: skip the check
        return
    expected = {k: list(v.shape) for k, v in skeleton.state_dict().items()}
    if expected != stored:
        differing = sorted(set(expected) ^ set(stored)) or sorted(
            k for k in expected if expected[k] != stored.get(k)
        )
        first = differing[0] if differing else "?"
        raise SynthsegError(
            f"{path.name} does not match its {architecture} config (tensor {first[:60]!r}: config wants "
            f"{expected.get(first)}, file has {stored.get(first)})"
        )


def load_extra_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors saved with ``extra_tensors=`` in :func:`save_model`."""
    out = {}
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        for key in fh.keys():
            if key.startswith("extra/"):
                out[key[len("extra/"):]] = fh.get_tensor(key)
    return out
