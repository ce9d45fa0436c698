"""`spineai cohort` with its database: steps, resume, failures, export, annotation, a real kill -9,
and the same run on a Dask cluster."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spineai.cli import main
from spineai.cohort import CohortDB, read_manifest
from spineai.cohort.synthetic import write_synthetic_cohort
from spineai.errors import SpineAIError
from spineai.image import read_volume, seed_to_index
from spineai.radiomics import extract_features
from spineai.segment import segment

SRC = str(Path(__file__).resolve().parents[2] / "src")
STEPS = "segment,features,classify"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_cohort(tmp_path_factory.mktemp("cohort") / "c", 6, seed=3)


@pytest.fixture
def cohort(synthetic, tmp_path):
    shutil.copytree(synthetic.parent, tmp_path / "c")
    return tmp_path / "c" / "manifest.csv"


def _rows(path):
    return list(csv.DictReader(open(path, encoding="utf-8")))


def _q(db, sql, *args):
    with sqlite3.connect(str(db)) as con:
        return con.execute(sql, args).fetchall()


def test_steps_results_versions_and_timings_go_to_the_database(cohort, tmp_path, capsys):
    db, out = tmp_path / "r.sqlite", tmp_path / "r.csv"
    assert main(["cohort", str(cohort), "--steps", STEPS, "--db", str(db), "--out", str(out), "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "DEMONSTRATION model" in err and "ETA" in err
    cases = read_manifest(cohort)
    seeded = [c.id for c in cases if c.mask is None]
    assert _q(db, "SELECT count(*) FROM cases") == [(6,)]
    assert sorted(r[0] for r in _q(db, "SELECT case_id FROM steps WHERE step='segment' AND status='done'")) == seeded
    assert _q(db, "SELECT count(*) FROM steps WHERE status='done' AND seconds > 0 AND engine_version='0.1.0'") == \
        [(len(seeded) + 12,)]
    assert _q(db, "SELECT DISTINCT model_id, model_version, demonstration FROM predictions") == \
        [("spineai-demo-phantom", "1.0.0", 1)]
    assert _q(db, "SELECT executor, workers, cases_done, cases_failed FROM runs") == [("processes", 2, 6, 0)]
    # the stored values are those of the engine called directly, for a given mask and for a seed
    given, grown = next(c for c in cases if c.mask is not None), next(c for c in cases if c.mask is None)
    image = read_volume(given.image)
    direct = extract_features(image, read_volume(given.mask)).values
    with CohortDB(db) as d:
        assert d.features(given.id)["values"] == direct
        image = read_volume(grown.image)
        mask = segment(image, seed_to_index(image, grown.seed, "ras"))
        assert np.array_equal(d.mask(grown.id), mask.array)
        assert d.features(grown.id)["values"] == extract_features(image, mask).values
        assert d.case_row(grown.id)["annotation_status"] == "segmented"
    rows = _rows(out)
    assert [r["id"] for r in rows] == [c.id for c in cases]
    assert rows[0]["patient_id"] == "P000" and rows[0]["diagnosis"] == "SD" and "crp" in rows[0]
    assert float(rows[1]["glcm_Contrast"]) == direct["glcm_Contrast"]
    assert rows[0]["model"] == "spineai-demo-phantom 1.0.0 (DEMONSTRATION)"
    assert abs(sum(float(rows[0][f"p_{k}"]) for k in ("SD", "MET", "STB")) - 1) < 1e-9


def test_a_failing_case_is_recorded_and_the_others_go_on(cohort, tmp_path, capsys):
    with open(cohort, "a") as fh:
        fh.write("ghost,P9,missing.nii.gz,,1 2 3,SD,50,10\n")
    db, out = tmp_path / "r.sqlite", tmp_path / "r.csv"
    args = ["cohort", str(cohort), "--steps", "segment,features", "--db", str(db), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "failed ghost: " in err and "1 case(s) failed (first: case ghost" in err and not out.exists()
    assert _q(db, "SELECT case_id, step FROM errors") == [("ghost", "segment")]
    assert "missing.nii.gz" in _q(db, "SELECT message FROM errors")[0][0]
    assert _q(db, "SELECT count(*) FROM steps WHERE status='done' AND step='features'") == [(6,)]
    assert main(args + ["--skip-failures"]) == 0  # the rerun retries only the failed case
    assert "resuming: 6 of 7 cases" in capsys.readouterr().out
    assert [r["id"] for r in _rows(out)] == [f"case{n:03d}" for n in range(6)]
    assert _q(db, "SELECT count(*) FROM errors") == [(2,)]
    assert _q(db, "SELECT DISTINCT run_id FROM steps WHERE case_id != 'ghost'") == [(1,)]


def test_rerun_computes_only_what_changed(cohort, tmp_path, capsys):
    db = tmp_path / "r.sqlite"
    args = ["cohort", str(cohort), "--steps", "segment,features", "--db", str(db), "--workers", "1"]
    assert main(args) == 0
    assert main(args) == 0
    assert "0 cases computed in this process" in capsys.readouterr().out
    mask = cohort.parent / "case001_mask.nii.gz"
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10 ** 9))  # the user replaced a mask
    assert main(args) == 0
    assert _q(db, "SELECT case_id, step FROM steps WHERE run_id = 3") == [("case001", "features")]
    assert main(["cohort", str(cohort), "--steps", "features,classify", "--db", str(db)]) == 0
    assert _q(db, "SELECT count(*), max(run_id) FROM steps WHERE step='classify'") == [(6, 4)]
    assert _q(db, "SELECT count(*) FROM steps WHERE step='features' AND run_id = 4") == [(0,)]  # read, not redone


def test_parquet_export_or_a_clear_message_without_pyarrow(cohort, tmp_path, monkeypatch, capsys):
    db = tmp_path / "r.sqlite"
    assert main(["cohort", str(cohort), "--db", str(db), "--steps", "segment,features", "--workers", "1"]) == 0
    out = tmp_path / "r.parquet"
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    if pq is not None:
        assert main(["cohort", str(cohort), "--db", str(db), "--steps", "segment,features", "--out", str(out)]) == 0
        table = pq.read_table(out).to_pylist()
        assert [r["id"] for r in table] == [f"case{n:03d}" for n in range(6)]
        assert table[1]["glcm_Contrast"] == float(_rows_csv(cohort, db, tmp_path)[1]["glcm_Contrast"])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(["cohort", str(cohort), "--db", str(db), "--steps", "segment,features", "--out",
                 str(tmp_path / "x.parquet")]) == 2
    assert "Parquet export needs pyarrow, which is not installed" in capsys.readouterr().err
    assert main(["cohort", str(cohort), "--db", str(db), "--out", str(tmp_path / "x.xlsx")]) == 2
    assert "must end in .csv or .parquet" in capsys.readouterr().err


def _rows_csv(cohort, db, tmp_path):
    out = tmp_path / "again.csv"
    assert main(["cohort", str(cohort), "--db", str(db), "--steps", "segment,features", "--out", str(out)]) == 0
    return _rows(out)


def test_annotation_status_reviewer_label_and_a_reviewed_mask(cohort, tmp_path, capsys):
    db = tmp_path / "r.sqlite"
    assert main(["cohort", str(cohort), "--db", str(db), "--steps", "segment,features", "--workers", "1"]) == 0
    with CohortDB(db) as d:
        assert d.annotation_counts() == {"to do": 3, "segmented": 3, "reviewed": 0}  # mask files count as to do
        assert d.next_to_annotate() == "case000"
        assert d.next_to_annotate(after="case000") == "case001"
        with pytest.raises(SpineAIError, match="needs the reviewer's name"):
            d.save_annotation("case000", label="MET")
        with pytest.raises(SpineAIError, match="no case 'nobody'"):
            d.save_annotation("nobody", label="MET", reviewer="A. Reader")
        with pytest.raises(SpineAIError, match="is empty"):
            d.save_annotation("case000", mask=np.zeros((2, 2, 2)), reviewer="A. Reader")
        corrected = d.mask("case000").copy()
        k = np.flatnonzero(corrected.any((1, 2)))[0]
        corrected[k] = 0  # the reviewer removes the lesion's first slice
        d.save_annotation("case000", mask=corrected, label="MET", reviewer="A. Reader")
        assert d.next_to_annotate(after="case005") == "case001"
        row = d.case_row("case000")
        assert (row["annotation_status"], row["reviewer"], row["annotation_label"]) == ("reviewed", "A. Reader", "MET")
    capsys.readouterr()
    out = tmp_path / "r.csv"
    assert main(["cohort", str(cohort), "--db", str(db), "--steps", "segment,features", "--out", str(out)]) == 0
    assert _q(db, "SELECT case_id, step FROM steps WHERE run_id = 2") == [("case000", "features")]
    image = read_volume(cohort.parent / "case000_img.nii.gz")
    from spineai.image import Volume

    expected = extract_features(image, Volume(corrected, image.spacing, image.origin, image.direction)).values
    rows = _rows(out)
    assert float(rows[0]["glcm_Contrast"]) == expected["glcm_Contrast"]
    assert (rows[0]["annotation_status"], rows[0]["reviewer"], rows[0]["annotation_label"]) == \
        ("reviewed", "A. Reader", "MET")


def _repeated_manifest(cohort, n_cases):
    """n_cases cases over the six images (new ids), so a run lasts seconds without generating more."""
    base = _rows(cohort)
    path = cohort.parent / "big.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(base[0]))
        w.writeheader()
        for n in range(n_cases):
            w.writerow({**base[n % len(base)], "id": f"k{n:03d}", "patient_id": f"Q{n}"})
    return path


def _processes_running(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_kill_9_mid_run_then_rerun_does_every_case_exactly_once(cohort, tmp_path):
    manifest = _repeated_manifest(cohort, 36)
    db, out = tmp_path / "r.sqlite", tmp_path / "r.csv"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "spineai.cli", "cohort", str(manifest), "--steps", "segment,features",
           "--db", str(db), "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done, deadline = 0, time.time() + 120
    while time.time() < deadline and proc.poll() is None and done < 4:
        if db.exists():
            try:
                done = _q(db, "SELECT count(*) FROM steps WHERE step='features' AND status='done'")[0][0]
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = dict(_q(db, "SELECT case_id, finished_at FROM steps WHERE step='features' AND status='done'"))
    assert 4 <= len(first) < 36
    if sys.platform.startswith("linux"):  # its worker processes die with it (PR_SET_PDEATHSIG)
        deadline = time.time() + 10
        while _processes_running(str(manifest)) and time.time() < deadline:
            time.sleep(0.1)
        assert not _processes_running(str(manifest))
    r = subprocess.run(cmd + ["--out", str(out)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"resuming: {len(first)} of 36 cases" in r.stdout
    ids = [f"k{n:03d}" for n in range(36)]
    assert [row["id"] for row in _rows(out)] == ids
    assert sorted(r[0] for r in _q(db, "SELECT case_id FROM features")) == ids
    steps = _q(db, "SELECT case_id, step, run_id, finished_at FROM steps WHERE status='done'")
    seeded = {r["id"] for r in _rows(manifest) if not r["mask"]}
    assert len(steps) == 36 + len(seeded)  # one row per case and step: nothing duplicated, nothing lost
    for cid, step, run_id, at in steps:  # a case finished before the kill was not computed again
        if step == "features":
            assert (run_id == 1) == (cid in first) and (cid not in first or first[cid] == at)
    assert _q(db, "SELECT count(*) FROM errors") == [(0,)]
    # and the values equal a run that was never interrupted
    clean = tmp_path / "clean.csv"
    assert main(["cohort", str(manifest), "--steps", "segment,features", "--out", str(clean), "--workers", "1"]) == 0
    assert _rows(clean) == _rows(out)


def test_dask_cluster_gives_the_local_run_s_results(cohort, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed", reason="--dask needs dask[distributed] (the 'dask' extra)")
    local, remote = tmp_path / "local.csv", tmp_path / "dask.csv"
    base = ["cohort", str(cohort), "--steps", STEPS]
    assert main(base + ["--db", str(tmp_path / "l.sqlite"), "--out", str(local), "--workers", "2"]) == 0
    monkeypatch.setenv("PYTHONPATH", SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))  # workers import this engine
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        assert main(base + ["--db", str(tmp_path / "d.sqlite"), "--out", str(remote), "--dask",
                            cluster.scheduler_address]) == 0
    assert _rows(remote) == _rows(local)
    assert _q(tmp_path / "d.sqlite", "SELECT executor, workers FROM runs") == \
        [(f"dask {cluster.scheduler_address}", 2)]
    with CohortDB(tmp_path / "d.sqlite") as d, CohortDB(tmp_path / "l.sqlite") as l_:
        for cid in l_.case_ids():
            assert np.array_equal(d.mask(cid), l_.mask(cid)) if l_.mask(cid) is not None else d.mask(cid) is None


def test_ctrl_c_keeps_the_finished_cases_and_the_rerun_resumes(cohort, tmp_path):
    manifest = _repeated_manifest(cohort, 24)
    db = tmp_path / "r.sqlite"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "spineai.cli", "cohort", str(manifest), "--steps", "segment,features",
           "--db", str(db), "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done, deadline = 0, time.time() + 120
    while time.time() < deadline and proc.poll() is None and done < 2:
        try:
            done = _q(db, "SELECT count(*) FROM steps WHERE step='features' AND status='done'")[0][0] if db.exists() else 0
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "spineai cohort: interrupted" in err
    kept = _q(db, "SELECT count(*) FROM steps WHERE step='features' AND status='done'")[0][0]
    assert kept >= 2 and _q(db, "SELECT cases_done FROM runs") == [(kept,)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"resuming: {kept} of 24 cases" in r.stdout
    assert _q(db, "SELECT count(*), count(DISTINCT case_id) FROM steps WHERE step='features'") == [(24, 24)]


def test_cohort_needs_a_database_or_an_output(cohort, capsys):
    assert main(["cohort", str(cohort)]) == 2
    assert "give --db RESULTS.sqlite" in capsys.readouterr().err
    assert main(["cohort", str(cohort), "--db", "x.sqlite", "--steps", "segment,grade"]) == 2
    assert "unknown step(s) grade: choose from segment, features, classify" in capsys.readouterr().err


def test_another_programs_sqlite_database_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "hospital.sqlite"
    with sqlite3.connect(str(path)) as con:
        con.execute("CREATE TABLE patients (id TEXT)")
    before = path.read_bytes()
    with pytest.raises(SpineAIError, match="is an SQLite database but not a SpineAI cohort database"):
        CohortDB(path)
    assert path.read_bytes() == before
    assert _q(path, "SELECT name FROM sqlite_master WHERE type = 'table'") == [("patients",)]


def test_a_run_counts_each_case_in_the_cases_own_transaction(tmp_path):
    # Ctrl-C between a case's commit and the runner's own tally once left cases_done one short
    # (4 cases stored, 3 counted): the count is now part of the case's transaction.
    with CohortDB(tmp_path / "c.sqlite") as db:
        run = db.start_run(steps=("segment",), executor="inline", workers=1)
        for cid, status in (("a", "done"), ("b", "failed"), ("c", "done")):
            step = {"step": "segment", "status": status, "key": "k", "seconds": 0.1, "error": "bad seed"}
            db.record({"id": cid, "steps": [step]}, run)
        assert _q(tmp_path / "c.sqlite", "SELECT cases_done, cases_failed, finished FROM runs") == [(2, 1, None)]
        db.finish_run(run, 1.5)
    assert _q(tmp_path / "c.sqlite", "SELECT cases_done, cases_failed, seconds FROM runs") == [(2, 1, 1.5)]
