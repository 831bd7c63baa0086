"""Data summarization runner (lit_info.summarization) end to end on tiny digits runs."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from lit_info.summarization import main, ranking, read_scores, removal_count

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sui" / "digits_summarization.yaml"
N = 40  # training samples of the tiny runs
TINY = [
    "--cli-args=--data.init_args.train_subset=60",
    "--cli-args=--data.init_args.val_size=20",
    "--cli-args=--trainer.max_epochs=5",
    "--cli-args=--trainer.check_val_every_n_epoch=5",
]
LINE = re.compile(
    r"^(least|most|random) fraction=(\d\.\d+) test_acc=(\d\.\d{4}) n_train=(\d+) "
    r"iteration=(\d+) seed=(\d+)$"
)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _indices(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


def _scores(path: Path) -> dict[int, float]:
    return {int(r["index"]): float(r["fsi"]) for r in _rows(path)}


@pytest.fixture(scope="module")
def one_shot(tmp_path_factory):
    out = tmp_path_factory.mktemp("one_shot")
    args = ["--config", str(CONFIG), "--fractions", "0", "0.25", "--out", str(out), *TINY]
    return out, args


def test_one_shot_summarization(one_shot, capsys):
    out, args = one_shot
    assert main([*args, "--order", "least", "most", "random"]) == 0
    captured = capsys.readouterr()
    lines = [LINE.match(line) for line in captured.out.splitlines()]
    assert all(lines) and len(lines) == 6, captured.out
    assert "[1/4] full_s0: fit+SUI+test" in captured.err  # one scoring fit, 3 retrainings

    rows = _rows(out / "summarization.csv")
    assert list(rows[0]) == ["order", "fraction", "n_train", "test_acc", "iteration", "seed"]
    assert [(r["order"], float(r["fraction"]), int(r["n_train"])) for r in rows] == [
        (order, fraction, n)
        for order in ("least", "most", "random")
        for fraction, n in ((0.0, N), (0.25, N - 10))
    ]
    assert {r["iteration"] for r in rows} == {"0"} and {r["seed"] for r in rows} == {"0"}
    assert all(0.0 <= float(r["test_acc"]) <= 1.0 for r in rows)
    assert len({r["test_acc"] for r in rows if r["n_train"] == str(N)}) == 1  # one shared run
    for row, match in zip(rows, lines, strict=True):
        assert match.group(1) == row["order"]
        assert float(match.group(3)) == pytest.approx(float(row["test_acc"]), abs=5e-5)

    # the excluded samples are the 10 lowest (least) / highest (most) F-SI of the scoring run
    fsi = _scores(out / "scores" / "full_s0.csv")
    assert sorted(fsi) == list(range(N))
    by_score = sorted(fsi, key=lambda i: (fsi[i], i))
    runs = out / "runs"
    assert _indices(runs / "least_f0.2500_s0" / "excluded_train_indices.txt") == sorted(
        by_score[:10]
    )
    assert _indices(runs / "most_f0.2500_s0" / "excluded_train_indices.txt") == sorted(
        by_score[-10:]
    )
    random_excluded = _indices(runs / "random_f0.2500_s0" / "excluded_train_indices.txt")
    assert len(set(random_excluded)) == 10 and max(random_excluded) < N
    # the retraining runs have no SampleInformation callback; the scoring run had one
    for name in ("least_f0.2500_s0", "most_f0.2500_s0", "random_f0.2500_s0"):
        cfg = yaml.safe_load((runs / name / "run_config.yaml").read_text())
        assert cfg["trainer"]["callbacks"] == []
        assert cfg["data"]["init_args"]["exclude_train_indices"].endswith(
            "excluded_train_indices.txt"
        )
        assert not list((runs / name).glob("sample_information_epoch*.csv"))
    assert list((runs / "full_s0").glob("sample_information_epoch*.csv"))
    assert not list(out.rglob("*.tmp"))


def test_precomputed_scores_skip_the_scoring_fit(one_shot, tmp_path, capsys):
    out, args = one_shot
    scores = out / "scores" / "full_s0.csv"
    if not scores.is_file():
        pytest.skip("needs test_one_shot_summarization's output")
    new = tmp_path / "again"
    cmd = ["--config", str(CONFIG), "--fractions", "0.25", "--out", str(new), *TINY]
    assert main([*cmd, "--scores", str(scores)]) == 0
    err = capsys.readouterr().err
    assert "SUI" not in err and "[1/1] least_f0.2500_s0: fit+test" in err
    assert _indices(new / "runs" / "least_f0.2500_s0" / "excluded_train_indices.txt") == (
        _indices(out / "runs" / "least_f0.2500_s0" / "excluded_train_indices.txt")
    )
    assert [r["n_train"] for r in _rows(new / "summarization.csv")] == [str(N - 10)]


def test_iterative_summarization_rescores_the_remaining_samples(tmp_path, capsys):
    out = tmp_path / "iterative"
    args = ["--config", str(CONFIG), "--fractions", "0.5", "--iterative", "--step", "0.25"]
    assert main([*args, "--order", "least", "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    # 40 -> 30 (floor(0.25 * 40) = 10) -> 23 (floor(0.25 * 30) = 7); a third round would pass 0.5
    rows = _rows(out / "summarization.csv")
    assert [(int(r["iteration"]), int(r["n_train"])) for r in rows] == [(0, 40), (1, 30), (2, 23)]
    assert [float(r["fraction"]) for r in rows] == [0.0, 0.25, 0.425]
    runs, scores = out / "runs", out / "scores"
    full = _scores(scores / "full_s0.csv")
    round1 = set(_indices(runs / "least_iter01_s0" / "excluded_train_indices.txt"))
    assert round1 == set(sorted(full, key=lambda i: (full[i], i))[:10])
    # the second ranking comes from scores recomputed on the 30 remaining samples
    rescored = _scores(scores / "least_iter01_s0.csv")
    assert set(rescored) == set(range(N)) - round1
    assert not np.allclose([rescored[i] for i in rescored], [full[i] for i in rescored])
    round2 = set(_indices(runs / "least_iter02_s0" / "excluded_train_indices.txt"))
    assert round2 - round1 == set(sorted(rescored, key=lambda i: (rescored[i], i))[:7])
    assert round1 < round2 and len(round2) == 17
    assert not (scores / "least_iter02_s0.csv").exists()  # the last round is not scored


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--fractions", "0", "1.0"], r"fractions must lie in \[0, 1\), got 1\.0"),
        (["--fractions", "-0.1"], r"fractions must lie in \[0, 1\)"),
        (["--order", "least", "best"], r"order must be one of .*'best'"),
        (["--score", "loss"], r"score must be one of .*'loss'"),
        (["--step", "0.1"], r"--step applies to the iterative variant only"),
        (["--iterative", "--step", "1.5"], r"step must lie in \(0, 1\)"),
        (["--config", "missing.yaml"], r"config file not found: 'missing\.yaml'"),
        (["--scores", "nowhere.csv"], r"scores file not found"),
    ],
)
def test_bad_input_exits_1_and_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    args = ["--config", str(CONFIG), "--fractions", "0.5", "--out", str(out), *TINY]
    assert main([*args, *extra]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert err.startswith("lit_info.summarization: error:") and "Traceback" not in err
    assert not out.exists()


def test_config_without_sample_information_needs_scores(tmp_path, capsys):
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["trainer"]["callbacks"] = []
    config = tmp_path / "no_sui.yaml"
    config.write_text(yaml.safe_dump(cfg))
    bad_scores = tmp_path / "scores.csv"
    bad_scores.write_text("index,fsi\n0,0.1\n1,0.2\n")
    out = tmp_path / "out"
    args = ["--config", str(config), "--fractions", "0.5", "--out", str(out), *TINY]
    assert main(args) == 1
    assert "no lit_info.callbacks.SampleInformation callback" in capsys.readouterr().err
    assert main([*args, "--scores", str(bad_scores)]) == 1
    assert "must list every training index 0..39 once, got 2 rows" in capsys.readouterr().err
    assert not out.exists()


def test_rankings_and_counts():
    scores = np.array([0.3, 0.1, 0.2, 0.1, 0.5])
    assert ranking(scores, "least").tolist() == [1, 3, 2, 0, 4]
    assert ranking(scores, "most").tolist() == [4, 0, 2, 1, 3]
    perm = ranking(scores, "random", seed=3)
    assert sorted(perm.tolist()) == list(range(5))
    assert ranking(scores, "random", seed=3).tolist() == perm.tolist()
    assert [removal_count(f, 10) for f in (0.0, 0.3, 0.35, 0.99)] == [0, 3, 3, 9]


def test_read_scores_orders_by_index(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("index,si,fsi\n2,1.0,0.2\n0,2.0,0.0\n1,3.0,0.1\n")
    np.testing.assert_array_equal(read_scores(path, "fsi", 3), [0.0, 0.1, 0.2])
    np.testing.assert_array_equal(read_scores(path, "si"), [2.0, 3.0, 1.0])
