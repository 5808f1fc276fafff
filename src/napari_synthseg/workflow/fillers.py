"""Fill methods by name, including the learned one that lives above the fill layer.

``fill`` knows the classical methods; ``inpaint`` registers ``learned`` when it is imported
(it needs torch, so it is not imported up front). Every adapter asks here, so ``learned`` is
offered and resolved the same way in the CLI, the widgets and batch.
"""

from __future__ import annotations

from ..fill import Filler, available_fillers, get_filler

LEARNED = "learned"


def _register_learned() -> None:
    if LEARNED not in available_fillers():
        from .. import inpaint  # noqa: F401  (registers the learned filler)


def fill_methods() -> list[str]:
    """Every fill method a user can pick (classical, learned, and any registered plug-in)."""
    return sorted(set(available_fillers()) | {LEARNED})


def filler(name: str, **kwargs) -> Filler:
    """The filler called ``name``; ``learned`` takes ``model_path``/``mode`` keywords."""
    if str(name).strip().lower() == LEARNED:
        _register_learned()
    return get_filler(name, **kwargs)


def ensure_registered(name: str) -> None:
    """Make ``name`` resolvable by ``fill.get_filler`` in lower layers (lesions.place)."""
    if str(name).strip().lower() == LEARNED:
        _register_learned()
