"""``python -m napari_synthseg.cli`` is the same as ``synthseg``."""

import sys

from . import main

sys.exit(main())
