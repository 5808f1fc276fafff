"""``python -m napari_synthseg`` is the same as ``synthseg``."""

import sys

from .cli import main

sys.exit(main())
