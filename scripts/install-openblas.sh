#!/usr/bin/env bash
# OpenBLAS (Debian's libopenblas-dev): the reference GEMM that `bench forward` measures beside its
# own kernels and the kernel tests compare against, loaded at run time where installed. Idempotent:
# says what it skipped. Exit status 0 even when it cannot install (a warning says so); callers
# check for the library themselves.
set -euo pipefail
have_openblas() { ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so\b' || [ -e /usr/lib/x86_64-linux-gnu/libopenblas.so ] || [ -e /usr/lib/aarch64-linux-gnu/libopenblas.so ]; }
if have_openblas; then
  echo "skipped: libopenblas already installed"
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's libopenblas-dev (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev >/dev/null
  echo "installed: libopenblas-dev $(dpkg-query -W -f='${Version}' libopenblas-dev)"
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's libopenblas-dev (sudo apt-get)"
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev >/dev/null
  echo "installed: libopenblas-dev $(dpkg-query -W -f='${Version}' libopenblas-dev)"
else
  echo "warning: libopenblas absent and apt-get unusable here: bench forward and the kernel tests go without OpenBLAS" >&2
fi
