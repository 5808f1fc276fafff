"""``synthseg batch --example``: a complete, commented recipe that runs as it is on sample_data/."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SynthsegError

_TEMPLATE = """\
# napari-synthseg batch recipe (docs/batch.md is the reference).
# Run it:  synthseg batch recipe.yaml                      # a LocalCluster, one worker per core
#          synthseg batch recipe.yaml --scheduler local:2  # two worker processes
#          synthseg batch recipe.yaml --scheduler tcp://HOST:8786   # an existing dask cluster
# Relative paths are resolved against the folder of this file. Exit status: 0 all scenes built,
# 1 some image failed (see OUT/summary.json and OUT/logs/), 2 a bad recipe.

# --- the three stable keys -----------------------------------------------------------------
inputs:                         # a list of globs (files, folders, DICOM series folders) ...
  - {sample}/cxr_nih_00004132_006.mha
# inputs: images.csv            # ... or a CSV: path,spacing_mm,modality,patient_id (one row per image)
seed: 0                         # same seed -> same scenes, whatever the number of workers
out: synthseg_batch_out         # scenes/, logs/, summary.json, nnUNet_raw/, export_coco/ ...

# --- what the files do not say -------------------------------------------------------------
defaults:
  spacing_mm: null              # pixel size for PNG/JPEG without a CSV value; a file that stores
                                # its spacing (DICOM, MHA, NIfTI) always keeps it
  modality: null                # CT | CXR | MR: override the guess for every image

scenes_per_image: 3             # scenes built on each image (each with its own random lesions)

# --- lesions -------------------------------------------------------------------------------
lesions:
  count: [1, 3]                 # lesions per scene, [min, max] inclusive
  min_distance_mm: 5.0          # gap between lesion edges
  max_tries: 30                 # placement attempts per lesion before giving up (counted in the summary)
  sources:                      # each lesion picks a source by weight
    - type: procedural          # seeded procedural nodules, projected onto radiographs
      weight: 3
      kinds: [solid, part-solid, ground-glass]
      diameter_mm: [6, 20]      # uniform range, mm
      class: nodule             # label class (export --classes kind uses it)
      blend: [alpha, poisson]   # alpha | additive | poisson, one drawn per lesion
      contrast: [0.8, 1.2]      # factor range, or node21 (NODE21's contrast rule, radiographs)
      feather_mm: 1.0
    - type: procedural
      weight: 1
      kinds: [solid]
      diameter_mm: [25, 35]
      class: mass
      blend: [poisson]
      contrast: node21
    # - type: library           # real lesions: a lesion library folder (index.json), a table of
    #   path: ../shared/data/ct/lidc_nodules   # patch+mask pairs (index.csv) or a folder of CT patches
    #   split: train            # index.csv: draw only from the training series of the fixed split
    #   diameter_mm: [6, 20]
    #   class: nodule
    #   blend: [poisson]
    #   contrast: node21

constraint:
  organ: auto                   # auto: CT lungs / CXR lung fields / MR brain; none: anywhere
  min_inside: 1.0               # fraction of each lesion that must lie inside the organ

# harmonize:                    # optional: harmonize every placed lesion (2D) with a trained model
#   model: models/cxr_singan.safetensors   # from: synthseg train-harmonizer IMAGE --out ...
#   scale: 1
#   margin_px: 8

# --- review and export ---------------------------------------------------------------------
review:
  accept: all                   # or: rules: rules.yaml (QA thresholds, see docs/qa-export.md)

export:
  - format: nnunet              # OUT/nnUNet_raw/Dataset501_Synthseg
    name: Synthseg
    dataset_id: 501
    split: [0.8, 0.2]           # train, val[, test] fractions of PATIENTS (the one sample patient
                                # all goes to train); a val split writes splits_final.json into
                                # OUT/nnUNet_preprocessed/Dataset501_Synthseg/, where nnU-Net reads it
  - format: coco                # OUT/export_coco
"""


def sample_data_dir() -> Path:
    """The bundled sample images (an installed wheel's ``_bundled`` or a checkout's sample_data/)."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here / "_bundled", here.parents[1] / "sample_data"):
        if (candidate / "cxr_nih_00004132_006.mha").exists():
            return candidate
    raise SynthsegError("the bundled sample images are missing from this installation")


def example_recipe(save_dir: str | os.PathLike = ".") -> str:
    """The example recipe, its sample path written relative to ``save_dir`` (where it is saved)."""
    sample = sample_data_dir()
    try:
        rel = os.path.relpath(sample, Path(save_dir).resolve())
    except ValueError:  # another drive (Windows)
        rel = str(sample)
    return _TEMPLATE.format(sample=Path(rel).as_posix())
