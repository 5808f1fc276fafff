"""Visual QA of synthetic lesions: QA numbers, rule-based review and contact sheets."""

from .contact_sheet import STATUS_COLORS, SheetEntry, contact_sheet
from .metrics import METRIC_NAMES, LesionMetrics, lesion_metrics, scene_metrics
from .rendered import DEFAULT_RENDERER, RenderedScene, Renderer, render, resolve_renderer, view_with
from .review import IMAGE_QA_KEY, SceneQA, find_scenes, image_status, qa_scene, review_scenes
from .rules import Rule, RuleSet, apply_rules, load_rules, parse_rules

__all__ = [
    "DEFAULT_RENDERER",
    "IMAGE_QA_KEY",
    "METRIC_NAMES",
    "STATUS_COLORS",
    "LesionMetrics",
    "RenderedScene",
    "Renderer",
    "Rule",
    "RuleSet",
    "SceneQA",
    "SheetEntry",
    "apply_rules",
    "contact_sheet",
    "find_scenes",
    "image_status",
    "lesion_metrics",
    "load_rules",
    "parse_rules",
    "qa_scene",
    "render",
    "resolve_renderer",
    "review_scenes",
    "scene_metrics",
    "view_with",
]
