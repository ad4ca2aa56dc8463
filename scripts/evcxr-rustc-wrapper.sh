#!/bin/sh
# RUSTC_WORKSPACE_WRAPPER of the notebooks' Jupyter kernel (set by scripts/run_notebook.py and the
# `rust` kernelspec): cargo runs it for the kernel's own scratch crate only, which evcxr compiles
# once per cell into a cdylib. evcxr passes `-Cprefer-dynamic` in RUSTFLAGS for that cdylib; the
# kernel's environment empties RUSTFLAGS (CARGO_ENCODED_RUSTFLAGS="") so the dependencies it shares
# with the CLI's build keep the CLI's (empty) flags, and this puts the flag back where it belongs.
exec "$@" -Cprefer-dynamic
