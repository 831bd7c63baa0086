"""Execute the notebooks in place, so the repository shows their outputs (plots included).

``python scripts/execute_notebooks.py`` (or ``make notebooks``) runs every notebook in
``notebooks/`` in a kernel of this interpreter (the project's virtual environment) and saves
it with its outputs. The quickstart writes its logs to ``runs/quickstart`` (a path relative to
the repository, so the stored outputs name no temporary folder of the machine that ran it).
The test suite executes the notebooks again and checks what they print.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import nbclient
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "lit-info"


def kernel_manager(spec_root: Path, env: dict[str, str]) -> KernelManager:
    """A kernel of ``sys.executable`` (not whatever ``python3`` kernel the machine has)."""
    spec_dir = spec_root / KERNEL
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "lit_info",
        "language": "python",
        "env": {"PYTHONWARNINGS": "ignore", **env},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_root)], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def execute(path: Path, timeout: int = 600) -> None:
    """Run one notebook from the repository root and save it with its outputs (atomically)."""
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"LIT_INFO_QUICKSTART_DIR": "runs/quickstart"}
        km = kernel_manager(Path(tmp), env)
        client = nbclient.NotebookClient(
            nb, km=km, timeout=timeout, resources={"metadata": {"path": str(ROOT)}}
        )
        try:
            client.execute()
        finally:  # nbclient leaves the kernel of a kernel manager passed in running
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    tmp_path = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp_path)
    os.replace(tmp_path, path)
    print(f"executed and saved {path.relative_to(ROOT)}")


def main() -> None:
    """Execute the notebooks named on the command line (default: all of notebooks/)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args()
    for path in args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb")):
        execute(path.resolve())


if __name__ == "__main__":
    main()
