"""The Qt-free workflow layer: one job per feature, owning its defaults, checks and provenance.

The CLI, the napari widgets and batch jobs are thin adapters over these modules; none of them
restates a rule. Each module is one job:

* :mod:`.spec` - the typed lesion spec and the placing defaults (``LesionSpec``, ``PlaceSettings``);
* :mod:`.edit` - editing a scene (``EditSession``: place, move, resize, ..., undo, constraint);
* :mod:`.inpaint` - learned/classical fills, their checks and accepted-sample provenance;
* :mod:`.harmonize` - SinGAN/ConSinGAN training and harmonization defaults, accept rules;
* :mod:`.review` - QA decisions on the live scene, export settings;
* :mod:`.datasetgan` - DatasetGAN generator training, sampling, fitting and generating;
* :mod:`.fillers` - fill methods by name (including the learned one above the fill layer).

Heavy modules (torch) are imported by the jobs that need them, not here.
"""
