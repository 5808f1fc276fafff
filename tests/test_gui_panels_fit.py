"""Every panel docked at once fits a 1920x1080 window: nothing is cut off at the side.

The panels scroll vertically and never horizontally, so a body wider than the panel's viewport
would hide the ends of its rows (what the E2E screenshots showed when a long layer name or a
long check-box label widened the lesion editor).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

pytestmark = pytest.mark.gui

LONG_NAME = "CT Lung-PET-CT-Dx A0001 1.3.6.1.4.1.14519.5.2.1.6655 thorax 1.25 mm"


def test_all_panels_docked_fit_their_width(make_napari_viewer, qtbot):
    from qtpy.QtWidgets import QApplication

    from napari_synthseg.widgets._base import PANEL_WIDTH
    from napari_synthseg.widgets.datasetgan_widget import DatasetGanWidget
    from napari_synthseg.widgets.generator_widget import LesionGeneratorWidget
    from napari_synthseg.widgets.harmonize_widget import HarmonizeWidget
    from napari_synthseg.widgets.inpaint_widget import InpaintWidget
    from napari_synthseg.widgets.lesion_editor import LesionEditorWidget
    from napari_synthseg.widgets.qa_widget import QAWidget
    from napari_synthseg.widgets.window_widget import WindowWidget

    viewer = make_napari_viewer(show=True)  # laid out as on screen
    viewer.window._qt_window.resize(1920, 1080)
    viewer.add_image(np.zeros((64, 64), np.float32), name=LONG_NAME)  # listed in the image combos
    viewer.add_labels(np.zeros((64, 64), np.uint8), name=LONG_NAME + " mask")
    panels = [cls(viewer) for cls in (WindowWidget, LesionEditorWidget, InpaintWidget, HarmonizeWidget,
                                      DatasetGanWidget, LesionGeneratorWidget, QAWidget)]
    for panel in panels:
        viewer.window.add_dock_widget(panel, name=type(panel).__name__, area="right")
    editor = panels[1]
    qtbot.waitUntil(lambda: editor.layers_ready, timeout=10000)
    qa = panels[-1]
    # what a loaded scene puts there: a long scene name, and details holding a path
    qa.scene_label.setText("1/1  " + LONG_NAME.replace(" ", "_"))
    qa.details.setText("L0001 from /data/" + LONG_NAME.replace(" ", "_") + "/lesions/L0001.safetensors")
    for _ in range(20):
        QApplication.processEvents()
    assert viewer.window._qt_window.width() <= 1920
    for panel in panels:
        body = panel.widget()
        name = type(panel).__name__
        assert panel.viewport().width() >= PANEL_WIDTH - 2, name
        assert body.minimumSizeHint().width() <= panel.viewport().width(), (
            f"{name}: body needs {body.minimumSizeHint().width()} px, viewport {panel.viewport().width()} px")
        # no row cut off at the right (once the scroll area has laid the body out)
        qtbot.waitUntil(lambda: body.width() <= panel.viewport().width(), timeout=3000)
