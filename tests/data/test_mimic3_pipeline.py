"""The MIMIC-III benchmark build on the real demo (100 patients) and on damaged copies of it."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest

from lit_info.data.mimic3.pipeline import RESOURCES, STAGES, BuildOptions, build, resource_path
from lit_info.data.mimic3.tables import Mimic3InputError
from tests.data.mimic3_reference import build_reference, listfile_lines

SMALL_TABLES = ("PATIENTS", "ADMISSIONS", "ICUSTAYS", "DIAGNOSES_ICD", "D_ICD_DIAGNOSES")
EVENT_TABLES = ("CHARTEVENTS", "LABEVENTS", "OUTPUTEVENTS")
TASK_FOLDERS = {
    "ihm": "in-hospital-mortality",
    "decomp": "decompensation",
    "los": "length-of-stay",
    "pheno": "phenotyping",
    "multitask": "multitask",
}


@pytest.fixture(scope="module")
def demo(mimic3_demo: Path) -> Path:
    return mimic3_demo


@pytest.fixture(scope="module")
def built(mimic3_benchmark) -> tuple[Path, dict]:
    return mimic3_benchmark


@pytest.fixture(scope="module")
def reference(demo: Path) -> dict:
    return build_reference(demo, RESOURCES)


def small_copy(
    demo: Path, folder: Path, event_rows: int = 3000, gz: bool = False, lower: bool = False
) -> Path:
    """The demo's small tables and the first ``event_rows`` rows of each event table."""
    folder.mkdir(parents=True, exist_ok=True)
    for table in SMALL_TABLES + EVENT_TABLES:
        name = table.lower() if lower else table
        with open(demo / f"{table}.csv") as source:
            lines = (
                source.readlines()
                if table in SMALL_TABLES
                else list(islice(source, event_rows + 1))
            )
        if gz:
            with gzip.open(folder / f"{name}.csv.gz", "wt") as target:
                target.writelines(lines)
        else:
            (folder / f"{name}.csv").write_text("".join(lines))
    return folder


def test_cohort_and_event_validation_match_the_authors_counts(built):
    # the authors' pipeline (mimic3-benchmarks ea0314c) printed these on this demo
    _, report = built
    steps = report["cohort"]
    assert steps["all ICU stays"] == {"icu_stays": 136, "admissions": 129, "subjects": 100}
    assert steps["adults (age >= 18)"] == {"icu_stays": 114, "admissions": 114, "subjects": 89}
    assert report["event_validation"] == {
        "n_events": 747_793,
        "empty_hadm": 13_184,
        "no_hadm_in_stay": 86_481,
        "no_icustay": 45_336,
        "recovered": 45_336,
        "could_not_recover": 0,
        "icustay_missing_in_stays": 1_200,
    }
    assert report["episodes"]["episodes"] == 114
    assert report["split"]["subjects"] == {"train": 74, "test": 15}


def test_task_sizes_and_positives_match_the_authors(built):
    _, report = built
    expected = {
        "in-hospital-mortality": (46, 11, 12, 5),
        "decompensation": (8_989, 1_874, 332, 124),
        "length-of-stay": (9_042, 1_899, None, None),
        "phenotyping": (95, 18, None, None),
        "multitask": (95, 18, None, None),
    }
    for task, (train, test, train_pos, test_pos) in expected.items():
        entry = report["tasks"][task]
        assert (entry["train"]["samples"], entry["test"]["samples"]) == (train, test), task
        if train_pos is not None:
            assert (entry["train"]["positives"], entry["test"]["positives"]) == (
                train_pos,
                test_pos,
            )


@pytest.mark.parametrize("task", sorted(TASK_FOLDERS))
@pytest.mark.parametrize("split", ["train", "test"])
def test_listfiles_equal_a_brute_force_recomputation(built, reference, task, split):
    out, _ = built
    written = (out / TASK_FOLDERS[task] / split / "listfile.csv").read_text().splitlines()
    expected = listfile_lines(reference, task, split)
    assert len(written) == len(expected)
    assert written == expected


def test_episode_timeseries_equal_a_brute_force_recomputation(built, reference):
    out, _ = built
    episodes = reference["episodes"]
    files = sorted((out / "root").glob("*/*/episode*_timeseries.csv"))
    assert len(files) == len(episodes) == 114
    compared_values = 0
    for path in files:
        subject, index = (
            int(path.parent.name),
            int(path.name[len("episode") : -len("_timeseries.csv")]),
        )
        _, rows = episodes[(subject, index)]
        with open(path, newline="") as handle:
            lines = list(csv.reader(handle))
        assert lines[0] == ["Hours", *reference["variables"]]
        assert [float(line[0]) for line in lines[1:]] == [hours for hours, _ in rows]
        assert [line[1:] for line in lines[1:]] == [values for _, values in rows]
        compared_values += sum(value != "" for _, values in rows for value in values)
    assert compared_values > 90_000


def test_report_reconciles_every_table_and_is_readable(built):
    out, report = built
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["tables"] == report["tables"]
    for table, entry in report["tables"].items():
        assert entry["input_rows"] == entry["kept_rows"] + sum(entry["dropped"].values()), table
    assert report["tables"]["CHARTEVENTS"]["input_rows"] == 758_355
    assert report["tables"]["LABEVENTS"]["dropped"]["empty HADM_ID"] == 13_184
    text = (out / "report.txt").read_text()
    assert "in-hospital-mortality" in text and "dropped" in text and "peak memory" in text


def test_validation_split_follows_valset(built):
    out, _ = built
    validation = {
        line.split(",")[0]
        for line in resource_path("valset.csv").read_text().splitlines()
        if line.endswith(",1")
    }
    for task in TASK_FOLDERS.values():
        folder = out / task
        train = (folder / "train_listfile.csv").read_text().splitlines()
        val = (folder / "val_listfile.csv").read_text().splitlines()
        full = (folder / "train" / "listfile.csv").read_text().splitlines()
        assert train[0] == val[0] == full[0]
        assert sorted(train[1:] + val[1:]) == sorted(full[1:])
        assert val[1:] and all(line.split("_")[0] in validation for line in val[1:])
        assert not any(line.split("_")[0] in validation for line in train[1:])
        assert (folder / "test_listfile.csv").read_text() == (
            folder / "test" / "listfile.csv"
        ).read_text()


def test_rerun_skips_finished_stages_and_redoes_an_unfinished_one(demo, built, tmp_path):
    out, _ = built
    copy = tmp_path / "benchmark"
    shutil.copytree(out, copy)
    messages: list[str] = []
    build(demo, copy, log=messages.append, progress=False)
    assert all("skipped" in message for message in messages) and len(messages) == len(STAGES)
    # a killed tasks stage: its marker is absent and a listfile is half written
    (copy / ".stages" / "tasks.json").unlink()
    listfile = copy / "decompensation" / "train" / "listfile.csv"
    listfile.write_text("stay,period_length,y_true\n12345_episode1_timeseries.csv,5.0")
    messages.clear()
    build(demo, copy, log=messages.append, progress=False)
    assert sum("skipped" in message for message in messages) == len(STAGES) - 1
    assert listfile.read_text() == (out / "decompensation" / "train" / "listfile.csv").read_text()
    # one stage alone needs the earlier ones
    with pytest.raises(ValueError, match="--stage tasks needs stage subjects first"):
        build(demo, tmp_path / "fresh", stages=["tasks"], log=messages.append, progress=False)
    assert not (tmp_path / "fresh").exists()


def test_batching_and_bucketing_do_not_change_the_result(demo, built, tmp_path):
    out, _ = built
    small = tmp_path / "benchmark"
    options = BuildOptions(memory_limit_mb=256, workers=2)
    report = build(demo, small, options=options, log=lambda message: None, progress=False)
    events = json.loads((small / ".stages" / "events.json").read_text())["counts"]
    assert events["buckets"] > 1 and events["batch_rows"] < 758_355
    for task in TASK_FOLDERS.values():
        for split in ("train", "test"):
            assert (small / task / split / "listfile.csv").read_text() == (
                out / task / split / "listfile.csv"
            ).read_text()
    assert report["tables"] == json.loads((out / "report.json").read_text())["tables"]


def test_lower_case_gzip_tables_give_the_same_benchmark(demo, tmp_path):
    plain = small_copy(demo, tmp_path / "plain", event_rows=20_000)
    packed = small_copy(demo, tmp_path / "packed", event_rows=20_000, gz=True, lower=True)
    first = build(plain, tmp_path / "a", log=lambda message: None, progress=False)
    second = build(packed, tmp_path / "b", log=lambda message: None, progress=False)
    assert first["tables"] == second["tables"]
    assert first["tables"]["CHARTEVENTS"]["input_rows"] == 20_000
    for task in TASK_FOLDERS.values():
        assert (tmp_path / "a" / task / "test" / "listfile.csv").read_text() == (
            tmp_path / "b" / task / "test" / "listfile.csv"
        ).read_text()


def _corrupt(path: Path, row: int, column: str, text: str) -> None:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    rows[row][rows[0].index(column)] = text
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing table", "table LABEVENTS is missing"),
        ("missing column", "ICUSTAYS lacks the column(s) INTIME"),
        (
            "bad timestamp",
            "ADMISSIONS: column ADMITTIME, row 5: '2164-13-45 10:00:00' is not a timestamp",
        ),
        ("bad number", "CHARTEVENTS: column ITEMID, row 7: 'abc' is not an integer"),
        ("truncated gzip", "OUTPUTEVENTS: truncated or damaged gzip archive"),
    ],
)
def test_bad_input_is_one_clear_error_and_leaves_no_trusted_output(demo, tmp_path, damage, message):
    mimic = small_copy(demo, tmp_path / "mimic")
    if damage == "missing table":
        (mimic / "LABEVENTS.csv").unlink()
    elif damage == "missing column":
        text = (mimic / "ICUSTAYS.csv").read_text().replace('"INTIME"', '"IN_TIME"', 1)
        (mimic / "ICUSTAYS.csv").write_text(text)
    elif damage == "bad timestamp":
        _corrupt(mimic / "ADMISSIONS.csv", 5, "ADMITTIME", "2164-13-45 10:00:00")
    elif damage == "bad number":
        _corrupt(mimic / "CHARTEVENTS.csv", 7, "ITEMID", "abc")
        # the row must belong to a cohort stay for the check to reach it; use the first row's ids
        with open(mimic / "CHARTEVENTS.csv", newline="") as handle:
            rows = list(csv.reader(handle))
        header = rows[0]
        for column in ("SUBJECT_ID", "HADM_ID", "ICUSTAY_ID"):
            stays = list(csv.DictReader(open(mimic / "ICUSTAYS.csv")))
            rows[7][header.index(column)] = stays[0][column]
        with open(mimic / "CHARTEVENTS.csv", "w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    elif damage == "truncated gzip":
        data = gzip.compress((mimic / "OUTPUTEVENTS.csv").read_bytes())
        (mimic / "OUTPUTEVENTS.csv").unlink()
        (mimic / "OUTPUTEVENTS.csv.gz").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(Mimic3InputError) as caught:
        build(mimic, out, log=lambda message: None, progress=False)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    markers = sorted(p.stem for p in (out / ".stages").glob("*.json")) if out.exists() else []
    failed_stage = {"missing table": None, "missing column": None, "bad timestamp": "subjects"}.get(
        damage, "events"
    )
    if failed_stage is None:
        assert not out.exists()  # checked before anything is written
    else:
        assert failed_stage not in markers
        assert not (out / ".work" / "events.partial").exists()
        assert not any(out.glob("*/listfile.csv"))


def test_command_line_prints_one_line_for_bad_input_and_builds_the_demo(demo, tmp_path):
    command = [sys.executable, "-m", "lit_info.data.mimic3", "build", "--quiet"]
    bad = subprocess.run(
        [*command, "--mimic-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: --mimic-dir {tmp_path / 'nowhere'}: no such folder"
    ]
    mimic = small_copy(demo, tmp_path / "mimic", event_rows=5000)
    good = subprocess.run(
        [
            *command,
            "--mimic-dir",
            str(mimic),
            "--out",
            str(tmp_path / "out"),
            "--tasks",
            "in-hospital-mortality",
        ],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0, good.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(report["tasks"]) == ["in-hospital-mortality"]
    assert (tmp_path / "out" / "in-hospital-mortality" / "train_listfile.csv").exists()


def test_atomic_writes_leave_the_old_file_on_an_error(tmp_path):
    from lit_info.data.mimic3.files import atomic_path, write_text

    target = tmp_path / "listfile.csv"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["listfile.csv"]
    write_text(target, "new\n")
    assert target.read_text() == "new\n"
