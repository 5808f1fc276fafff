"""``synthseg convert IN OUT``: change format, keeping native values and geometry."""

from __future__ import annotations

from ..io import write_image
from ._common import add_read_options, check_output_file, read_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert an image or DICOM series to NIfTI, MHA, NRRD or 16-bit PNG"
    )
    p.add_argument("input", help="image file or DICOM series folder")
    p.add_argument("output", help="output file (.nii, .nii.gz, .mha, .mhd, .nrrd, .png)")
    add_read_options(p)
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args) -> int:
    check_output_file(args.output, args.force)
    image = read_from_args(args.input, args)
    out = write_image(image, args.output, overwrite=args.force)
    print(f"wrote {out} ({' x '.join(map(str, image.shape))} {image.array.dtype}, {image.modality})")
    return 0
