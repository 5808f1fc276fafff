"""Fill methods by name, including the learned one that lives above the fill layer.

``fill`` knows the classical methods; ``inpaint`` registers ``learned`` and ``generator``
registers ``generated`` (the lesion generator's healthy-lung class, CT only) when they are
imported (they need torch, so they are not imported up front). Every adapter asks here, so the
learned methods are offered and resolved the same way in the CLI, the widgets and batch.
"""

from __future__ import annotations

from ..fill import Filler, available_fillers, get_filler

LEARNED = "learned"
GENERATED = "generated"


def _register_learned(name: str) -> None:
    if name in available_fillers():
        return
    if name == LEARNED:
        from .. import inpaint  # noqa: F401  (registers the learned filler)
    elif name == GENERATED:
        from .. import generator  # noqa: F401  (registers the generator's healthy fill)


def fill_methods() -> list[str]:
    """Every fill method a user can pick (classical, learned, and any registered plug-in)."""
    return sorted(set(available_fillers()) | {LEARNED, GENERATED})


def filler(name: str, **kwargs) -> Filler:
    """The filler called ``name``; ``learned`` takes ``model_path``/``mode``, ``generated`` ``model``/``steps``."""
    _register_learned(str(name).strip().lower())
    return get_filler(name, **kwargs)


def ensure_registered(name: str) -> None:
    """Make ``name`` resolvable by ``fill.get_filler`` in lower layers (lesions.place)."""
    _register_learned(str(name).strip().lower())
