#!/usr/bin/env bash
# Set up napari-synthseg on a fresh Debian 12 / Python 3.11 machine: system libraries for Qt and
# a virtual display (only the missing ones), a virtual environment in .venv, CPU torch first (so
# nothing pulls the CUDA wheels), then the package with its GUI and test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# Qt/OpenGL libraries napari needs under Xvfb (see ../shared/docs/ci-notes.md).
PKGS="xvfb xauth libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libxkbcommon0 libxkbcommon-x11-0 libx11-xcb1 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxcb-xfixes0 libxcb-glx0 libxcb-shm0 libxcb-sync1 libxcb-util1 libdbus-1-3 libfontconfig1 libglib2.0-0"
if command -v dpkg >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  need=""
  for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"; done
  if [ -n "$need" ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "installing system packages:$need"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# Exactly this spec: the CPU wheel. Anything else (or letting a dependency pull torch) downloads
# gigabytes of CUDA wheels.
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -e ".[gui,test]"
# nnU-Net v2's own dataset checks (tests/test_export.py runs its verify_dataset_integrity and asks
# it where the trainer reads splits_final.json). --no-deps: its dependencies pull a second, CUDA
# torch. These are only the packages its checking code imports (acvl-utils imports blosc2, which
# imports numexpr, ndindex and httpx); `pip check` lists the rest as missing, which is expected.
"$VENV/bin/python" -m pip install -q --no-deps nnunetv2==2.8.1 acvl-utils==0.2.6 batchgenerators==0.25.5 \
  blosc2==4.14.1 numexpr==2.14.2 ndindex==1.10.1 httpx==0.28.1 httpcore==1.0.9 h11==0.16.0 anyio==4.16.0
"$VENV/bin/python" -c "import torch, sys; from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity; sys.exit(0 if torch.__version__.startswith('2.13.0') else 'torch changed: ' + torch.__version__)"
# Fréchet Radiomics Distance with the field's own package (docs/evaluation.md): pyradiomics has
# no Python 3.11 wheel, its 3.0.1 sdist builds with --no-build-isolation (a C compiler, about
# 2 minutes); frd-score --no-deps keeps this project's single OpenCV. Where the build fails,
# `synthseg evaluate realism` reports FRD from its own feature backend and says so.
if ! "$VENV/bin/python" -c "import frd_score, radiomics" >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install -q versioneer setuptools wheel pywavelets pykwalify six \
    && "$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps pyradiomics==3.0.1 \
    && "$VENV/bin/python" -m pip install -q --no-deps frd-score==1.0.1 \
    || echo "frd-score could not be installed: FRD falls back to the feature backend (docs/evaluation.md)"
fi
touch "$VENV/.installed"
echo "napari-synthseg is set up in $VENV"
