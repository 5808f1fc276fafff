from .poisson import blend_roi, poisson_blend, poisson_blend_region, solve_poisson_dirichlet  # noqa: F401
