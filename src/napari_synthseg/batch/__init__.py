"""Batch recipes: many images in, scenes with random lesions out, on dask.distributed.

``synthseg batch RECIPE.yaml`` (and :func:`run_recipe`) reads a validated recipe
(:mod:`.recipe`), lists its images (:mod:`.inputs`), builds one scene per task on a LocalCluster
or an existing dask cluster (:mod:`.task`, :mod:`.run`), resumes from markers, and exports.
``docs/batch.md`` is the user's reference.
"""

from .example import example_recipe
from .inputs import ImageItem, list_inputs
from .recipe import Recipe, load_recipe, parse_recipe
from .run import SUMMARY_FILE, Scheduler, parse_scheduler, plan_jobs, run_recipe
from .task import MARKER, SceneJob, build_scene

__all__ = [
    "MARKER",
    "SUMMARY_FILE",
    "ImageItem",
    "Recipe",
    "SceneJob",
    "Scheduler",
    "build_scene",
    "example_recipe",
    "list_inputs",
    "load_recipe",
    "parse_recipe",
    "parse_scheduler",
    "plan_jobs",
    "run_recipe",
]
