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


def execute_notebook(path: Path, tmp: Path, env: dict[str, str], timeout: int = 300) -> str:
    """Run the notebook from the repository root with ``env``; return what it printed."""
    import nbclient
    import nbformat

    spec = importlib.util.spec_from_file_location("execute_notebooks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        km=module.kernel_manager(tmp / "kernels", env),
        timeout=timeout,
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()
    return "".join(
        o.get("text", "")
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.get("name") == "stdout"
    )
