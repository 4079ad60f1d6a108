#!/usr/bin/env bash
# Install everything dials.factored_integrate needs on a fresh Debian 12 machine.
# Idempotent: a second run only checks and returns.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
venv=.venv

# 1. Debian's DIALS 3.12 (not on PyPI), for /usr/bin/python3.
if ! LIBTBX_BUILD=/usr/lib/cctbx/python3.11 /usr/bin/python3 -c "import dials.array_family.flex, dials_data" >/dev/null 2>&1; then
  echo "install: DIALS not found, installing Debian's dials (about 2.4 GB, 2 minutes)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
    dials python3-dials python3-dials-data python3-plotly python3-venv >/dev/null
fi

# 1b. Debian's chromium, only for the test that opens the HTML report in a headless
#     browser (tests/test_report.py, scripts/check_report.py); that test skips without
#     it, so a failure here only warns.
if [ ! -x /usr/bin/chromium ]; then
  echo "install: installing Debian's chromium (for the HTML report render test)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      chromium >/dev/null; } \
    || echo "install: warning: chromium not installed; the report render test will skip" >&2
fi

# 1c. MPI (mp.method=mpi): Debian's Open MPI and mpi4py for /usr/bin/python3.
if ! /usr/bin/python3 -c "import mpi4py" >/dev/null 2>&1 || ! command -v mpirun >/dev/null; then
  echo "install: installing Debian's openmpi-bin and python3-mpi4py (for mp.method=mpi)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openmpi-bin python3-mpi4py \
    >/dev/null
fi

# 1d. numba (the pixel-pass kernels, dials_factored/kernels.py): Debian's python3-numba,
#     built for Debian's numpy.
if ! /usr/bin/python3 -c "import numba" >/dev/null 2>&1; then
  echo "install: installing Debian's python3-numba (the pixel-pass kernels)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-numba >/dev/null
fi

# 2. A venv that sees the system site-packages (DIALS, cctbx, numpy, scipy).
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
# libtbx looks for its environment under sys.prefix: point the venv at Debian's.
if [ ! -e "$venv/lib/cctbx" ]; then
  ln -s /usr/lib/cctbx "$venv/lib/cctbx"
fi
# Debian's cctbx lacks the compiled xfel_mono_sim_ext that xfel.mono_simulation
# imports (stills indexing); the Python code DIALS uses does not need it.  Add an
# empty module only where the real one cannot be imported.
site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if ! "$venv/bin/python" -c "import xfel_mono_sim_ext" >/dev/null 2>&1; then
  printf '"""Empty stand-in for the compiled module Debian cctbx lacks (see README)."""\n' \
    > "$site/xfel_mono_sim_ext.py"
fi

# 3. The plugin itself, editable, with its test tools.
stamp="$venv/.installed-$(cat setup.py pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --no-build-isolation -e '.[test]'
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi

# 4. Optional: xia2 3.12.0 (matching DIALS 3.12; no registry has it) from the vendored
#    tarball next to this repository, for dials.factored_xia2_ssx and xia2.multiplex
#    (README "Using it from xia2").  Offline (no index, no build isolation; its
#    dependencies are Debian packages).  Skipped when the tarball is absent or xia2 is
#    already importable; a failure here only warns, the plugin works without xia2.
xia2_tarball="$here/../shared/vendor/xia2-3.12.0-min.tar.gz"
if [ -f "$xia2_tarball" ] && ! "$venv/bin/python" -c "import xia2.cli.ssx" >/dev/null 2>&1; then
  echo "install: installing xia2 from $xia2_tarball (offline)"
  PIP_NO_INDEX=1 "$venv/bin/python" -m pip install -q --no-build-isolation "$xia2_tarball" \
    || echo "install: warning: xia2 could not be installed; the xia2 stage is unavailable" >&2
fi

"$venv/bin/python" -c "from dials.array_family import flex; import dials_factored" \
  || { echo "install: the venv cannot import DIALS" >&2; exit 1; }
echo "install: ready ($venv)"
