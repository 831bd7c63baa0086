"""Execute a notebook of ``notebooks/`` in a kernel of this interpreter (the notebook tests).

The kernel comes from ``scripts/execute_notebooks.py`` (the one ``make notebooks`` uses), so
the tests run the notebooks exactly as they are stored. Importable from every test file:
pytest puts ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "execute_notebooks.py"
#: what executing a notebook and its plots needs (the ``dev`` extra has them all).
JUPYTER_MODULES = ("nbformat", "nbclient", "ipykernel", "matplotlib")


def skip_without_jupyter() -> None:
    """Skip the calling test module, naming the module missing, where Jupyter is absent."""
    import pytest

    for name in JUPYTER_MODULES:
        pytest.importorskip(name)


def execute_notebook(path: Path, tmp: Path, env: dict[str, str], timeout: int = 300) -> str:
    """Run the notebook from the repository root with ``env``; return what it printed."""
    import nbclient
    import nbformat

    spec = importlib.util.spec_from_file_location("execute_notebooks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    nb = nbformat.read(path, as_version=4)
    km = module.kernel_manager(tmp / "kernels", env)
    client = nbclient.NotebookClient(
        nb, km=km, timeout=timeout, resources={"metadata": {"path": str(ROOT)}}
    )
    try:
        client.execute()
    finally:  # a kernel manager passed in is not shut down by nbclient: its kernel would live on
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    return "".join(
        o.get("text", "")
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.get("name") == "stdout"
    )
