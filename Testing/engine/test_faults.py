"""Issue 9: every bad input and machine fault a new user met, reproduced for real.

Two promises: nothing of the user's is lost or overwritten, and no bad input gives a result with
exit code 0. Full and read-only disks are real tmpfs mounts where this machine allows mounting (as
root); elsewhere those tests skip and the short-write tests (a writer that stops half-way, as
SimpleITK does on a full disk) still prove that verification catches the damage.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from spineai.cli import main
from spineai.errors import SpineAIError
from spineai.image import Volume, read_volume, write_volume
from spineai.output import OUTPUT_MARKER, atomic_write, clean_stale_temps, temp_prefix

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _cli(*argv) -> int:
    return main([str(a) for a in argv])


def _toy_table(path, n=40, seed=0, labels=("SD", "MET")):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = np.exp(rng.normal(size=(n, 4)) * 0.3)
    X[:, 0] += 1.2 * y
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["lesion_id", "a", "b", "c", "d", "diagnosis"])
        for i in range(n):
            w.writerow([f"L{i:03d}", *(f"{v:.6g}" for v in X[i]), labels[y[i]]])
    return path


@pytest.fixture(scope="module")
def bundle_zip(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    table = _toy_table(d / "t.csv")
    assert _cli("train", table, "--label-column", "diagnosis", "--model", "logreg", "--out", d / "m.zip",
                "--folds", "3", "--bootstrap", "20", "--quiet") == 0
    return d / "m.zip"


@pytest.fixture
def case_files(tmp_path, phantom):
    write_volume(phantom.image, tmp_path / "img.nii.gz")
    write_volume(phantom.lesion_mask, tmp_path / "lesion.nii.gz")
    return tmp_path / "img.nii.gz", tmp_path / "lesion.nii.gz"


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'not root'}); the short-write tests cover this")


@pytest.fixture
def mounts():
    made = []

    def mount(where: Path, options: str) -> Path:
        _mount_tmpfs(where, options)
        made.append(where)
        return where

    yield mount
    for where in reversed(made):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


# ==== data lost =================================================================================

def test_overwrite_never_deletes_files_spineai_did_not_write(tmp_path, bundle_zip, capsys, monkeypatch):
    table = _toy_table(tmp_path / "eval.csv", seed=3)
    report = tmp_path / "report"
    report.mkdir()
    (report / "notes.txt").write_text("my notes")
    assert _cli("evaluate", bundle_zip, table, "--label-column", "diagnosis", "--out", report, "--overwrite",
                "--bootstrap", "20") == 2
    assert "notes.txt" in capsys.readouterr().err and (report / "notes.txt").read_text() == "my notes"

    # --out . in a folder of the user's: refused, nothing emptied
    work = tmp_path / "work"
    work.mkdir()
    (work / "scan.nii.gz").write_bytes(b"precious")
    monkeypatch.chdir(work)
    assert _cli("evaluate", bundle_zip, table, "--label-column", "diagnosis", "--out", ".", "--overwrite",
                "--bootstrap", "20") == 2
    assert (work / "scan.nii.gz").read_bytes() == b"precious"
    assert sorted(p.name for p in work.iterdir()) == ["scan.nii.gz"]

    # a folder SpineAI wrote is replaced, and only its own files go
    fresh = tmp_path / "fresh"
    assert _cli("evaluate", bundle_zip, table, "--label-column", "diagnosis", "--out", fresh, "--bootstrap", "20") == 0
    listed = json.loads((fresh / OUTPUT_MARKER).read_text())["files"]
    assert "report.html" in listed and "metrics.json" in listed
    (fresh / "stale.png").write_bytes(b"x")  # added by the user after the run
    assert _cli("evaluate", bundle_zip, table, "--label-column", "diagnosis", "--out", fresh, "--overwrite",
                "--bootstrap", "20") == 2
    (fresh / "stale.png").unlink()
    assert _cli("evaluate", bundle_zip, table, "--label-column", "diagnosis", "--out", fresh, "--overwrite",
                "--bootstrap", "20") == 0

    # train to a folder: refused before any training
    assert _cli("train", table, "--label-column", "diagnosis", "--model", "logreg", "--out", report, "--overwrite",
                "--quiet") == 2
    assert (report / "notes.txt").read_text() == "my notes"


def test_full_disk_keeps_the_original_mask(tmp_path, mounts, phantom, capsys):
    """A real full disk: SimpleITK only prints 'wrote only ...'; the mask must not become 0 bytes."""
    disk = mounts(tmp_path / "disk", "size=64k")
    image = tmp_path / "img.nii.gz"
    write_volume(phantom.image, image)
    good = write_volume(phantom.lesion_mask, disk / "mask.nii.gz")
    before = good.read_bytes()
    with open(disk / "filler", "wb", buffering=0) as fh:  # fill the disk to the last byte
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError:
            pass
    seed = ",".join(str(int(v)) for v in phantom.image.ras_to_ijk(phantom.lesion_center_ras).round())
    code = _cli("segment", image, "--seed", seed, "--ijk", "--out", good, "--overwrite")
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "disk is full" in err or "does not read back" in err
    assert good.read_bytes() == before
    assert not [p for p in disk.iterdir() if p.name.startswith(".spineai-")]


def test_short_write_is_caught_for_every_kind_of_file(tmp_path, phantom, monkeypatch):
    """What SimpleITK does on a full disk, without a full disk: the writer stops half-way."""
    import SimpleITK as sitk

    good = write_volume(phantom.lesion_mask, tmp_path / "mask.nii.gz")
    before = good.read_bytes()
    real_write = sitk.WriteImage

    def short_write(image, name, *a, **k):
        real_write(image, name, *a, **k)
        data = Path(name).read_bytes()
        Path(name).write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(sitk, "WriteImage", short_write)
    with pytest.raises(SpineAIError, match="does not read back.*nothing was replaced"):
        write_volume(phantom.image, good, overwrite=True)
    assert good.read_bytes() == before
    monkeypatch.undo()

    def cut(text: str):
        return lambda tmp: tmp.write_text(text[:-3])  # stopped inside the last line

    csv_text = "id,a,b\n" + "".join(f"r{i},{i}.5,{i}.25\n" for i in range(20))
    for name, text in (("t.csv", csv_text), ("m.json", json.dumps({"a": list(range(50))})),
                       ("r.html", "<!doctype html><html><body>" + "x" * 100 + "</body></html>")):
        with pytest.raises(SpineAIError, match="does not read back"):
            atomic_write(tmp_path / name, cut(text))
        assert not (tmp_path / name).exists()
    with pytest.raises(SpineAIError, match="empty"):
        atomic_write(tmp_path / "e.csv", lambda tmp: None)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".spineai-")]


def test_read_only_disk_gives_one_line(tmp_path, mounts, case_files, capsys):
    disk = mounts(tmp_path / "ro", "ro,size=64k")
    image, mask = case_files
    code = _cli("features", image, mask, "--out", disk / "f.csv")
    err = capsys.readouterr().err
    assert code == 2 and "read-only" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_output_equal_to_an_input_is_refused_even_with_overwrite(tmp_path, case_files, bundle_zip):
    image, mask = case_files
    before = mask.read_bytes()
    with pytest.raises(SpineAIError, match="is the input"):
        from spineai.output import check_output_path
        check_output_path(mask, True, inputs=[image, mask])
    assert _cli("segment", image, "--seed", "1,1,1", "--ijk", "--out", image, "--overwrite") == 2
    link = tmp_path / "same-file.nii.gz"
    os.link(mask, link)  # another name for the same file
    assert _cli("features", image, mask, "--out", link, "--overwrite") == 2
    assert mask.read_bytes() == before
    table = _toy_table(tmp_path / "t.csv")
    text = table.read_text()
    assert _cli("predict", bundle_zip, table, "--out", table, "--overwrite") == 2
    assert table.read_text() == text


def _card_and_model(bundle_zip):
    from spineai.models.bundle import load_bundle

    b = load_bundle(bundle_zip)
    return dict(b.card), b.model


@pytest.mark.parametrize("bad_id", ["../../escaped", "/tmp/absolute", ".hidden", "a/b"])
def test_model_install_refuses_ids_that_are_paths(tmp_path, bundle_zip, monkeypatch, bad_id):
    from spineai.models.bundle import save_bundle
    from spineai.models.registry import install

    monkeypatch.setenv("SPINEAI_HOME", str(tmp_path / "home"))
    card, model = _card_and_model(bundle_zip)
    card["id"] = bad_id
    src = save_bundle(card, model, tmp_path / "evil.zip")
    with pytest.raises(SpineAIError, match="model id .* is not allowed"):
        install(str(src))
    folder = save_bundle(card, model, tmp_path / "evil-folder")
    with pytest.raises(SpineAIError, match="model id .* is not allowed"):
        install(str(folder))
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/absolute-1.0.0.zip").exists()
    models = tmp_path / "home" / "models"
    assert not [p for p in models.iterdir() if not p.name.startswith(".")] if models.exists() else True


def test_zip_bomb_refused_before_decompressing(tmp_path, monkeypatch):
    from spineai.models import bundle as bundle_mod

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", "{}")
        with zf.open("model.json", "w", force_zip64=True) as fh:
            block = b"\0" * (1 << 20)
            for _ in range(64):
                fh.write(block)
    assert bomb.stat().st_size < 1 << 20
    opened = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a) or 1 / 0)
    t0 = time.perf_counter()
    with pytest.raises(SpineAIError, match="zip bomb"):
        bundle_mod.load_bundle(bomb)
    assert not opened and time.perf_counter() - t0 < 2
    monkeypatch.setattr(bundle_mod, "MAX_BUNDLE_BYTES", 1 << 20)
    with pytest.raises(SpineAIError, match="too large for a model bundle"):
        bundle_mod.load_bundle(bomb)
    assert not opened


def test_edited_bundle_is_marked_unverified_beside_every_prediction(tmp_path, bundle_zip):
    from spineai.models.bundle import load_bundle, save_bundle
    from spineai.models.registry import BUNDLED_DIR, bundled_entries

    card, model = _card_and_model(bundle_zip)
    card["classes"] = list(reversed(card["classes"]))  # swapped classes, manifest recomputed on save
    edited = save_bundle(card, model, tmp_path / "edited.zip")
    b = load_bundle(edited)
    assert not b.verified
    table = _toy_table(tmp_path / "t.csv", n=6)
    assert _cli("predict", edited, table, "--out", tmp_path / "p.csv") == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv", encoding="utf-8")))
    assert len(rows) == 6 and all("UNVERIFIED MODEL" in r["warnings"] for r in rows)
    # a bundle the package's registry pins is verified, by path or by id
    entry = bundled_entries()[0]
    for ref in (entry["id"], str(BUNDLED_DIR / entry["url"])):
        assert load_bundle(ref).verified


def _cohort(tmp_path, phantom, n_cases):
    from spineai.phantom import LABELS

    write_volume(phantom.image, tmp_path / "img.nii.gz")
    write_volume(phantom.labels, tmp_path / "labels.nii.gz")
    write_volume(phantom.lesion_mask, tmp_path / "lesion.nii.gz")
    names = ["lesion"] + list(LABELS)[: n_cases - 1]
    with open(tmp_path / "cases.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "image", "mask", "label"])
        for n in names:
            w.writerow([n, "img.nii.gz", "lesion.nii.gz" if n == "lesion" else "labels.nii.gz",
                        "" if n == "lesion" else LABELS[n]])
    return tmp_path / "cases.csv", names


def test_cohort_survives_kill_9_and_resumes_without_duplicates(tmp_path, phantom):
    from spineai.cohort import progress_path

    manifest, names = _cohort(tmp_path, phantom, 6)
    out = tmp_path / "features.csv"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "spineai.cli", "cohort", str(manifest), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = progress_path(out)
    done = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(str(db), timeout=1) as con:
                    done = con.execute("SELECT count(*) FROM cases").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= 2:
                break
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert done >= 2 and not out.exists()

    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"resuming: {done} of {len(names)} cases" in r.stdout
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert [row["id"] for row in rows] == names
    assert not db.exists()
    from spineai.radiomics import extract_features

    single = extract_features(phantom.image, phantom.lesion_mask)
    assert [float(rows[0][k]) for k in single.values] == list(single.values.values())


def test_two_cohort_runs_on_one_output_are_refused(tmp_path, phantom, capsys):
    from spineai.cohort import output_lock

    manifest, _ = _cohort(tmp_path, phantom, 2)
    out = tmp_path / "f.csv"
    with output_lock(out):
        assert _cli("cohort", manifest, "--out", out) == 2
    assert "another spineai run is writing" in capsys.readouterr().err
    assert _cli("cohort", manifest, "--out", out) == 0


def test_an_output_that_appears_during_the_write_is_not_replaced(tmp_path, case_files, monkeypatch, capsys):
    """Two `features` runs on one --out: the one that finishes second must fail, not replace."""
    from spineai import radiomics

    image, mask = case_files
    out = tmp_path / "f.csv"
    real = radiomics.atomic_write

    def other_run_finishes_first(path, write, *a, **k):
        def write_then_other(tmp):
            write(tmp)
            out.write_text("id,x\nother,1\n")  # the concurrent run's result lands now
        return real(path, write_then_other, *a, **k)

    monkeypatch.setattr(radiomics, "atomic_write", other_run_finishes_first)
    assert _cli("features", image, mask, "--out", out) == 2
    assert "created by someone else" in capsys.readouterr().err
    assert out.read_text() == "id,x\nother,1\n"


def test_temporaries_of_a_killed_run_are_cleaned_on_the_next(tmp_path):
    code = ("import sys, time; from pathlib import Path; from spineai.output import atomic_write\n"
            "def w(tmp):\n    tmp.write_text('half'); print('writing', flush=True); time.sleep(60)\n"
            "atomic_write(Path(sys.argv[1]), w)\n")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "out.csv")], env=env, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".spineai-")]
    assert len(left) == 1
    live = tmp_path / f"{temp_prefix()}live.csv"  # this process's: still in use
    live.write_text("x")
    atomic_write(tmp_path / "next.csv", lambda tmp: tmp.write_text("a,b\n1,2\n"))
    remaining = sorted(p.name for p in tmp_path.iterdir())
    assert left[0].name not in remaining and live.name in remaining and "next.csv" in remaining
    assert clean_stale_temps(tmp_path) == []


def test_outputs_follow_the_users_umask(tmp_path, phantom, bundle_zip):
    old = os.umask(0o027)
    try:
        mask = write_volume(phantom.lesion_mask, tmp_path / "m.nii.gz")
        table = _toy_table(tmp_path / "t.csv", seed=3)
        assert _cli("evaluate", bundle_zip, table, "--label-column", "diagnosis", "--out", tmp_path / "rep",
                    "--bootstrap", "20") == 0
    finally:
        os.umask(old)
    assert mask.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "rep").stat().st_mode & 0o777 == 0o750
    assert {(p.stat().st_mode & 0o777) for p in (tmp_path / "rep").iterdir()} == {0o640}
