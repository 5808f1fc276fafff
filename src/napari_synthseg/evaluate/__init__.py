"""Evaluation built in: realism tests, downstream training and scoring, the reader study.

Qt-free; the CLI (``synthseg evaluate ...``) and the reader-study widget are thin adapters.
Library entry points (each writes a report folder and returns its ``report.json`` as a dict):

- :func:`napari_synthseg.evaluate.realism.realism_report`
- :func:`napari_synthseg.evaluate.downstream.downstream_report`
- :func:`napari_synthseg.evaluate.reader_study.make_reader_study` / ``score_reader_study``
"""

from .lesion_sets import LAYOUTS, LesionSample, LesionSet, crop_lesion, detect_layout, read_lesion_set, split_halves

__all__ = ["LAYOUTS", "LesionSample", "LesionSet", "crop_lesion", "detect_layout", "read_lesion_set", "split_halves"]
