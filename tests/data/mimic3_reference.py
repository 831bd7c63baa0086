"""A brute-force re-computation of the MIMIC-III benchmark from the raw CSVs, for the tests.

Plain Python (``csv``, dicts, loops), written from the paper's rules independently of the
vectorized polars pipeline, so that the two can be compared row for row on the demo.
Returns each task's listfile lines per split and each episode's timeseries rows.
"""

from __future__ import annotations

import csv
import math
import random
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml

from lit_info.data.mimic3.tables import NA_STRINGS

NA = set(NA_STRINGS)  # pandas' default missing-value strings
EPS = 1e-6


def _rows(folder: Path, table: str):
    with open(folder / f"{table}.csv", newline="") as handle:
        yield from csv.DictReader(handle)


def _t(text: str) -> datetime | None:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S") if text else None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _clean(variable: str, value: str, unit: str, label: str, numeric_subject: bool):
    """(number or None, text) by the paper's rules; None number = rejected (cleaned vars)."""
    number = _float(value.strip())
    plain = re.match(r"^(\d+(\.\d*)?|\.\d+)$", value) is not None
    unit, label = unit.lower(), label.lower()
    if variable == "Capillary refill rate":
        if numeric_subject:
            return None
        return {"Normal <3 secs": 0.0, "Brisk": 0.0, "Abnormal >3 secs": 1.0, "Delayed": 1.0}.get(
            value
        )
    if variable in ("Systolic blood pressure", "Diastolic blood pressure"):
        if "/" in value and not numeric_subject:
            match = re.match(r"^(\d+)/(\d+)$", value)
            if match is None:
                return None
            return float(match.group(1 if variable.startswith("Systolic") else 2))
        return number
    if variable == "Fraction inspired oxygen":
        if number is None:
            return None
        return number if "torr" in unit else number / 100.0
    if variable in ("Oxygen saturation", "Glucose", "pH"):
        if not numeric_subject and not plain:
            return None
        if variable == "Oxygen saturation" and number is not None and number <= 1:
            return number * 100.0
        return number
    if variable == "Temperature":
        if number is None:
            return None
        return (number - 32) * 5.0 / 9 if number >= 79 else number
    if variable == "Weight":
        if number is None:
            return None
        ounces = "oz" in unit or "oz" in label
        if ounces:
            number = number / 16.0
        if ounces or "lb" in unit or "lb" in label:
            number = number * 0.453592
        return number
    if variable == "Height":
        if number is None:
            return None
        return float(round(number * 2.54)) if ("in" in unit or "in" in label) else number
    return "uncleaned"


def build_reference(mimic: Path, resources: Path) -> dict:
    """Listfile lines per task and split, and episode rows per (subject, episode file)."""
    patients = {int(r["SUBJECT_ID"]): r for r in _rows(mimic, "PATIENTS")}
    admissions = {int(r["HADM_ID"]): r for r in _rows(mimic, "ADMISSIONS")}
    candidates = []
    for r in _rows(mimic, "ICUSTAYS"):
        if not (r["FIRST_WARDID"] and r["FIRST_WARDID"] == r["LAST_WARDID"]):
            continue
        if not (r["FIRST_CAREUNIT"] and r["FIRST_CAREUNIT"] == r["LAST_CAREUNIT"]):
            continue
        hadm, subject = int(r["HADM_ID"]), int(r["SUBJECT_ID"])
        if (
            hadm not in admissions
            or int(admissions[hadm]["SUBJECT_ID"]) != subject
            or subject not in patients
        ):
            continue
        candidates.append(r)
    per_hadm = defaultdict(int)
    for r in candidates:
        per_hadm[int(r["HADM_ID"])] += 1
    stays = {}
    for r in candidates:
        hadm, subject = int(r["HADM_ID"]), int(r["SUBJECT_ID"])
        if per_hadm[hadm] != 1:
            continue
        intime, outtime = _t(r["INTIME"]), _t(r["OUTTIME"])
        age = (intime - _t(patients[subject]["DOB"])).total_seconds() / 3600.0 / 24.0 / 365.0
        if age < 0:
            age = 90
        if age < 18:
            continue
        admission = admissions[hadm]
        dod, death = _t(patients[subject]["DOD"]), _t(admission["DEATHTIME"])
        admit, disch = _t(admission["ADMITTIME"]), _t(admission["DISCHTIME"])
        mortality = any(x is not None and admit <= x <= disch for x in (dod, death))
        stays[int(r["ICUSTAY_ID"])] = dict(
            subject=subject,
            hadm=hadm,
            intime=intime,
            outtime=outtime,
            los=float(r["LOS"]),
            mortality=int(mortality),
            deathtime=death,
        )
    by_hadm = {s["hadm"]: (stay_id, s) for stay_id, s in stays.items()}
    subjects = {s["subject"] for s in stays.values()}

    codes = {r["ICD9_CODE"] for r in _rows(mimic, "D_ICD_DIAGNOSES")}
    definitions = yaml.safe_load(open(resources / "hcup_ccs_2015_definitions.yaml"))
    groups = sorted(g for g, d in definitions.items() if d["use_in_benchmark"])
    code_group = {c: g for g, d in definitions.items() for c in d["codes"]}
    diagnosed = set()
    pheno = defaultdict(set)
    for r in _rows(mimic, "DIAGNOSES_ICD"):
        if r["ICD9_CODE"] not in codes or int(r["HADM_ID"]) not in by_hadm:
            continue
        stay_id, stay = by_hadm[int(r["HADM_ID"])]
        if stay["subject"] != int(r["SUBJECT_ID"]):
            continue
        diagnosed.add(stay_id)
        if code_group.get(r["ICD9_CODE"]) in groups:
            pheno[stay_id].add(code_group[r["ICD9_CODE"]])

    variable_of, label_of = {}, {}
    for r in _rows(resources, "itemid_to_variable_map"):
        if r["STATUS"] == "ready" and r["LEVEL2"] and int(r["COUNT"] or 0) > 0:
            variable_of[int(r["ITEMID"])] = r["LEVEL2"]
            label_of[int(r["ITEMID"])] = r["MIMIC LABEL"]
    variables = sorted(set(variable_of.values()))

    events = defaultdict(list)  # subject -> validated events
    for table in ("CHARTEVENTS", "LABEVENTS", "OUTPUTEVENTS"):
        for r in _rows(mimic, table):
            subject = int(r["SUBJECT_ID"])
            if subject not in subjects or r["HADM_ID"] in NA or int(r["HADM_ID"]) not in by_hadm:
                continue
            stay_id, stay = by_hadm[int(r["HADM_ID"])]
            if stay["subject"] != subject:
                continue
            icu = r.get("ICUSTAY_ID", "")
            icu = stay_id if icu in NA else int(icu)
            if icu != stay_id:
                continue
            value = None if r["VALUE"] in NA else r["VALUE"]
            unit = "" if r["VALUEUOM"] in NA else r["VALUEUOM"]
            events[subject].append((_t(r["CHARTTIME"]), icu, int(r["ITEMID"]), value, unit))

    episodes = {}
    for subject, rows in events.items():
        numeric = all(v is None or _float(v.strip()) is not None for _, _, _, v, _ in rows)
        best = {}
        meta = set()
        for time, icu, item, value, unit in rows:
            if value is None or item not in variable_of:
                continue
            variable = variable_of[item]
            cleaned = _clean(variable, value, unit, label_of[item], numeric)
            if cleaned is None:
                continue
            if cleaned == "uncleaned" and numeric:
                key, text = (0, float(value.strip())), repr(float(value.strip()))
            elif cleaned == "uncleaned":
                key, text = (1, value), value
            else:
                key, text = (0, cleaned), repr(cleaned)
            meta.add((time, icu))
            if (time, variable) not in best or key >= best[(time, variable)][0]:
                best[(time, variable)] = (key, text)
        table = defaultdict(dict)
        for (time, variable), (_, text) in best.items():
            table[time][variable] = text
        subject_stays = sorted(
            (
                (s["intime"], s["outtime"], stay_id)
                for stay_id, s in stays.items()
                if s["subject"] == subject
            )
        )
        for index, (intime, outtime, stay_id) in enumerate(subject_stays, start=1):
            lines = []
            for time, icu in sorted(meta):
                if icu == stay_id or (outtime is not None and intime <= time <= outtime):
                    hours = (time - intime).total_seconds() / 60.0 / 60.0
                    lines.append((hours, [table[time].get(v, "") for v in variables]))
            if lines:
                lines.sort(key=lambda item: item[0])
                episodes[(subject, index)] = (stay_id, lines)

    test = {
        line.split(",")[0]
        for line in open(resources / "testset.csv")
        if line.strip().endswith(",1")
    }
    lists = {
        task: {"train": [], "test": []} for task in ("ihm", "decomp", "los", "pheno", "multitask")
    }
    for (subject, index), (stay_id, lines) in sorted(
        episodes.items(), key=lambda kv: (str(kv[0][0]), f"episode{kv[0][1]}_timeseries.csv")
    ):
        if stay_id not in diagnosed:
            continue
        split = "test" if str(subject) in test else "train"
        stay = stays[stay_id]
        name = f"{subject}_episode{index}_timeseries.csv"
        los = 24.0 * stay["los"]
        times = [h for h, _ in lines]
        lived = (
            1e18
            if stay["deathtime"] is None
            else (stay["deathtime"] - stay["intime"]).total_seconds() / 3600.0
        )
        inside = [t for t in times if -EPS < t < los + EPS]
        if los >= 48 - EPS and any(-EPS < t < 48 + EPS for t in times):
            lists["ihm"][split].append((name, stay["mortality"]))
        if not inside:
            continue
        for t in np.arange(0.0, min(los, lived) + EPS, 1.0):
            if t > 4 and t > inside[0]:
                y = 0 if stay["mortality"] == 0 else int(lived - t < 24)
                lists["decomp"][split].append((name, float(t), y))
        for t in np.arange(0.0, los + EPS, 1.0):
            if t > 4 and t > inside[0]:
                lists["los"][split].append((name, float(t), los - t))
        labels = [int(g in pheno[stay_id]) for g in groups]
        lists["pheno"][split].append((name, los, labels))
        lists["multitask"][split].append((name, los, stay, inside, labels, lived))
    return {"lists": lists, "episodes": episodes, "variables": variables, "groups": groups}


def listfile_lines(reference: dict, task: str, split: str) -> list[str]:
    """The reference listfile lines (header first) in the authors' order."""
    rows = list(reference["lists"][task][split])
    if task == "multitask":
        order = list(range(len(rows)))
        if split == "train":
            random.Random(49297).shuffle(order)
        else:
            order.sort(key=lambda i: rows[i][0])
        out = []
        for i in order:
            name, los, stay, inside, labels, lived = rows[i]
            mask = int(not (los < 48 - EPS or inside[0] > 48 + EPS))
            steps = [int(t + EPS) for t in np.arange(0.0, los + EPS, 1.0)]
            los_part = (
                ";".join(str(int(s > 4 and s > inside[0])) for s in steps)
                + ";"
                + ";".join(f"{los - s:.6f}" for s in steps)
            )
            steps = [int(t + EPS) for t in np.arange(0.0, min(los, lived) + EPS, 1.0)]
            dec = (
                ";".join(str(int(s > 4 and s > inside[0])) for s in steps)
                + ";"
                + ";".join(str(stay["mortality"] & int(lived - s < 24)) for s in steps)
            )
            out.append(
                f"{name},{los:.6f},{47 if mask else 0};{mask};{stay['mortality']},{los_part},"
                + ";".join(map(str, labels))
                + f",{dec}"
            )
        header = (
            "filename,length of stay,in-hospital mortality task (pos;mask;label),"
            "length of stay task (masks;labels),phenotyping task (labels),"
            "decompensation task (masks;labels)"
        )
        return [header, *out]
    if split == "train":
        random.Random(49297).shuffle(rows)
        if task == "pheno":
            rows.sort()
    else:
        rows.sort()
    if task == "ihm":
        return ["stay,y_true"] + [f"{x},{y:d}" for x, y in rows]
    if task == "decomp":
        return ["stay,period_length,y_true"] + [f"{x},{t:.6f},{y:d}" for x, t, y in rows]
    if task == "los":
        return ["stay,period_length,y_true"] + [f"{x},{t:.6f},{y:.6f}" for x, t, y in rows]
    header = "stay,period_length," + ",".join(reference["groups"])
    return [header] + [f"{x},{t:.6f}," + ",".join(map(str, y)) for x, t, y in rows]


def hours_text(hours: float) -> str:
    """The text of an hours value as written (Python repr)."""
    return repr(hours) if not math.isnan(hours) else ""
