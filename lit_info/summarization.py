r"""Data summarization by smooth unique information (Harutyunyan et al., ICLR 2021).

Rank the training samples by their F-SI (or SI), remove the least (or the most) informative
fraction, retrain on the rest and measure the test accuracy, for several fractions: an accuracy
curve. Removing the *least* informative samples should keep the accuracy much longer than
removing the most informative or random ones. In the *iterative* variant a small fraction
(``--step``) of the *remaining* data is removed per round and the scores are recomputed on the
remaining training set before the next round (``int(step * remaining)`` samples per round, at
least one, as in the authors' code).

This module only orchestrates :func:`lit_info.cli.main` runs of one experiment config:

1. *Scores* (skipped with ``--scores CSV``): fit the config once on the full training set; its
   :class:`~lit_info.callbacks.SampleInformation` callback computes SI / F-SI. They are saved as
   ``scores/full_s<seed>.csv`` (iterative: also ``scores/<order>_iter<k>_s<seed>.csv`` for
   round ``k``, on the remaining samples) with the original training index, and the run's test
   accuracy serves as the fraction-0 point of that seed (the callback does not touch the
   training or the global random state, so the training is the same as without it). The
   callback's own settings decide what is scored, e.g. ``linearize_at: initial`` for the
   paper's SUI of the training run (``configs/sui/mnist4v9_summarization.yaml``). With
   ``--score-cli-args`` the scoring runs are separate fits with those extra arguments (e.g.
   ``--score-cli-args=--trainer.max_epochs=0``: score the untrained network); their runs and
   score files carry the suffix ``_scoring``.
2. *Retraining*: for every order and fraction, the ``floor(fraction * n)`` first samples of the
   ranking are written to ``runs/<run>/excluded_train_indices.txt`` and the config is refitted
   with ``data.init_args.exclude_train_indices`` pointing to that file, its SampleInformation
   callbacks removed (kept while iterating, to rescore the remaining data), its logger a
   TensorBoardLogger in ``runs/<run>`` and its seed the run's seed; then ``trainer.test`` gives
   ``test/acc`` (the metric :class:`~lit_info.methods.base.ImageClassificationModule` logs).
   Runs with the same training set and seed are done once.
3. ``summarization.csv`` (columns ``order, fraction, n_train, test_acc, iteration, seed``) is
   written at the end, through a temporary file and a rename.

Orders: ``least`` removes the lowest scores first, ``most`` the highest (ties: lower index
first), ``random`` a random permutation seeded by the run's seed. ``fraction`` in the CSV is the
removed share ``1 - n_train / n`` of the full training split of ``n`` samples (exactly the
requested fraction when ``fraction * n`` is an integer). With ``--iterative`` the rows are the
rounds (``iteration`` 0, 1, ...), which go on while the removed share stays within the largest
of ``--fractions``; ``random`` then removes a random ``step`` of the remaining data per round.

Each result is printed on stdout as one script-readable line, e.g.
``least fraction=0.20 test_acc=0.9512 n_train=320 iteration=0 seed=0``; progress goes to
stderr. Bad input (a fraction outside ``[0, 1)``, an unknown order or score, a missing config
or scores file, a config without SampleInformation callback when scores are needed) ends with a
one-line message and exit status 1 before anything is written.

Usage::

    python -m lit_info.summarization --config configs/sui/digits_summarization.yaml \
        --fractions 0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 --order least most random \
        --score fsi --out runs/summarization/digits

    # iterative: remove 10% of the remaining data per round, rescoring every round
    python -m lit_info.summarization --config configs/sui/digits_summarization.yaml \
        --fractions 0.8 --order least most --iterative --step 0.1 \
        --out runs/summarization/digits_iterative

    # a lit_info.cli override for every run: one --cli-args=... per argument
    python -m lit_info.summarization ... --cli-args=--trainer.max_epochs=20

Other options: ``--seeds 0 1 2`` repeats every retraining with these ``seed_everything``
values (scores from the first seed; iterative: a chain per seed), ``--scores CSV`` reuses
scores (e.g. ``<out>/scores/full_s0.csv``), ``--score si`` ranks by weight SI,
``--score-cli-args=...`` (see above), ``--threads N`` sets torch's intra-op threads (1 is
fastest for the tiny digits models) and ``--verbose`` keeps Lightning's own output. The output
folder holds ``summarization.csv``, ``scores/*.csv`` and one folder per fit under ``runs/``
(``run_config.yaml`` as run, ``excluded_train_indices.txt``, TensorBoard events).

Indices: the datamodule renumbers the remaining training items ``0..m-1`` (see
:mod:`lit_info.data.images`); this module maps the callback's rows back to the original
training indices through ``datamodule.train_original_indices``, so every index written here
(exclusion files, score files) is an index into the full training split.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = [
    "ORDERS",
    "SCORES",
    "SummarizationError",
    "SummarizationRow",
    "main",
    "ranking",
    "read_scores",
    "removal_count",
    "run_summarization",
]

#: Accepted ``--order`` values.
ORDERS: tuple[str, ...] = ("least", "most", "random")
#: Accepted ``--score`` values (columns of the SampleInformation results).
SCORES: tuple[str, ...] = ("fsi", "si")
#: Default ``--step`` of the iterative variant (the authors' 5% of the remaining data).
DEFAULT_STEP = 0.05

_SUI_CLASS = "SampleInformation"
_EPS = 1e-9


class SummarizationError(ValueError):
    """Bad input to the summarization runner; the message says which."""


@dataclass(frozen=True)
class SummarizationRow:
    """One point of an accuracy curve (one row of ``summarization.csv``).

    Attributes:
        order: ``least``, ``most`` or ``random``.
        fraction: Removed share of the full training split, ``1 - n_train / n``.
        n_train: Training samples of the run.
        test_acc: Test accuracy of the retrained model.
        iteration: Round of the iterative variant (0 when not iterative).
        seed: ``seed_everything`` of the run.
    """

    order: str
    fraction: float
    n_train: int
    test_acc: float
    iteration: int
    seed: int

    def line(self) -> str:
        """The script-readable stdout line of this result."""
        return (
            f"{self.order} fraction={_fmt_fraction(self.fraction)} "
            f"test_acc={self.test_acc:.4f} n_train={self.n_train} "
            f"iteration={self.iteration} seed={self.seed}"
        )


def _fmt_fraction(fraction: float) -> str:
    return (
        f"{fraction:.2f}"
        if abs(fraction * 100 - round(fraction * 100)) < 1e-6
        else f"{fraction:.4f}"
    )


# --------------------------------------------------------------------------------- rankings


def removal_count(fraction: float, n: int) -> int:
    """Samples removed for ``fraction`` of ``n``: ``floor(fraction * n)`` (as the authors).

    A tiny tolerance keeps e.g. ``0.3 * 10`` at 3 despite rounding.
    """
    return int(math.floor(fraction * n + _EPS))


def ranking(scores: np.ndarray, order: str, seed: int = 0) -> np.ndarray:
    """Removal order of the positions of ``scores``: the first entries are removed first.

    Args:
        scores: ``(n,)`` informativeness scores (ignored for ``random``, except its length).
        order: ``least`` (ascending score), ``most`` (descending) or ``random``.
        seed: Seed of the ``random`` permutation.

    Returns:
        A permutation of ``0..n-1``; ties are broken by position (lower first).

    Raises:
        SummarizationError: On an unknown order or non-finite scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    position = np.arange(scores.shape[0])
    if order == "random":
        return np.random.default_rng(seed).permutation(scores.shape[0])
    if not np.isfinite(scores).all():
        raise SummarizationError(
            f"scores must be finite, got {int((~np.isfinite(scores)).sum())} NaN/inf values"
        )
    if order == "least":
        return np.lexsort((position, scores))
    if order == "most":
        return np.lexsort((position, -scores))
    raise SummarizationError(f"order must be one of {list(ORDERS)}, got {order!r}")


def read_scores(path: str | os.PathLike[str], score: str, n: int | None = None) -> np.ndarray:
    """Read per-sample scores from a CSV with an ``index`` column and a ``score`` column.

    The ``sample_information_epoch*.csv`` files of a run without exclusions and the
    ``scores/*.csv`` files written by this module qualify.

    Args:
        path: The CSV file.
        score: Column to read (``fsi`` or ``si``).
        n: Expected number of training samples (the indices must be exactly ``0..n-1``).

    Returns:
        ``(n,)`` float64 scores ordered by index.

    Raises:
        FileNotFoundError: If the file does not exist.
        SummarizationError: On a missing column, a bad value or indices that are not ``0..n-1``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scores file not found: {str(path)!r}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for name in ("index", score):
            if name not in columns:
                raise SummarizationError(
                    f"scores file {path} has no {name!r} column (columns: {columns})"
                )
        index, values = [], []
        for line, row in enumerate(reader, start=2):
            try:
                index.append(int(row["index"]))
                values.append(float(row[score]))
            except (TypeError, ValueError):
                raise SummarizationError(
                    f"scores file {path}, line {line}: bad index or {score} value "
                    f"({row.get('index')!r}, {row.get(score)!r})"
                ) from None
    count = len(index) if n is None else n
    idx = np.asarray(index, dtype=np.int64)
    if len(index) != count or not np.array_equal(np.sort(idx), np.arange(count)):
        raise SummarizationError(
            f"scores file {path} must list every training index 0..{count - 1} once, got "
            f"{len(index)} rows (the training split of the config has {count} samples)"
        )
    out = np.empty(count, dtype=np.float64)
    out[idx] = values
    return out


# ------------------------------------------------------------------------------- the runs


@dataclass
class _Plan:
    config: Path
    base: dict[str, Any]
    n: int
    seeds: list[int]
    cli_args: list[str]
    score_cli_args: list[str]
    out: Path
    score: str
    verbose: bool


@dataclass
class _RunResult:
    test_acc: float
    scores: np.ndarray | None  # by original training index (NaN where excluded)


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Silence Lightning's info logs and its usual CPU warnings while ``enabled``."""
    if not enabled:
        yield
        return
    names = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric")
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*number of training batches.*")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def _own_argv() -> Iterator[None]:
    """Hide this program's arguments from LightningCLI (which warns when it sees both)."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def _callbacks(trainer_cfg: dict[str, Any]) -> list[Any]:
    callbacks = trainer_cfg.get("callbacks")
    if callbacks is None:
        return []
    return list(callbacks) if isinstance(callbacks, list) else [callbacks]


def _is_sui(callback: Any) -> bool:
    path = callback.get("class_path", "") if isinstance(callback, dict) else str(callback)
    return path.rsplit(".", 1)[-1] == _SUI_CLASS


def _run_config(
    plan: _Plan, run_dir: Path, exclude_file: Path | None, seed: int, keep_sui: bool
) -> dict[str, Any]:
    """The config of one run: the base config with exclusion, seed, logger and callbacks."""
    cfg = copy.deepcopy(plan.base)
    cfg["seed_everything"] = seed
    trainer = cfg.setdefault("trainer", {}) or {}
    cfg["trainer"] = trainer
    callbacks = [cb for cb in _callbacks(trainer) if keep_sui or not _is_sui(cb)]
    trainer["callbacks"] = callbacks
    trainer["default_root_dir"] = str(run_dir)
    trainer["logger"] = {
        "class_path": "lit_info.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(run_dir.parent), "name": "", "version": run_dir.name},
    }
    if not plan.verbose:
        trainer["enable_progress_bar"] = False
        trainer["enable_model_summary"] = False
    data = cfg["data"]
    if not data.get("init_args"):
        data["init_args"] = {}
    data["init_args"]["exclude_train_indices"] = None if exclude_file is None else str(exclude_file)
    return cfg


def _fit_and_test(
    plan: _Plan,
    name: str,
    excluded: np.ndarray,
    seed: int,
    with_scores: bool,
    extra_args: Sequence[str] = (),
    test: bool = True,
) -> _RunResult:
    """Fit (+ test) one run through :func:`lit_info.cli.main`; scores by original index."""
    from lit_info.callbacks.sample_information import SampleInformation
    from lit_info.cli import main as cli_main

    run_dir = (plan.out / "runs" / name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    exclude_file = None
    if excluded.size:
        exclude_file = run_dir / "excluded_train_indices.txt"
        exclude_file.write_text("".join(f"{i}\n" for i in np.sort(excluded).tolist()))
    cfg = _run_config(plan, run_dir, exclude_file, seed, keep_sui=with_scores)
    cfg_file = run_dir / "run_config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with _quiet(not plan.verbose), _own_argv():
        cli = cli_main(["fit", "--config", str(cfg_file), *plan.cli_args, *extra_args])
        acc = math.nan
        if test:
            result = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=plan.verbose)
            if not result or "test/acc" not in result[0]:
                raise RuntimeError(f"run {name}: trainer.test logged no 'test/acc' ({result})")
            acc = float(result[0]["test/acc"])
    if not with_scores:
        return _RunResult(acc, None)
    sui = [cb for cb in cli.trainer.callbacks if isinstance(cb, SampleInformation)]
    if not sui or not sui[0].results:
        raise RuntimeError(f"run {name}: the SampleInformation callback computed nothing")
    res = sui[0].results
    original = cli.datamodule.train_original_indices.numpy()
    scores = np.full(plan.n, np.nan)
    scores[original[res["index"].numpy()]] = res[plan.score].double().numpy()
    _write_scores(plan.out / "scores" / f"{name}.csv", original, res)
    return _RunResult(acc, scores)


def _write_scores(path: Path, original: np.ndarray, res: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "given_label", "corrupted", "si", "fsi"])
        rows = zip(
            original[res["index"].numpy()].tolist(),
            res["label"].tolist(),
            res["given_label"].tolist(),
            res["corrupted"].int().tolist(),
            res["si"].tolist(),
            res["fsi"].tolist(),
            strict=True,
        )
        for row in rows:
            writer.writerow([*row[:4], repr(row[4]), repr(row[5])])
    os.replace(tmp, path)


class _Runner:
    """Runs the fits of one summarization, each (training set, seed) once per kind.

    A *scoring* run fits the config with its SampleInformation callback and returns the scores;
    without ``score_cli_args`` it is also the training run of its training set (its test
    accuracy is kept), otherwise it is a separate fit with those extra arguments (e.g.
    ``--trainer.max_epochs=0``) whose accuracy is not used.
    """

    def __init__(self, plan: _Plan, total: int, log: Callable[[str], None]) -> None:
        self.plan = plan
        self.total = total
        self.log = log
        self.done = 0
        self.accuracy: dict[tuple[bytes, int], float] = {}
        self.scores_cache: dict[tuple[bytes, int], np.ndarray] = {}

    def _call(
        self, name: str, excluded: np.ndarray, seed: int, with_scores: bool, separate: bool
    ) -> _RunResult:
        self.done += 1
        self.total = max(self.total, self.done)
        n_train = self.plan.n - excluded.size
        what = "fit+SUI" if separate else "fit+SUI+test" if with_scores else "fit+test"
        tag = f"[{self.done}/{self.total}] {name}"
        self.log(f"{tag}: {what} on {n_train} of {self.plan.n} training samples, seed {seed}")
        start = time.perf_counter()
        extra = self.plan.score_cli_args if separate else []
        result = _fit_and_test(self.plan, name, excluded, seed, with_scores, extra, not separate)
        acc = "" if separate else f"test_acc={result.test_acc:.4f} "
        self.log(f"{tag}: {acc}({time.perf_counter() - start:.1f} s)")
        return result

    @staticmethod
    def _key(excluded: np.ndarray, seed: int) -> tuple[bytes, int]:
        return (np.sort(np.asarray(excluded, dtype=np.int64)).tobytes(), seed)

    def scores(self, name: str, excluded: np.ndarray, seed: int) -> np.ndarray:
        """Scores (by original index, NaN where excluded) of a fit on the remaining samples."""
        excluded = np.sort(np.asarray(excluded, dtype=np.int64))
        key = self._key(excluded, seed)
        if key not in self.scores_cache:
            separate = bool(self.plan.score_cli_args)
            run_name = f"{name}_scoring" if separate else name
            result = self._call(run_name, excluded, seed, True, separate)
            if not separate:
                self.accuracy[key] = result.test_acc
            assert result.scores is not None
            self.scores_cache[key] = result.scores
        return self.scores_cache[key]

    def train(self, name: str, excluded: np.ndarray, seed: int) -> float:
        """Test accuracy after fitting on all but ``excluded`` (no SampleInformation)."""
        excluded = np.sort(np.asarray(excluded, dtype=np.int64))
        key = self._key(excluded, seed)
        if key not in self.accuracy:
            self.accuracy[key] = self._call(name, excluded, seed, False, False).test_acc
        return self.accuracy[key]


def _iterative_rounds(n: int, step: float, max_fraction: float) -> list[int]:
    """Training-set sizes of the iterative rounds (they do not depend on the scores)."""
    sizes = [n]
    while True:
        remaining = sizes[-1]
        k = max(1, int(math.floor(step * remaining + _EPS)))
        if (n - remaining + k) / n > max_fraction + _EPS or remaining - k < 1:
            return sizes
        sizes.append(remaining - k)


def run_summarization(
    config: str | os.PathLike[str],
    fractions: Sequence[float],
    orders: Sequence[str] = ("least",),
    *,
    score: str = "fsi",
    out: str | os.PathLike[str] = "runs/summarization",
    iterative: bool = False,
    step: float | None = None,
    scores: str | os.PathLike[str] | None = None,
    seeds: Sequence[int] | None = None,
    cli_args: Sequence[str] = (),
    score_cli_args: Sequence[str] = (),
    verbose: bool = False,
    log: Callable[[str], None] | None = None,
    emit: Callable[[SummarizationRow], None] | None = None,
) -> list[SummarizationRow]:
    """Run the data-summarization experiment and write ``<out>/summarization.csv``.

    Args:
        config: Experiment config for ``python -m lit_info.cli fit`` with a
            :class:`~lit_info.data.NoisyImageDataModule` and (unless ``scores`` is given and
            not ``iterative``) a :class:`~lit_info.callbacks.SampleInformation` callback.
        fractions: Fractions of the training split to remove, each in ``[0, 1)``; with
            ``iterative`` only the largest counts (the rounds stop there).
        orders: Any of ``least``, ``most``, ``random``.
        score: ``fsi`` or ``si``.
        out: Output folder (``summarization.csv``, ``runs/``, ``scores/``).
        iterative: Remove ``step`` of the remaining data per round, rescoring every round.
        step: Fraction of the remaining data removed per round (default
            :data:`DEFAULT_STEP`); only with ``iterative``.
        scores: A CSV of precomputed scores (``index`` + ``score`` columns) of the full
            training split; skips the scoring fit (with ``iterative``: the first one).
        seeds: ``seed_everything`` of the retraining runs (default: the config's seed); the
            scores are computed with the first one (iterative: per seed).
        cli_args: Extra ``lit_info.cli`` arguments for every run (after ``--config``).
        score_cli_args: Extra arguments for the scoring runs only (after ``cli_args``); when
            given, scoring runs are separate fits, e.g. ``["--trainer.max_epochs=0"]`` scores
            the untrained network.
        verbose: Keep Lightning's logs, progress bars and model summaries.
        log: Progress sink (default: print to stderr).
        emit: Called with every result row as soon as it exists (default: print its line).

    Returns:
        The rows, in the order of the CSV.

    Raises:
        SummarizationError: On bad input (the message names it), before anything is written.
        FileNotFoundError: If ``config`` or ``scores`` does not exist.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    emit = emit or (lambda row: print(row.line(), flush=True))
    plan, base_scores, step = _validate(
        config,
        fractions,
        orders,
        score,
        out,
        iterative,
        step,
        scores,
        seeds,
        cli_args,
        score_cli_args,
        verbose,
    )
    if (plan.out / "summarization.csv").exists() or (plan.out / "runs").is_dir():
        raise SummarizationError(
            f"--out {plan.out} already holds a summarization (summarization.csv or runs/); "
            "choose another --out so the earlier results are kept"
        )
    orders = list(dict.fromkeys(orders))
    max_fraction = max(fractions)
    separate = bool(plan.score_cli_args)
    rows: list[SummarizationRow] = []
    n_informed = sum(o != "random" for o in orders)

    if iterative:
        sizes = _iterative_rounds(plan.n, step, max_fraction)
        # the first round (full training set) is shared: score it if any order needs scores
        score_first = base_scores is None and n_informed > 0 and len(sizes) > 1
        total = 1 + len(orders) * (len(sizes) - 1)
        if separate:
            total += int(score_first) + n_informed * max(len(sizes) - 2, 0)
        runner = _Runner(plan, len(plan.seeds) * total, log)
        for seed in plan.seeds:
            for order in orders:
                rows += _iterative(runner, order, seed, sizes, base_scores, score_first, emit)
    else:
        needs_scores = n_informed > 0 and base_scores is None
        first = plan.seeds[0]
        trainings = set()
        for fraction in fractions:
            count = removal_count(fraction, plan.n)
            for order in orders:
                trainings |= {(count, order if count else "", seed) for seed in plan.seeds}
        if needs_scores and not separate:
            trainings.add((0, "", first))
        runner = _Runner(plan, len(trainings) + int(needs_scores and separate), log)
        if needs_scores:
            base_scores = runner.scores(f"full_s{first}", np.zeros(0), first)
        for order in orders:
            for fraction in fractions:
                count = removal_count(fraction, plan.n)
                for seed in plan.seeds:
                    order_rank = ranking(
                        base_scores if order != "random" else np.zeros(plan.n), order, seed
                    )
                    name = "full" if count == 0 else f"{order}_f{fraction:.4f}"
                    acc = runner.train(f"{name}_s{seed}", order_rank[:count], seed)
                    row = SummarizationRow(order, count / plan.n, plan.n - count, acc, 0, seed)
                    rows.append(row)
                    emit(row)
    _write_csv(plan.out / "summarization.csv", rows)
    log(f"wrote {plan.out / 'summarization.csv'} ({len(rows)} rows)")
    return rows


def _iterative(
    runner: _Runner,
    order: str,
    seed: int,
    sizes: list[int],
    base_scores: np.ndarray | None,
    score_first: bool,
    emit: Callable[[SummarizationRow], None],
) -> list[SummarizationRow]:
    """The rounds of one order and seed: train, record, rescore, remove ``sizes`` apart."""
    plan = runner.plan
    remaining = np.arange(plan.n)
    rows = []
    for it, size in enumerate(sizes):
        last = it == len(sizes) - 1
        excluded = np.setdiff1d(np.arange(plan.n), remaining)
        name = f"{'full' if it == 0 else f'{order}_iter{it:02d}'}_s{seed}"
        scores = None
        if not last and order != "random":
            if it == 0 and base_scores is not None:
                scores = base_scores
            else:
                scores = runner.scores(name, excluded, seed)  # before train: may be one fit
        elif it == 0 and score_first:
            runner.scores(name, excluded, seed)  # the shared first round, scored once
        acc = runner.train(name, excluded, seed)
        row = SummarizationRow(order, 1 - size / plan.n, size, acc, it, seed)
        rows.append(row)
        emit(row)
        if last:
            break
        local = np.zeros(size) if scores is None else scores[remaining]
        rank = ranking(local, order, seed + 1_000_003 * it)
        remaining = np.sort(np.delete(remaining, rank[: size - sizes[it + 1]]))
    return rows


def _write_csv(path: Path, rows: list[SummarizationRow]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([fld.name for fld in fields(SummarizationRow)])
        for row in rows:
            values = list(astuple(row))
            values[1] = repr(round(row.fraction, 6))
            values[3] = repr(row.test_acc)
            writer.writerow(values)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ validation


def _validate(
    config: str | os.PathLike[str],
    fractions: Sequence[float],
    orders: Sequence[str],
    score: str,
    out: str | os.PathLike[str],
    iterative: bool,
    step: float | None,
    scores: str | os.PathLike[str] | None,
    seeds: Sequence[int] | None,
    cli_args: Sequence[str],
    score_cli_args: Sequence[str],
    verbose: bool,
) -> tuple[_Plan, np.ndarray | None, float]:
    """Check every input and read what the runs need; writes nothing."""
    if not fractions:
        raise SummarizationError("give at least one fraction (--fractions)")
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f < 1.0:
            raise SummarizationError(f"fractions must lie in [0, 1), got {f!r}")
    if len(set(fractions)) != len(fractions):
        raise SummarizationError(f"fractions must be distinct, got {list(fractions)}")
    if not orders:
        raise SummarizationError(f"give at least one order of {list(ORDERS)} (--order)")
    for order in orders:
        if order not in ORDERS:
            raise SummarizationError(f"order must be one of {list(ORDERS)}, got {order!r}")
    if score not in SCORES:
        raise SummarizationError(f"score must be one of {list(SCORES)}, got {score!r}")
    if step is not None and not iterative:
        raise SummarizationError("--step applies to the iterative variant only: add --iterative")
    step = DEFAULT_STEP if step is None else step
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0.0 < step < 1.0:
        raise SummarizationError(f"step must lie in (0, 1), got {step!r}")
    if seeds is not None:
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
            raise SummarizationError(f"seeds must be a non-empty list of integers, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise SummarizationError(f"seeds must be distinct, got {list(seeds)}")
    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f"config file not found: {str(config)!r}")
    if scores is not None and not Path(scores).is_file():
        raise FileNotFoundError(f"scores file not found: {str(scores)!r}")
    out_path = Path(out)
    if out_path.exists() and not out_path.is_dir():
        raise SummarizationError(f"--out {str(out_path)!r} exists and is not a folder")

    try:
        base = yaml.safe_load(config.read_text())
    except yaml.YAMLError as err:
        raise SummarizationError(f"config {config} is not valid YAML: {err}") from err
    if not isinstance(base, dict) or not isinstance(base.get("data"), dict):
        raise SummarizationError(f"config {config} has no 'data' section")
    init_args = base["data"].get("init_args") or {}
    if init_args.get("exclude_train_indices") is not None:
        raise SummarizationError(
            f"config {config} already sets data.init_args.exclude_train_indices; remove it "
            "(the runner sets it for every run)"
        )

    from lit_info.callbacks.sample_information import SampleInformation
    from lit_info.cli import main as cli_main

    with _quiet(not verbose), _own_argv():
        try:
            cli = cli_main(
                ["--config", str(config), "--trainer.logger=false", *cli_args], run=False
            )
        except SystemExit as err:  # jsonargparse reports config errors on stderr and exits
            raise SummarizationError(f"config {config} does not parse (see above)") from err
        dm = cli.datamodule
        dm.setup("fit")
    if not hasattr(dm, "train_split_size"):
        raise SummarizationError(
            f"config {config}: {type(dm).__name__} does not support exclude_train_indices "
            "(use lit_info.data.NoisyImageDataModule)"
        )
    n = int(dm.train_split_size)
    sui = [cb for cb in cli.trainer.callbacks if isinstance(cb, SampleInformation)]
    needs_sui = any(o != "random" for o in orders) and (scores is None or iterative)
    if needs_sui and not sui:
        raise SummarizationError(
            f"config {config} has no lit_info.callbacks.SampleInformation callback, needed to "
            "score the samples (add one to trainer.callbacks, or pass --scores CSV)"
        )
    if needs_sui and sui[0].max_train_samples is not None and n > sui[0].max_train_samples:
        raise SummarizationError(
            f"config {config}: the training split has {n} samples, more than the "
            f"SampleInformation max_train_samples={sui[0].max_train_samples}"
        )
    if needs_sui and len(sui) > 1:
        raise SummarizationError(f"config {config} has {len(sui)} SampleInformation callbacks")
    base_scores = read_scores(scores, score, n) if scores is not None else None
    seed_list = list(seeds) if seeds is not None else [int(cli.config.seed_everything)]
    plan = _Plan(
        config=config,
        base=base,
        n=n,
        seeds=seed_list,
        cli_args=list(cli_args),
        score_cli_args=list(score_cli_args),
        out=out_path,
        score=score,
        verbose=verbose,
    )
    return plan, base_scores, float(step)


# ------------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lit_info.summarization",
        description="Data summarization by smooth unique information: remove the least / most "
        "informative training samples, retrain, record the test accuracy.",
    )
    parser.add_argument("--config", required=True, help="lit_info.cli experiment config (YAML)")
    parser.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
        help="fractions of the training split to remove, in [0, 1) (iterative: the largest "
        "is where the rounds stop)",
    )
    parser.add_argument(
        "--order", nargs="+", default=["least"], help="least, most and/or random (default least)"
    )
    parser.add_argument("--score", default="fsi", help="fsi (default) or si")
    parser.add_argument("--iterative", action="store_true", help="rescore after every round")
    parser.add_argument(
        "--step",
        type=float,
        default=None,
        help=f"iterative: share of the remaining data removed per round (default {DEFAULT_STEP})",
    )
    parser.add_argument("--scores", default=None, help="CSV of precomputed scores (index, fsi/si)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="seeds of the runs (default: config's)"
    )
    parser.add_argument("--out", default="runs/summarization", help="output folder")
    parser.add_argument(
        "--cli-args",
        action="append",
        default=[],
        help="one extra lit_info.cli argument for every run, e.g. "
        "--cli-args=--trainer.max_epochs=5 (repeat for several)",
    )
    parser.add_argument(
        "--score-cli-args",
        action="append",
        default=[],
        help="one extra lit_info.cli argument for the scoring runs only, which then are "
        "separate fits, e.g. --score-cli-args=--trainer.max_epochs=0 (untrained network)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--verbose", action="store_true", help="keep Lightning's own output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1 on bad input).

    Set ``LIT_INFO_TRACEBACK=1`` to see the traceback of an input error.
    """
    args = _parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            print("lit_info.summarization: error: --threads must be >= 1", file=sys.stderr)
            return 1
        import torch

        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        run_summarization(
            args.config,
            args.fractions,
            args.order,
            score=args.score,
            out=args.out,
            iterative=args.iterative,
            step=args.step,
            scores=args.scores,
            seeds=args.seeds,
            cli_args=args.cli_args,
            score_cli_args=args.score_cli_args,
            verbose=args.verbose,
        )
    except (SummarizationError, FileNotFoundError, ValueError) as err:
        if os.environ.get("LIT_INFO_TRACEBACK"):
            raise
        print(f"lit_info.summarization: error: {err}", file=sys.stderr)
        return 1
    print(f"done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
