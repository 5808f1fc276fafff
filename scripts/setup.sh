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
touch "$VENV/.installed"
echo "napari-synthseg is set up in $VENV"
