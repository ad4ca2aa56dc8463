#!/usr/bin/env bash
# Debian's Slurm (`slurm-wlm`: slurmctld, slurmd, sbatch…) and `munge`, for the test that runs
# a real scheduler on localhost (tests/runs/slurm_cluster.rs via scripts/slurm/local-cluster.sh).
# Idempotent: says what it skipped.
#   THOUGHTSCOPE_SLURM=0   do not install (that test then prints a SKIP line, a failure under CI)
set -euo pipefail
packages="slurm-wlm munge"
if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then
  echo "skipped: $(slurmctld -V 2>/dev/null | head -1) and munge already installed"
elif [ "${THOUGHTSCOPE_SLURM:-1}" = "0" ]; then
  echo "skipped: THOUGHTSCOPE_SLURM=0"
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's $packages (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
  echo "installed: $(slurmctld -V | head -1)"
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's $packages (sudo apt-get)"
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
  echo "installed: $(slurmctld -V | head -1)"
else
  echo "warning: slurm-wlm/munge absent and apt-get unusable here: the local-Slurm test will SKIP" >&2
fi
