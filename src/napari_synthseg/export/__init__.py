"""Export reviewed scenes as training sets: nnU-Net v2, COCO, NODE21-style CSV boxes, NIfTI."""

from .layout import FORMATS, Layout
from .plan import ANNOTATION_MASK, Case, ExportPlan, assign_splits, parse_split, plan_export
from .run import ExportResult, dataset_folder, export_dataset, nnunet_preprocessed_folder

__all__ = [
    "ANNOTATION_MASK",
    "FORMATS",
    "Case",
    "ExportPlan",
    "ExportResult",
    "Layout",
    "assign_splits",
    "dataset_folder",
    "export_dataset",
    "nnunet_preprocessed_folder",
    "parse_split",
    "plan_export",
]
