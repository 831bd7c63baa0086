"""Execute ``notebooks/quickstart.ipynb`` and check what it produced.

The kernel is the interpreter running the tests (a throw-away kernel spec points at
``sys.executable``, so a ``python3`` spec installed elsewhere on the machine cannot be picked up
instead of the project's virtual environment). The notebook writes into
``$LIT_INFO_QUICKSTART_DIR``; the test checks its figure, and compares the curves it read from the
TensorBoard event files with the CSV that ``MemorizationMonitor`` wrote independently.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
KERNEL = "lit-info-test"


def _kernel_manager(tmp_path: Path, out_dir: Path) -> KernelManager:
    spec_dir = tmp_path / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "lit_info test kernel",
        "language": "python",
        "env": {"LIT_INFO_QUICKSTART_DIR": str(out_dir), "PYTHONWARNINGS": "ignore"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> tuple[object, Path]:
    tmp = tmp_path_factory.mktemp("notebook")
    out_dir = tmp / "out"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        km=_kernel_manager(tmp, out_dir),
        timeout=300,
        resources={"metadata": {"path": str(tmp)}},
    )
    client.execute()
    return nb, out_dir


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout")


def test_committed_notebook_holds_its_executed_outputs():
    # stored executed (scripts/execute_notebooks.py), so a reader of the repository sees the
    # printed results and the plot; the tests below execute it afresh
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert all(c.outputs for c in code)
    assert not [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 and len(images[0]["data"]["image/png"]) > 10_000
    stored = json.loads(_stdout(code[-1]))  # the final-epoch values it printed
    assert stored["LIMIT_L"]["test_acc"] > stored["cross-entropy"]["test_acc"] + 0.15
    assert "tmp" not in _stdout(code[0])  # names the repository's runs/, not a temp folder
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code) - 1


def test_notebook_runs_in_the_project_interpreter(executed):
    nb, out_dir = executed
    assert f"writing logs and figures to {out_dir}" in _stdout(nb.cells[1])
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_notebook_plot_is_written_and_shown(executed):
    nb, out_dir = executed
    summary = json.loads((out_dir / "summary.json").read_text())
    plot = Path(summary["plot"])
    assert plot.parent == out_dir and plot.is_file()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(plot)
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert image[..., :3].std() > 0.05  # not a blank canvas
    shown = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(shown) == 1


def _csv_history(log_dir: str) -> list[dict[str, float]]:
    with open(Path(log_dir) / "memorization.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_tensorboard_curves_match_the_monitor_csv(executed):
    _, out_dir = executed
    summary = json.loads((out_dir / "summary.json").read_text())
    epochs = summary["epochs"]
    assert set(summary["runs"]) == {"cross-entropy", "LIMIT_L"}
    for run in summary["runs"].values():
        assert Path(run["log_dir"]).is_relative_to(out_dir)
        curves = run["curves"]
        history = _csv_history(run["log_dir"])
        assert [int(h["epoch"]) for h in history] == list(range(epochs))
        for tag in ("clean_acc", "corrupted_acc_given", "corrupted_acc_true"):
            values = curves[f"memorization/{tag}"]  # JSON keys: epochs as strings
            assert sorted(int(e) for e in values) == list(range(epochs))
            for row in history:
                assert values[str(int(row["epoch"]))] == pytest.approx(row[tag], abs=1e-6)
        val = curves["val/acc"]
        assert sorted(int(e) for e in val) == list(range(epochs))
        assert all(0.0 <= v <= 1.0 for v in val.values())


def test_notebook_shows_memorization_by_cross_entropy_not_by_limit(executed):
    nb, out_dir = executed
    summary = json.loads((out_dir / "summary.json").read_text())
    last = str(summary["epochs"] - 1)
    ce = summary["runs"]["cross-entropy"]["curves"]
    limit = summary["runs"]["LIMIT_L"]["curves"]
    memorized_ce = ce["memorization/corrupted_acc_given"]
    memorized_limit = limit["memorization/corrupted_acc_given"][last]
    # CE fits most wrong labels by the end, far more than at the start and than LIMIT
    assert memorized_ce[last] > 0.7
    assert memorized_ce[last] > memorized_ce["0"] + 0.4
    assert memorized_limit < memorized_ce[last] - 0.2
    # ... and LIMIT, which memorizes less, generalizes better to the clean test labels
    assert (
        summary["runs"]["LIMIT_L"]["test_acc"] > summary["runs"]["cross-entropy"]["test_acc"] + 0.15
    )
    # both generalize well above chance (10 classes) at their best epoch on the clean labels
    for run in summary["runs"].values():
        assert max(run["curves"]["val/acc"].values()) > 0.4
        assert 0.1 < run["test_acc"] <= 1.0
    # the last cell prints the final-epoch values of the same curves
    printed = json.loads(_stdout(nb.cells[-1]))
    assert printed["cross-entropy"]["memorization/corrupted_acc_given"] == pytest.approx(
        memorized_ce[last], abs=1e-4
    )
    assert printed["LIMIT_L"]["test_acc"] == pytest.approx(
        summary["runs"]["LIMIT_L"]["test_acc"], abs=1e-4
    )
