"""Where each export format puts a case's files (paths relative to the dataset folder)."""

from __future__ import annotations

from dataclasses import dataclass

FORMATS = ("nnunet", "coco", "csv", "nifti")


@dataclass(frozen=True)
class Layout:
    fmt: str
    ending: str

    def image(self, case_id: str, split: str) -> str:
        if self.fmt == "nnunet":
            folder = "imagesTs" if split == "test" else "imagesTr"
            return f"{folder}/{case_id}_0000{self.ending}"
        return f"images/{case_id}{self.ending}"

    def label(self, case_id: str, split: str) -> str | None:
        if self.fmt == "nnunet":
            folder = "labelsTs" if split == "test" else "labelsTr"
            return f"{folder}/{case_id}{self.ending}"
        if self.fmt == "nifti":
            return f"labels/{case_id}{self.ending}"
        return None  # COCO and CSV carry their labels in one annotation file

    @staticmethod
    def sidecar(case_id: str) -> str:
        return f"provenance/{case_id}.json"

    def folders(self) -> list[str]:
        if self.fmt == "nnunet":
            return ["imagesTr", "labelsTr", "imagesTs", "labelsTs", "provenance"]
        if self.fmt == "nifti":
            return ["images", "labels", "provenance"]
        return ["images", "provenance"]
