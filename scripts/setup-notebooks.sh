#!/usr/bin/env bash
# Notebook tooling: rust-src, evcxr_jupyter pinned, the Jupyter execution stack from PyPI (pinned)
# in .venv, and the `rust` kernelspec inside that venv, set up so that the kernel shares the CLI's
# build: its scratch crate is <cargo target dir>/notebook-kernel and it builds with the CLI's
# profile, flags and Cargo.lock, so a `:dep thoughtscope` cell reuses the dependency graph that
# `cargo build` compiled (notebooks/README.md, "One build for the CLI and the kernel").
#
# Idempotent: every step checks first and says what it skipped. Nothing here needs the network
# once done. Environment knobs:
#   THOUGHTSCOPE_CACHE   cache root (default ~/.cache/thoughtscope): the evcxr binary built by this
#                        script (keyed by version) and its build dir.
#   EVCXR_TMPDIR         a private scratch crate for the kernel instead (outside any cargo
#                        workspace; its own, separate build of everything).
#   NOTEBOOK_CHROMIUM=0  do not apt-get install chromium (used by scripts/check-notebook-html.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

EVCXR_VERSION=0.22.0
CACHE="${THOUGHTSCOPE_CACHE:-$HOME/.cache/thoughtscope}"
VENV=.venv
# nbclient runs the kernel headlessly and nbconvert writes the HTML reports; JupyterLab is for
# interactive use (`.venv/bin/jupyter lab notebooks/`), and websocket-client lets
# scripts/jupyter_server_check.py talk to a real Jupyter server's kernel as JupyterLab does.
PINS=(
  "jupyter-core==5.9.1"
  "jupyter-client==8.10.0"
  "nbformat==5.11.1"
  "nbclient==0.11.0"
  "nbconvert==7.17.2"
  "jupyterlab==4.6.6"
  "websocket-client==1.9.2"
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
#    Its env is what scripts/run_notebook.py gives the kernel (EVCXR_TMPDIR, the flags that let it
#    share the CLI's build, LD_LIBRARY_PATH = the toolchain's std dir, which the cells link
#    dynamically); computing it also prepares the kernel's dir in the cargo target dir (the
#    profile, the link to the target dir, the CLI's Cargo.lock), so interactive kernels share the
#    build too. After `cargo clean`, run this script again.
step "rust kernelspec"
kernel_dir="$VENV/share/jupyter/kernels/rust"
want_argv0="$(readlink -f "$EVCXR_BIN")"
want_env="$("$PY" scripts/run_notebook.py --print-kernel-env)"
kernelspec_state() {
  [ -f "$kernel_dir/kernel.json" ] || return 0
  "$PY" -c 'import json, sys; s = json.load(open(sys.argv[1]))
print(s["argv"][0], json.dumps(s.get("env", {}), sort_keys=True))' "$kernel_dir/kernel.json"
}
if [ "$(kernelspec_state)" = "$want_argv0 $("$PY" -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1]), sort_keys=True))' "$want_env")" ]; then
  echo "skipped: kernelspec $kernel_dir already set up ($want_argv0)"
else
  JUPYTER_PATH="$PWD/$VENV/share/jupyter" "$want_argv0" --install
  "$PY" - "$kernel_dir/kernel.json" "$want_env" <<'EOF2'
import json, sys
path, env = sys.argv[1], json.loads(sys.argv[2])
spec = json.load(open(path))
spec["env"] = env
json.dump(spec, open(path, "w"), indent=1)
print(f"kernelspec {path}: env {env}")
EOF2
fi

# 5. Headless Chromium for scripts/check-notebook-html.sh and static figures.
step "chromium"
bash scripts/install-chromium.sh

"$PY" -m jupyter kernelspec list
