"""Config dataclasses: the small, explicit description from which a model is rebuilt.

A saved model is ``(architecture name, config, weights)``. Configs are plain dataclasses whose
fields are JSON types (or tuples/lists of them), so they round-trip through the safetensors
header without pickle.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

from ..errors import SynthsegError

C = TypeVar("C")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Turn a config dataclass into a JSON-ready dict."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild ``cls`` from a dict, refusing unknown or missing fields with a clear message."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # C is a dataclass type (checked by callers' annotations)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SynthsegError(
            f"{cls.__name__} does not know the settings {', '.join(unknown)}; "
            "the file was made by another version or another model"
        )
    kwargs = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise SynthsegError(f"{cls.__name__} setting {name!r} is missing from the file")
            continue
        value = data[name]
        # JSON has no tuples; restore them where the default is a tuple.
        default = field.default if field.default is not dataclasses.MISSING else None
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)
