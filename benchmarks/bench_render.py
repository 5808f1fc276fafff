"""Re-rendering after moving or resizing one lesion, against re-rendering the whole scene.

Targets (issue: lesions as editable objects): on a 2048² CXR a move/resize re-renders in
<= 30 ms on CPU and >= 10x faster than a full re-render; in a 512x512x64 CT volume <= 150 ms.
The scene holds several lesions in every blend mode; the edited one is Poisson-blended.
Timings exclude autosave (the scene is in memory) and napari's display refresh. Every resize
asks for a new size, so the patch is transformed again each time.
Run: ``python benchmarks/bench_render.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from napari_synthseg.io import MedicalImage, read_image
from napari_synthseg.lesions import load_ct_patch, procedural_cxr_nodule
from napari_synthseg.lesions.place import edit_lesion, place_lesion
from napari_synthseg.render import PatchCache, SceneRenderer
from napari_synthseg.scene import Scene

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def cxr_2048() -> MedicalImage:
    """The NODE21 CXR upsampled to 2048² (0.2 mm pixels), written where a scene can read it."""
    from scipy import ndimage as ndi

    from napari_synthseg.io import write_image

    src = read_image(DATA / "cxr/node21/c3883.mha")
    big = ndi.zoom(src.array.astype(np.float32), 2, order=1).astype(np.uint16)
    path = Path("/tmp/synthseg_bench_cxr2048.mha")
    if not path.exists():
        write_image(MedicalImage(array=big, spacing=(0.2, 0.2), origin=(0, 0), direction=(1, 0, 0, 1), modality="CXR"),
                    path, overwrite=True)
    return read_image(path)


def time_edits(scene: Scene, renderer: SceneRenderer, lesion_id: str, moves, sizes, repeats: int = 3):
    move_t, resize_t = [], []
    for rep in range(repeats):
        for at in moves:
            t = time.perf_counter()
            edit_lesion(scene, lesion_id, at_xyz=at)
            move_t.append(time.perf_counter() - t)
        for size in sizes:
            t = time.perf_counter()
            edit_lesion(scene, lesion_id, size_mm=size + 0.1 * rep)  # new size: the patch is re-transformed
            resize_t.append(time.perf_counter() - t)
    warm_t, cold_t = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        renderer.render_all()  # every lesion composited over the whole image, patches cached
        warm_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        SceneRenderer(scene, follow=False, cache=PatchCache())  # from scratch, as without the object model
        cold_t.append(time.perf_counter() - t)
    med = lambda v: float(np.median(v))  # noqa: E731
    return med(move_t), med(resize_t), med(warm_t), med(cold_t)


def main() -> None:
    nodule = load_ct_patch(DATA / "ct/nodule_patches/nodule_05_ct.mha")
    rows = []

    image = cxr_2048()
    scene = Scene.create(image)  # in memory: no autosave in the timing
    renderer = SceneRenderer(scene)
    for i, (x, y) in enumerate([(600, 800), (1400, 800), (700, 1300), (1300, 1300), (1000, 600), (1000, 1500)]):
        patch = procedural_cxr_nodule(15, "solid", target_spacing=image.scale, seed=i) if i % 2 else nodule
        place_lesion(scene, patch, at_xyz=(x, y), blend=["poisson", "alpha", "additive"][i % 3], size_mm=12 + 2 * i)
    moves = [(620 + 7 * k, 810 + 5 * k) for k in range(10)]
    sizes = [10.0 + k for k in range(10)]
    rows.append(("CXR 2048² (6 lesions)", *time_edits(scene, renderer, "L0001", moves, sizes), 0.030, 10))

    ct = read_image(DATA / "ct/lung_pet_ct_dx_A0001/dicom")
    scene = Scene.create(ct)
    renderer = SceneRenderer(scene)
    for i, (x, y, z) in enumerate([(150, 250, 40), (360, 260, 30), (170, 300, 20), (340, 220, 45)]):
        place_lesion(scene, nodule, at_xyz=(x, y, z), blend=["poisson", "alpha", "additive"][i % 3], size_mm=10 + 2 * i)
    moves = [(155 + 3 * k, 252 + 2 * k, 40) for k in range(6)]
    sizes = [9.0 + k for k in range(6)]
    rows.append(("CT 512x512x64 (4 lesions)", *time_edits(scene, renderer, "L0001", moves, sizes), 0.150, None))

    head = ("scene", "move ms", "resize ms", "full warm ms", "full scratch ms", "scratch/edit", "warm/edit", "target")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, move, resize, warm, cold, target, ratio in rows:
        edit = max(move, resize)
        ok = edit <= target and (ratio is None or cold / edit >= ratio)
        goal = f"<= {1e3 * target:.0f} ms" + (f", >= {ratio}x" if ratio else "")
        print(f"| {name} | {1e3 * move:.2f} | {1e3 * resize:.2f} | {1e3 * warm:.1f} | {1e3 * cold:.1f} | "
              f"{cold / edit:.0f}x | {warm / edit:.1f}x | {goal}: {'met' if ok else 'missed'} |")


if __name__ == "__main__":
    main()
