from .compose import RenderResult, SceneRenderer, composite, render_scene, render_without  # noqa: F401
from .placement import PatchCache, PlacedLesion, feather_alpha, footprint_check, place  # noqa: F401
from .poisson import blend_roi, poisson_blend, poisson_blend_region, solve_poisson_dirichlet  # noqa: F401
