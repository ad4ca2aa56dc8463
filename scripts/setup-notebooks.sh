#!/usr/bin/env bash
# Notebook tooling: rust-src, evcxr_jupyter pinned, the
# Jupyter execution stack from PyPI (pinned) in .venv, the `rust` kernelspec inside that venv, and
# an evcxr build dir outside the clone so the kernel's cold build of thoughtscope is paid once.
#
# Idempotent: every step checks first and says what it skipped. Nothing here needs the network
# once done. Environment knobs:
#   THOUGHTSCOPE_CACHE   cache root (default ~/.cache/thoughtscope): the evcxr binary built by this
#                        script (keyed by version), its build dir, and the kernel's EVCXR_TMPDIR.
#   EVCXR_TMPDIR         the kernel's scratch crate (default $THOUGHTSCOPE_CACHE/evcxr/kernel). Must lie
#                        outside any cargo workspace (evcxr's scratch crate fails to build inside one), hence not in the clone;
#                        its parent gets .cargo/config.toml (notebooks/evcxr-cargo-config.toml).
#   NOTEBOOK_CHROMIUM=0  do not apt-get install chromium (used by scripts/check-notebook-html.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

EVCXR_VERSION=0.22.0
CACHE="${THOUGHTSCOPE_CACHE:-$HOME/.cache/thoughtscope}"
EVCXR_TMPDIR="${EVCXR_TMPDIR:-$CACHE/evcxr/kernel}"
VENV=.venv
# The execution stack only (no JupyterLab): nbclient runs the kernel, nbconvert writes the HTML.
PINS=(
  "jupyter-core==5.9.1"
  "jupyter-client==8.10.0"
  "nbformat==5.11.1"
  "nbclient==0.11.0"
  "nbconvert==7.17.2"
)

step() { echo "== $*"; }

# 1. rust-src: evcxr's rust-analyzer needs the std sources or the kernel dies at start.
step "rust-src"
sysroot="$(rustc --print sysroot)"
if [ -d "$sysroot/lib/rustlib/src/rust/library" ]; then
  echo "skipped: rust-src already installed in $sysroot"
else
  rustup component add rust-src
fi

# 2. evcxr_jupyter, pinned. Reuse an install of the same version in the default cargo root
#    (`cargo install --list`), else one cached under $CACHE by an earlier run of this script.
#    A fresh build uses release opt-level 1: measured 5 min wall / 506 CPU-s on 2 cores against
#    ~990 CPU-s (22 min reported) at the default opt-level 3, and the kernel is as fast in use
#    (warm VA notebook 45.6 s vs 42.3 s; the cells' own code is compiled by rustc either way).
#    EVCXR_RELEASE_OPT_LEVEL=3 restores the default. The target dir lives outside the clone so an
#    interrupted build resumes; it is dropped once the binary is installed.
step "evcxr_jupyter $EVCXR_VERSION"
evcxr_root="$CACHE/evcxr_jupyter-$EVCXR_VERSION"
if cargo install --list 2>/dev/null | grep -qx "evcxr_jupyter v$EVCXR_VERSION:"; then
  EVCXR_BIN="${CARGO_HOME:-$HOME/.cargo}/bin/evcxr_jupyter"
  echo "skipped: evcxr_jupyter v$EVCXR_VERSION already installed at $EVCXR_BIN"
elif cargo install --list --root "$evcxr_root" 2>/dev/null | grep -qx "evcxr_jupyter v$EVCXR_VERSION:"; then
  EVCXR_BIN="$evcxr_root/bin/evcxr_jupyter"
  echo "skipped: evcxr_jupyter v$EVCXR_VERSION cached at $EVCXR_BIN"
else
  echo "building evcxr_jupyter v$EVCXR_VERSION into $evcxr_root (about 5 min on 2 cores)"
  start=$(date +%s)
  CARGO_PROFILE_RELEASE_OPT_LEVEL="${EVCXR_RELEASE_OPT_LEVEL:-1}" CARGO_TARGET_DIR="$CACHE/evcxr_jupyter-build" \
    cargo install --locked --root "$evcxr_root" evcxr_jupyter --version "$EVCXR_VERSION"
  rm -rf "$CACHE/evcxr_jupyter-build"
  EVCXR_BIN="$evcxr_root/bin/evcxr_jupyter"
  echo "built evcxr_jupyter in $(( $(date +%s) - start )) s"
fi
[ -x "$EVCXR_BIN" ] || { echo "error: $EVCXR_BIN is not executable" >&2; exit 1; }

# 3. Jupyter execution stack in the project venv (shared with scripts/python-env.sh).
step "python packages in $VENV"
if [ -x "$VENV/bin/python" ]; then
  echo "skipped: $VENV exists ($("$VENV/bin/python" --version))"
else
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
missing=()
for pin in "${PINS[@]}"; do
  name="${pin%%==*}"
  want="${pin##*==}"
  have="$("$PY" -c 'import sys, importlib.metadata as m
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: print("")' "$name")"
  if [ "$have" = "$want" ]; then
    echo "skipped: $name==$want already installed"
  else
    echo "to install: $pin (installed: ${have:-none})"
    missing+=("$pin")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  "$PY" -m pip install --disable-pip-version-check "${PINS[@]}"
fi

# 4. The `rust` kernelspec, inside the venv (JUPYTER_PATH is a single directory for evcxr). The
#    absolute binary path is baked into kernel.json, so it is rewritten when that path changes.
#    Its env gets EVCXR_TMPDIR (interactive kernels reuse the runner's build dir) and
#    LD_LIBRARY_PATH = the toolchain's std dir: evcxr's cells link libstd dynamically through a
#    relative rpath that is wrong whenever EVCXR_TMPDIR and ~/.rustup share a parent below `/`
#    (e.g. both in $HOME), and the kernel then dies with "dlopen failed".
step "rust kernelspec"
kernel_dir="$VENV/share/jupyter/kernels/rust"
want_argv0="$(readlink -f "$EVCXR_BIN")"
std_dir="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/lib"
kernelspec_state() {
  [ -f "$kernel_dir/kernel.json" ] || return 0
  "$PY" -c 'import json, sys; s = json.load(open(sys.argv[1])); e = s.get("env", {})
print(s["argv"][0], e.get("EVCXR_TMPDIR", ""), e.get("LD_LIBRARY_PATH", ""))' "$kernel_dir/kernel.json"
}
if [ "$(kernelspec_state)" = "$want_argv0 $EVCXR_TMPDIR $std_dir" ]; then
  echo "skipped: kernelspec $kernel_dir already set up ($want_argv0)"
else
  JUPYTER_PATH="$PWD/$VENV/share/jupyter" "$want_argv0" --install
  "$PY" - "$kernel_dir/kernel.json" "$EVCXR_TMPDIR" "$std_dir" <<'EOF2'
import json, sys
path, tmpdir, std_dir = sys.argv[1:4]
spec = json.load(open(path))
spec.setdefault("env", {}).update({"EVCXR_TMPDIR": tmpdir, "LD_LIBRARY_PATH": std_dir})
json.dump(spec, open(path, "w"), indent=1)
print(f"kernelspec {path}: EVCXR_TMPDIR={tmpdir}, LD_LIBRARY_PATH={std_dir}")
EOF2
fi
# thoughtscope and candle built like the CLI's build inside the kernel (notebooks/README.md). One
# level above EVCXR_TMPDIR: evcxr rewrites EVCXR_TMPDIR/.cargo/config.toml before every build.
mkdir -p "$EVCXR_TMPDIR" "$(dirname "$EVCXR_TMPDIR")/.cargo"
cp notebooks/evcxr-cargo-config.toml "$(dirname "$EVCXR_TMPDIR")/.cargo/config.toml"
if [ -f "$EVCXR_TMPDIR/Cargo.toml" ]; then
  echo "note: evcxr build dir $EVCXR_TMPDIR exists ($(du -sh "$EVCXR_TMPDIR" | cut -f1)); the kernel reuses it"
fi

# 5. Headless Chromium for scripts/check-notebook-html.sh and static figures.
step "chromium"
bash scripts/install-chromium.sh

"$PY" -m jupyter kernelspec list
