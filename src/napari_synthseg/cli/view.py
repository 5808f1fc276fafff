"""``synthseg view FILE``: open napari with the plugin and the file (or a bundled sample)."""

from __future__ import annotations

import os

import numpy as np

from ..errors import SynthsegError
from ..io import PRESETS
from ._common import add_read_options, read_from_args

SAMPLES = ("cxr", "ct", "mri")


def register(subparsers) -> None:
    p = subparsers.add_parser("view", help="open napari with the plugin on a file or a bundled sample")
    p.add_argument("paths", nargs="*", help="image files or DICOM series folders")
    p.add_argument("--sample", choices=SAMPLES, action="append", help="open a bundled sample (repeatable)")
    p.add_argument("--window", default="auto", choices=["auto", *PRESETS], help="display window preset")
    add_read_options(p)
    p.add_argument(
        "--no-block", action="store_true", help="build the viewer and return (for scripts and tests)"
    )
    p.add_argument("--screenshot", help="with --no-block: save a PNG of the window first")
    p.set_defaults(func=run)


def run(args) -> int:
    if not args.paths and not args.sample:
        args.sample = ["cxr"]
    # Read (and fail) before starting Qt, so bad input gives a one-line message, not a window.
    images = [read_from_args(path, args) for path in args.paths]
    try:
        import napari
    except ImportError:
        raise SynthsegError("napari is not installed: pip install 'napari-synthseg[gui]'") from None
    from .._napari import image_layer_data, sample_layer_data

    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and os.name == "posix":
        raise SynthsegError("no display found: run on a desktop, or under xvfb-run -a for a virtual one")
    viewer = napari.Viewer(title="napari-synthseg")
    layer_data = [ld for sample in args.sample or [] for ld in sample_layer_data(sample, window=args.window)]
    layer_data += [image_layer_data(image, window=args.window) for image in images]
    build_session_viewer(viewer, layer_data)
    if args.no_block:
        if args.screenshot:
            from qtpy.QtWidgets import QApplication

            viewer.window._qt_window.resize(1400, 900)
            viewer.window._qt_window.show()
            QApplication.processEvents()
            viewer.reset_view()
            QApplication.processEvents()
            viewer.window._qt_window.grab().save(args.screenshot)
        viewer.close()
        return 0
    napari.run()
    return 0


def build_session_viewer(viewer, layer_data) -> dict:
    """The demo's window: the images side by side, the Window and Lesion editor panels docked.

    Returns the panels by name (``"window"``, ``"editor"``) and their docks (``"<name>_dock"``).
    """
    from napari.layers import Layer
    from qtpy.QtCore import QTimer

    from ..widgets.lesion_editor import LesionEditorWidget
    from ..widgets.window_widget import WindowWidget

    layers = [viewer.add_layer(Layer.create(data, kwargs, kind)) for data, kwargs, kind in layer_data]
    if len(layers) > 1:
        # Images from different patients live in unrelated mm spaces: they are shown side by
        # side, each moved right of the one before in world space. (A napari grid would do it
        # too, but switching a grid off when a scene's layers appear makes napari rebuild the
        # overlays of every labels layer on the UI thread: about 0.2 s.)
        side_by_side(layers)
        viewer.reset_view()
    if viewer.dims.ndim == 3:  # start in the middle of the volume, not on its last slice
        viewer.dims.set_current_step(0, viewer.dims.nsteps[0] // 2)
    window, editor = WindowWidget(viewer), LesionEditorWidget(viewer)
    window_dock = viewer.window.add_dock_widget(window, name="Window / series", area="right")
    editor_dock = viewer.window.add_dock_widget(editor, name="Lesion editor", area="right")
    viewer.window._qt_window.tabifyDockWidget(window_dock, editor_dock)
    QTimer.singleShot(0, editor_dock.raise_)  # after the window is shown, or Qt ignores it
    return {"window": window, "editor": editor, "window_dock": window_dock, "editor_dock": editor_dock}


def side_by_side(layers, gap: float = 0.05) -> None:
    """Move each layer right of the one before (tops aligned), ``gap`` of a width apart.

    Only the display moves (``translate``): the layers' metadata keep their true geometry, which
    is what scenes and writers use.
    """
    previous = None
    for layer in layers:
        extent = np.asarray(layer.extent.world, float)[:, -2:]  # rows: min, max; columns: y, x
        if previous is not None:
            translate = np.array(layer.translate, float)
            translate[-2] += previous[0, 0] - extent[0, 0]
            translate[-1] += previous[1, 1] + gap * (previous[1, 1] - previous[0, 1]) - extent[0, 1]
            layer.translate = translate
            extent = np.asarray(layer.extent.world, float)[:, -2:]
        previous = extent
