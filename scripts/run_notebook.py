#!/usr/bin/env python3
"""Headless execution of an evcxr (Rust) notebook and an offline HTML report (why each
step: notebooks/README.md, "What a headless run guarantees").

    .venv/bin/python scripts/run_notebook.py notebooks/codi_attention_importance.ipynb \
        [--html OUT.html] [--executed OUT.ipynb] [--timeout S] [--dep-timeout S]

`thoughtscope notebook run` calls this script. What it adds to `jupyter nbconvert --execute`:

* a per-cell timeout, longer for cells holding a `:dep` line (the first one builds thoughtscope
  inside the kernel: about a minute after the CLI's build, see below, ~10 min with nothing built);
* a panic fails the run even when the kernel reports success: evcxr's default
  `preserve_vars_on_panic` turns a panic into a successful cell with `panicked at` on stderr, so every
  cell's stderr is checked (notebooks/evcxr.toml also turns the option off, making the kernel itself
  report the panic as an error);
* the failing cell is named (index, first source line) with the kernel's message;
* one build for the CLI and the kernel: by default `EVCXR_TMPDIR` (the kernel's scratch crate) is
  `<cargo target dir>/notebook-kernel`, whose `target` is a link to that same target dir, with the
  CLI's profile (notebooks/evcxr-cargo-config.toml), the CLI's rustflags (none: see
  `kernel_env`) and the CLI's Cargo.lock, so cargo finds the dependency graph that `cargo build`
  compiled fresh and the `:dep` cell compiles only thoughtscope itself (notebooks/README.md, "One
  build for the CLI and the kernel"). `--evcxr-tmpdir` (or `EVCXR_TMPDIR`) gives a private build
  dir instead (tests); either overrides the kernelspec's. The toolchain's std dir goes on
  LD_LIBRARY_PATH (see `rust_std_dir`);
* live progress: each cell's start, its stdout/stderr lines as they arrive, its wall time;
* the HTML export works offline: nbconvert's require.js, MathJax 2 and mermaid CDN references are
  removed, a MathJax 3 configuration is put in their place (MathJax 3 itself arrives with plotly.js
  in the first figure's output, from the plotly crate's `offline_js_sources()`), and the file is
  checked to load nothing from the network.

Exit status: 0 success, 1 a cell failed (the executed notebook and the report are still written),
2 bad usage or set-up.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

# `thoughtscope notebook run` passes this file's text with `python -c`: no __file__, and it runs
# from the repository root, which is then the working directory.
REPO = Path(__file__).resolve().parent.parent if "__file__" in globals() else Path.cwd()
DEFAULT_REPORTS = REPO / "analysis" / "reports"
# The kernel's scratch crate inside the CLI's target dir (excluded from the workspace in Cargo.toml).
KERNEL_DIR_NAME = "notebook-kernel"
# Appends `-Cprefer-dynamic` for the kernel's own crate (see `kernel_env`).
RUSTC_WRAPPER_SCRIPT = REPO / "scripts" / "evcxr-rustc-wrapper.sh"

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PANIC = re.compile(r"panicked at")
# Anything a browser would fetch from the network: script/link/img/iframe sources and CSS imports.
NETWORK_REFERENCE = re.compile(
    r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//[^"'\s>]*"""
    r"""|@import\s+(?:url\()?["']?(?:https?:)?//"""
    r"""|\bimport\(\s*["'](?:https?:)?//""",
    re.IGNORECASE,
)
# MathJax 3 reads this object when it loads. The plotly crate's offline bundle (embedded once per
# notebook by the figure glue) includes MathJax 3 tex-svg, which then also typesets the markdown
# cells' `$...$` and `$$...$$` formulas in the report, offline. Inputs and outputs are skipped:
# GSM8K questions and code are full of dollar signs that are not mathematics.
MATHJAX3_CONFIG = r"""<script>window.MathJax = window.MathJax || {
  tex: {inlineMath: [['$', '$'], ['\\(', '\\)']], displayMath: [['$$', '$$'], ['\\[', '\\]']], processEscapes: true},
  options: {ignoreHtmlClass: 'jp-OutputArea|jp-InputArea-editor|jp-CodeMirrorEditor|highlight|tex2jax_ignore'}
};</script>"""


class RunError(Exception):
    """A cell failed: the message names it."""


def first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return line.strip()[:100]
    return ""


def describe_cell(nb, index: int) -> str:
    cell = nb.cells[index]
    code_number = sum(1 for c in nb.cells[: index + 1] if c.cell_type == "code")
    return f"cell {index} (code cell {code_number}) `{first_line(cell.source)}`"


def stderr_text(cell) -> str:
    return "".join(
        o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream" and o.get("name") == "stderr"
    )


def tail(text: str, lines: int = 25) -> str:
    kept = ANSI.sub("", text).rstrip().splitlines()
    if len(kept) > lines:
        kept = [f"... ({len(kept) - lines} lines above)"] + kept[-lines:]
    return "\n".join("    " + line for line in kept)


def cli_target_dir() -> Path:
    """The cargo target dir of the CLI's build: `cargo metadata` honours CARGO_TARGET_DIR and
    `build.target-dir`; `<repo>/target` if cargo cannot say."""
    import json
    import subprocess

    try:
        out = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout
        return Path(json.loads(out)["target_directory"])
    except (OSError, subprocess.CalledProcessError, ValueError, KeyError):
        return REPO / "target"


def default_evcxr_tmpdir() -> Path:
    return cli_target_dir() / KERNEL_DIR_NAME


def share_cli_target(evcxr_tmpdir: Path) -> None:
    """Make the kernel build in the CLI's target dir: evcxr always sets CARGO_TARGET_DIR to
    `EVCXR_TMPDIR/target`, so that path becomes a link to the target dir the scratch crate sits in
    (a real directory left there by an older layout is removed: it is our own build dir)."""
    import shutil

    link = evcxr_tmpdir / "target"
    if link.is_symlink() and os.readlink(link) == "..":
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        print(f"[run_notebook] removing the kernel's private build dir {link} (it now shares the CLI's)", file=sys.stderr, flush=True)
        shutil.rmtree(link)
    link.symlink_to("..")


def copy_cli_lockfile(evcxr_tmpdir: Path) -> None:
    """The CLI's Cargo.lock for the kernel's scratch crate, so cargo picks the same versions of
    every crate (another version would be another build). Called before each `:dep` cell as well:
    evcxr's first build at kernel start, which has no dependencies yet, prunes the file."""
    source = REPO / "Cargo.lock"
    if source.is_file():
        (evcxr_tmpdir / "Cargo.lock").write_bytes(source.read_bytes())


def kernel_env(evcxr_tmpdir: Path) -> dict[str, str]:
    """Environment of the kernel process. evcxr passes `RUSTFLAGS=-Cprefer-dynamic` to every cargo
    build; rustflags are part of every crate's build hash, so that alone would rebuild the whole
    graph the CLI built without them. CARGO_ENCODED_RUSTFLAGS takes precedence over RUSTFLAGS, and
    empty it means no flags, as for the CLI; the cells' cdylib gets its `-Cprefer-dynamic` back from
    a RUSTC_WORKSPACE_WRAPPER, which cargo runs for the scratch crate only (the kernel's only
    workspace member; its path dependencies are not members)."""
    env = {"EVCXR_TMPDIR": str(evcxr_tmpdir)}
    if RUSTC_WRAPPER_SCRIPT.is_file():  # else (run outside the repository) evcxr's own flags
        env["CARGO_ENCODED_RUSTFLAGS"] = ""
        env["RUSTC_WORKSPACE_WRAPPER"] = str(RUSTC_WRAPPER_SCRIPT)
    std_dir = rust_std_dir()
    if std_dir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [std_dir, os.environ.get("LD_LIBRARY_PATH", "")] if p)
    return env


def prepare_kernel_dir(evcxr_tmpdir: Path, shared: bool) -> None:
    evcxr_tmpdir.mkdir(parents=True, exist_ok=True)
    install_cargo_config(evcxr_tmpdir)
    if shared:
        share_cli_target(evcxr_tmpdir)
        copy_cli_lockfile(evcxr_tmpdir)


# What cargo's dev profile uses for a dependency when neither table sets the key.
DEV_DEFAULTS = {"debug-assertions": True, "overflow-checks": True}


def profile_mismatches() -> list[str]:
    """Settings of evcxr-cargo-config.toml's `[profile.dev.package."*"]` that differ from what the
    root Cargo.toml gives every dependency (its `*` table over its `[profile.dev]`): each one makes
    the kernel rebuild the whole graph instead of reusing the CLI's builds."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11: no check
        return []
    try:
        manifest = tomllib.loads((REPO / "Cargo.toml").read_text())
        config = tomllib.loads((REPO / "notebooks" / "evcxr-cargo-config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return []
    dev = manifest.get("profile", {}).get("dev", {})
    cli = {**DEV_DEFAULTS, **{k: v for k, v in dev.items() if k != "package"}, **dev.get("package", {}).get("*", {})}
    kernel = config.get("profile", {}).get("dev", {}).get("package", {}).get("*", {})
    return [
        f"{key} = {kernel[key]!r} for the kernel, {cli.get(key, '(cargo default)')!r} for the CLI"
        for key in sorted(kernel)
        if key != "strip" and cli.get(key) != kernel[key]
    ]


def install_cargo_config(evcxr_tmpdir: Path) -> None:
    """The CLI's profile for the kernel's build (notebooks/evcxr-cargo-config.toml). evcxr runs
    cargo in EVCXR_TMPDIR and rewrites EVCXR_TMPDIR/.cargo/config.toml itself (with `[net] offline`
    only) before every build, so the settings go one level up, where cargo also looks and merges."""
    source = REPO / "notebooks" / "evcxr-cargo-config.toml"
    target = evcxr_tmpdir.parent / ".cargo" / "config.toml"
    for mismatch in profile_mismatches():
        print(
            f"[run_notebook] warning: {source.name} and Cargo.toml disagree on the dependencies' profile: "
            f"{mismatch}; the kernel will rebuild them instead of reusing the CLI's builds",
            file=sys.stderr, flush=True,
        )
    if source.is_file() and (not target.is_file() or target.read_bytes() != source.read_bytes()):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        # stderr: `--print-kernel-env` prints JSON on stdout
        print(f"[run_notebook] {target}: the kernel's build settings from {source.name}", file=sys.stderr, flush=True)


def rust_std_dir() -> str | None:
    """The toolchain's `libstd-*.so` directory. evcxr links each cell with `-Cprefer-dynamic`, so
    the cells load libstd at run time. evcxr's own relative rpath is turned off
    (evcxr-cargo-config.toml: the CLI's builds have none, and rpath is part of every crate's build
    hash; it also missed whenever EVCXR_TMPDIR and the toolchain shared a parent below `/`), so the
    directory goes on LD_LIBRARY_PATH."""
    import subprocess

    try:
        sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()
        host = next(
            line.split(":", 1)[1].strip()
            for line in subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout.splitlines()
            if line.startswith("host:")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return None
    path = Path(sysroot) / "lib" / "rustlib" / host / "lib"
    return str(path) if path.is_dir() else None


def has_dep_line(cell) -> bool:
    return any(line.lstrip().startswith(":dep") for line in cell.source.splitlines())


def running_cell(client, nb) -> str:
    index = getattr(client, "running", None)
    return describe_cell(nb, index) if index is not None else "kernel start"


def make_client(nb, args, nb_dir: Path):
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    class LiveClient(NotebookClient):
        """nbclient with progress lines and the panic check after every cell."""

        cell_times: list[tuple[int, float]] = []
        running: int | None = None  # index of the cell being executed (for timeouts, dead kernels)

        async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
            if cell.cell_type != "code" or not cell.source.strip():
                return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
            print(f"[run_notebook] {describe_cell(self.nb, cell_index)} ...", flush=True)
            if args.shared_target and has_dep_line(cell):
                copy_cli_lockfile(args.evcxr_tmpdir)
            self.running = cell_index
            start = time.monotonic()
            try:
                cell = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
            finally:
                seconds = time.monotonic() - start
                self.cell_times.append((cell_index, seconds))
                print(f"[run_notebook] cell {cell_index}: {seconds:.1f} s", flush=True)
            if PANIC.search(stderr_text(cell)):
                raise RunError(f"{describe_cell(self.nb, cell_index)} panicked:\n{tail(stderr_text(cell))}")
            return cell

        def output(self, outs, msg, display_id, cell_index):
            out = super().output(outs, msg, display_id, cell_index)
            if msg["msg_type"] == "stream":
                for line in msg["content"].get("text", "").splitlines():
                    print(f"    | {line}", flush=True)
            elif msg["msg_type"] in ("execute_result", "display_data"):
                kinds = ", ".join(sorted(msg["content"].get("data", {})))
                print(f"    | <output: {kinds}>", flush=True)
            return out

    km = AsyncKernelManager(kernel_name=args.kernel)  # nbclient is async: a blocking manager would stall its timeouts
    # Force our build dir over the kernelspec's (jupyter_client applies kernelspec env last).
    km.kernel_spec.env = {**(km.kernel_spec.env or {}), **kernel_env(args.evcxr_tmpdir)}

    def timeout_for(cell):
        return args.dep_timeout if has_dep_line(cell) else args.timeout

    client = LiveClient(
        nb,
        km=km,
        kernel_name=args.kernel,
        timeout=args.timeout,
        timeout_func=timeout_for,
        startup_timeout=args.startup_timeout,
        record_timing=True,
        allow_errors=False,
        resources={"metadata": {"path": str(nb_dir)}},
    )
    client.cell_times = []
    client.owns_km = True  # so nbclient shuts the kernel down (it only does for managers it made)
    return client


def offline_html(nb) -> str:
    """The lab-template HTML with every CDN reference removed (require.js, MathJax 2, the mermaid
    loader); raises if one remains."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.require_js_url = ""
    exporter.mathjax_url = ""
    # The page title (nbconvert's default is "Notebook"): the first markdown heading.
    title = next(
        (line[2:].strip() for cell in nb.cells if cell.cell_type == "markdown"
         for line in cell.source.splitlines() if line.startswith("# ")),
        "Notebook",
    )
    html, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    html = re.sub(r"""<script src=["']{2}>\s*</script>""", "", html)
    html = re.sub(
        r"""<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->""",
        lambda _: MATHJAX3_CONFIG,  # a function: re.sub would otherwise unescape the backslashes
        html,
        flags=re.DOTALL,
    )
    # The lab template's mermaid loader imports mermaid from a CDN when a diagram is present; the
    # notebooks have none, so the loader goes.
    html = re.sub(r"""<script type="module">(?:(?!</script>).)*?jp-Mermaid.*?</script>""", "", html, flags=re.DOTALL)
    remaining = sorted(set(m.group(0)[:160] for m in NETWORK_REFERENCE.finditer(html)))
    if remaining:
        raise RunError("the HTML report still references the network:\n" + "\n".join("    " + r for r in remaining))
    return html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_notebook.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", type=Path, nargs="?")
    parser.add_argument("--html", type=Path, help="report path (default analysis/reports/<name>.html)")
    parser.add_argument("--executed", type=Path, help="executed notebook (default analysis/reports/<name>.ipynb)")
    parser.add_argument("--timeout", type=float, default=900, help="per-cell timeout in seconds (default 900)")
    parser.add_argument(
        "--dep-timeout", type=float, default=3600, help="timeout of cells with a `:dep` line (default 3600: a cold build)"
    )
    parser.add_argument("--startup-timeout", type=float, default=180, help="kernel start timeout (default 180)")
    parser.add_argument("--kernel", default="rust", help="kernel name (default rust, from evcxr_jupyter --install)")
    parser.add_argument(
        "--evcxr-tmpdir",
        type=Path,
        default=Path(os.environ["EVCXR_TMPDIR"]) if os.environ.get("EVCXR_TMPDIR") else None,
        help="a private build dir for the kernel, outside any cargo workspace; its parent gets "
        ".cargo/config.toml (default $EVCXR_TMPDIR, else <cargo target dir>/notebook-kernel, which "
        "shares the CLI's build)",
    )
    parser.add_argument(
        "--print-kernel-env",
        action="store_true",
        help="prepare the default (shared) kernel dir, print the kernel's environment as JSON and "
        "exit (scripts/setup-notebooks.sh writes it into the kernelspec)",
    )
    args = parser.parse_args(argv)
    args.shared_target = args.evcxr_tmpdir is None
    if args.shared_target:
        args.evcxr_tmpdir = default_evcxr_tmpdir()
    args.evcxr_tmpdir = args.evcxr_tmpdir.expanduser().resolve()
    prepare_kernel_dir(args.evcxr_tmpdir, args.shared_target)
    if args.print_kernel_env:
        import json

        env = kernel_env(args.evcxr_tmpdir)
        env.pop("LD_LIBRARY_PATH", None)  # the kernelspec gets the std dir alone, not this shell's path
        std_dir = rust_std_dir()
        if std_dir:
            env["LD_LIBRARY_PATH"] = std_dir
        print(json.dumps(env))
        return 0
    if args.notebook is None:
        parser.error("the notebook is required")

    try:
        import nbformat
        from nbclient.exceptions import CellExecutionError, DeadKernelError
        from jupyter_client.kernelspec import NoSuchKernel
    except ImportError as e:
        print(f"error: {e} (python {sys.executable}); run scripts/setup-notebooks.sh", file=sys.stderr)
        return 2

    notebook = args.notebook.resolve()
    if not notebook.is_file():
        print(f"error: notebook {args.notebook} not found", file=sys.stderr)
        return 2
    name = notebook.stem
    html_path = (args.html or DEFAULT_REPORTS / f"{name}.html").resolve()
    executed_path = (args.executed or html_path.with_suffix(".ipynb")).resolve()
    if executed_path == notebook:  # never overwrite the source notebook with its outputs
        executed_path = executed_path.with_suffix(".executed.ipynb")

    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception as e:  # nbformat raises several types for a malformed file
        print(f"error: reading {notebook}: {e}", file=sys.stderr)
        return 2

    build = "the CLI's target dir" if args.shared_target else "a private target dir"
    print(f"[run_notebook] {notebook} with kernel `{args.kernel}`, EVCXR_TMPDIR={args.evcxr_tmpdir} ({build})", flush=True)
    start = time.monotonic()
    failure: str | None = None
    client = None
    try:
        client = make_client(nb, args, notebook.parent)
        client.execute()
    except NoSuchKernel:
        print(f"error: no `{args.kernel}` kernelspec; run scripts/setup-notebooks.sh", file=sys.stderr)
        return 2
    except CellExecutionError:
        # evcxr's execute_reply carries no ename/evalue (evcxr/evcxr issue #281); the iopub error output does.
        index, error = next(
            ((i, o) for i, c in enumerate(nb.cells) for o in c.get("outputs", []) if o.get("output_type") == "error"),
            (None, {}),
        )
        where = describe_cell(nb, index) if index is not None else "a cell"
        failure = f"{where} failed: {error.get('ename', '?')}: {ANSI.sub('', error.get('evalue', '')).strip()}"
        if error.get("traceback"):
            failure += "\n" + tail("\n".join(error["traceback"]))
        if index is not None and stderr_text(nb.cells[index]).strip():
            failure += "\n  stderr:\n" + tail(stderr_text(nb.cells[index]))
    except RunError as e:
        failure = str(e)
    except DeadKernelError as e:
        failure = f"{running_cell(client, nb)}: the kernel died: {e}"
    except TimeoutError as e:
        failure = f"{running_cell(client, nb)}: timeout: {e}"
    except RuntimeError as e:  # kernel start failures surface as RuntimeError
        failure = f"kernel error: {e}"
    finally:
        # Never leave a kernel behind: it would hold this process's stdout open.
        if client is not None and client.km is not None and client.km.has_kernel:
            from jupyter_core.utils import run_sync

            run_sync(client.km.shutdown_kernel)(now=True)
    total = time.monotonic() - start

    executed_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, executed_path)
    print(f"[run_notebook] executed notebook: {executed_path}")
    try:
        html = offline_html(nb)
    except RunError as e:
        failure = failure or str(e)
    else:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(html, encoding="utf-8")
        print(f"[run_notebook] HTML report: {html_path} ({len(html.encode()) / 1e6:.1f} MB, no network references)")

    times = client.cell_times if client is not None else []
    if times:
        slowest = sorted(times, key=lambda t: -t[1])[:5]
        print("[run_notebook] slowest cells: " + ", ".join(f"{i}: {s:.1f} s" for i, s in slowest))
    print(f"[run_notebook] {len(times)} code cells in {total:.1f} s")
    if failure:
        print(f"error: {notebook.name}: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
