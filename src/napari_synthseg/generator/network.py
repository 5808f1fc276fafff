"""The lesion generator network: MONAI's DiffusionModelUNet as a rectified-flow inpainter.

Input channels (all on a ``patch``-voxel cube around the site):

0. the noisy sample ``x_t = (1 - t) x_0 + t n`` (MONAI ``RFlowScheduler`` convention);
1. the context: the clean region with the generation region blanked (set to 0);
2. the generation region (the lesion mask grown by ``edge_voxels``, 1 inside);
3. (``mean_hu_channel``) the requested mean HU inside the mask, normalised, painted on the mask.

The class (``empty`` / ``solid`` / ``part-solid`` / ``ground-glass``, :mod:`.classes`) goes in
through the U-Net's class embedding. The network predicts the flow velocity ``x_0 - n``; the
sampler integrates it with ``RFlowScheduler.step``. Nothing here is hand-written network code:
the backbone, the timestep embedding and the class embedding are MONAI's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.nets import DiffusionModelUNet

from ..models import register_architecture
from .classes import GENERATOR_CLASSES

ARCHITECTURE = "lesion_generator_rflow"


@dataclass
class LesionGeneratorConfig:
    """Shape of a lesion generator and the conventions its weights depend on.

    Attributes
    ----------
    patch : int
        Side of the generated cube in voxels.
    spacing_mm : float
        Finest grid spacing (mm per voxel): nodules up to ``patch * spacing_mm / context_factor``
        mm are generated on it; larger ones on a coarser grid (:meth:`grid_spacing`).
    context_factor : float
        The cube spans this many nodule diameters (at least): 2 leaves half a diameter of
        context on every side.
    channels, num_res_blocks, norm_num_groups : MONAI DiffusionModelUNet settings.
    attention_levels : tuple of bool
        Self-attention per level (the U-Net's middle block always has one).
    num_head_channels : int
    mean_hu_channel : bool
        Condition on the mean HU inside the mask (an extra input channel).
    edge_voxels : int
        The generation region is the mask grown by this many voxels (the partial-volume rim
        belongs to the lesion).
    hu_center, hu_scale, hu_min, hu_max : float
        Normalisation ``(clip(HU, hu_min, hu_max) - hu_center) / hu_scale``.
    num_train_timesteps : int
        RFlowScheduler's timestep range.
    inference_steps : int
        Default number of flow steps when sampling.
    class_names : tuple of str
        Class embedding rows (:data:`.classes.GENERATOR_CLASSES`).
    class_mean_hu : tuple of (mean, std) pairs
        Per class, the mean and spread of the real nodules' mean HU (filled in from the training
        data); a sample without a requested mean HU draws one from it.
    """

    patch: int = 32
    spacing_mm: float = 1.0
    context_factor: float = 2.0
    channels: tuple = (8, 16, 32)
    num_res_blocks: int = 1
    attention_levels: tuple = (False, False, False)
    norm_num_groups: int = 8
    num_head_channels: int = 8
    mean_hu_channel: bool = True
    edge_voxels: int = 1
    hu_center: float = -400.0
    hu_scale: float = 600.0
    hu_min: float = -1024.0
    hu_max: float = 1000.0
    num_train_timesteps: int = 1000
    inference_steps: int = 8
    class_names: tuple = GENERATOR_CLASSES
    class_mean_hu: tuple = ((-850.0, 60.0), (-100.0, 150.0), (-450.0, 80.0), (-700.0, 60.0))

    @property
    def in_channels(self) -> int:
        return 4 if self.mean_hu_channel else 3

    def grid_spacing(self, diameter_mm: float) -> float:
        """Voxel size (mm) of the cube a nodule of ``diameter_mm`` is generated on."""
        return max(float(self.spacing_mm), float(diameter_mm) * self.context_factor / self.patch)

    def normalise(self, hu):
        """HU -> network units (numpy or torch)."""
        lo, hi = self.hu_min, self.hu_max
        clipped = hu.clip(lo, hi) if hasattr(hu, "clip") else min(max(hu, lo), hi)
        return (clipped - self.hu_center) / self.hu_scale

    def denormalise(self, x):
        return x * self.hu_scale + self.hu_center


def generation_region(mask, edge_voxels: int):
    """The voxels a generator writes: ``mask`` grown by ``edge_voxels`` in all 26 directions.

    The same rule as the ``max_pool3d`` the network's training and sampling use on tensors.
    """
    import numpy as np
    from scipy import ndimage as ndi

    mask = np.asarray(mask, bool)
    if edge_voxels <= 0:
        return mask
    return ndi.binary_dilation(mask, structure=np.ones((3, 3, 3), bool), iterations=int(edge_voxels))


@register_architecture(ARCHITECTURE, LesionGeneratorConfig)
class LesionGeneratorNet(torch.nn.Module):
    """Velocity network of the rectified-flow inpainter (a MONAI DiffusionModelUNet)."""

    def __init__(self, config: LesionGeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = DiffusionModelUNet(
            spatial_dims=3,
            in_channels=config.in_channels,
            out_channels=1,
            num_res_blocks=int(config.num_res_blocks),
            channels=tuple(int(c) for c in config.channels),
            attention_levels=tuple(bool(a) for a in config.attention_levels),
            norm_num_groups=int(config.norm_num_groups),
            num_head_channels=int(config.num_head_channels),
            num_class_embeds=len(config.class_names),
        )

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor,
                class_labels: torch.Tensor) -> torch.Tensor:
        """Velocity for ``noisy`` (B, 1, D, H, W) given ``condition`` (B, C-1, D, H, W)."""
        return self.unet(torch.cat([noisy, condition], dim=1), timesteps, class_labels=class_labels)
