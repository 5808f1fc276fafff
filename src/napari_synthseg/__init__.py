"""napari-synthseg: segmented synthetic training data for lesion detection.

The package has a Qt-free core (``io``, ``scene``, ``render``, ``lesions``, ``fill``,
``harmonize``, ``datasetgan``, ``qa``, ``export``, ``models``) and thin napari widgets in
``widgets``. Everything the widgets do is reachable from Python and the ``synthseg`` CLI.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-synthseg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
