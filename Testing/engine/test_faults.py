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
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16 + b"\0\0\0\0IEND\xaeB`\x82"
HTML = b"<!doctype html><html><body>report</body></html>"


def _cli(*argv) -> int:
    return main([str(a) for a in argv])


def _reference():
    from spineai.models.bundle import load_bundle

    return load_bundle("sdmet31-reference")  # shipped with the package: no training in these tests


def _toy_table(path, n=40, seed=0, labels=("SD", "MET")):
    """A table with the reference model's 31 feature columns, near its training medians."""
    ref = _reference()
    rng = np.random.default_rng(seed)
    med = np.asarray(ref.card["features"]["training_median"], float)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["lesion_id", *ref.feature_names, "diagnosis"])
        for i in range(n):
            x = med * np.exp(rng.normal(size=med.size) * 0.2) * (1.3 if i % 2 else 1.0)
            w.writerow([f"L{i:03d}", *(f"{v:.6g}" for v in x), labels[i % 2]])
    return path


@pytest.fixture(scope="module")
def bundle_zip(tmp_path_factory):
    from spineai.models.registry import resolve

    path, _ = resolve("sdmet31-reference")
    copy = tmp_path_factory.mktemp("bundle") / "m.zip"
    copy.write_bytes(Path(path).read_bytes())
    return copy


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

    # a folder SpineAI wrote is replaced, and only its own files go (the writer evaluate and study use)
    from spineai.output import write_output_folder

    def report_v(n):
        def write(folder):
            for name in [f"plot{n}.png", "report.html"][: 2 if n == 1 else 1] + ["metrics.json"]:
                (folder / name).write_bytes(PNG if name.endswith(".png") else
                                            HTML if name.endswith(".html") else b"{}")
        return write

    fresh = write_output_folder(tmp_path / "fresh", report_v(1))
    assert json.loads((fresh / OUTPUT_MARKER).read_text())["files"] == ["metrics.json", "plot1.png", "report.html"]
    (fresh / "mine.txt").write_text("added by the user after the run")
    with pytest.raises(SpineAIError, match=r"holds files SpineAI did not write \(mine.txt\)"):
        write_output_folder(fresh, report_v(2), overwrite=True)
    (fresh / "mine.txt").unlink()
    write_output_folder(fresh, report_v(2), overwrite=True)
    assert sorted(p.name for p in fresh.iterdir()) == [OUTPUT_MARKER, "metrics.json", "plot2.png"]

    # train to a folder: refused before any training
    assert _cli("train", table, "--label-column", "diagnosis", "--model", "logreg", "--out", report, "--overwrite",
                "--quiet") == 2
    assert (report / "notes.txt").read_text() == "my notes"


def test_full_disk_keeps_the_original_mask(tmp_path, mounts, phantom, capsys):
    """A real full disk: SimpleITK only prints 'wrote only ...'; the mask must not become 0 bytes."""
    disk = mounts(tmp_path / "disk", "size=64k")
    good = write_volume(phantom.lesion_mask, disk / "mask.nii.gz")
    before = good.read_bytes()
    with open(disk / "filler", "wb", buffering=0) as fh:  # fill the disk to the last byte
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError:
            pass
    with pytest.raises(SpineAIError, match="(disk is full|does not read back).*nothing was replaced"):
        write_volume(phantom.image, good, overwrite=True)  # what `segment --overwrite` calls
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
            for _ in range(16):
                fh.write(block)
    assert bomb.stat().st_size < 1 << 20
    opened = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a) or 1 / 0)
    t0 = time.perf_counter()
    with pytest.raises(SpineAIError, match="zip bomb"):
        bundle_mod.load_bundle(bomb)
    assert not opened and time.perf_counter() - t0 < 2
    monkeypatch.setattr("spineai.bundlefile.MAX_BUNDLE_BYTES", 1 << 20)
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
    # Beyond the lesion and the five vertebrae, the vertebrae again under new ids: enough cases that
    # a run takes seconds, however fast one extraction is.
    levels = list(LABELS)
    names = ["lesion"] + [levels[n % len(levels)] + ("" if n < len(levels) else f"-{n // len(levels)}")
                          for n in range(n_cases - 1)]
    with open(tmp_path / "cases.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "image", "mask", "label"])
        for n in names:
            w.writerow([n, "img.nii.gz", "lesion.nii.gz" if n == "lesion" else "labels.nii.gz",
                        "" if n == "lesion" else LABELS[n.split("-")[0]]])
    return tmp_path / "cases.csv", names


def test_cohort_survives_kill_9_and_resumes_without_duplicates(tmp_path, phantom):
    from spineai.cohort import progress_path

    manifest, names = _cohort(tmp_path, phantom, 40)
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
                    done = con.execute("SELECT count(*) FROM steps WHERE status = 'done'").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= 1:
                break
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert done >= 1 and not out.exists()

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
    from spineai.models.bundle import save_bundle
    from spineai.output import write_output_folder

    card, model = _card_and_model(bundle_zip)
    old = os.umask(0o027)
    try:
        mask = write_volume(phantom.lesion_mask, tmp_path / "m.nii.gz")
        bundle = save_bundle(card, model, tmp_path / "b.zip")
        folder = write_output_folder(tmp_path / "rep", lambda d: (d / "report.html").write_bytes(HTML))
    finally:
        os.umask(old)
    assert mask.stat().st_mode & 0o777 == 0o640 and bundle.stat().st_mode & 0o777 == 0o640
    assert folder.stat().st_mode & 0o777 == 0o750
    assert {(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {0o640}


# ==== wrong results with exit code 0 ============================================================

@pytest.mark.parametrize("keep", [200, 0.5])
def test_truncated_nifti_is_refused(tmp_path, case_files, keep, capsys):
    image, mask = case_files
    data = image.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(SpineAIError, match="truncated or corrupt"):
        read_volume(cut)
    assert _cli("features", cut, mask, "--out", tmp_path / "f.csv") == 2
    assert "truncated or corrupt" in capsys.readouterr().err and not (tmp_path / "f.csv").exists()
    # an uncompressed .nii cut short as well
    raw = tmp_path / "img.nii"
    raw.write_bytes(gzip.decompress(data)[:-1000])
    with pytest.raises(SpineAIError, match="truncated or corrupt"):
        read_volume(raw)


def _nifti(path, array):
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def test_nan_and_inf_voxels_in_nifti_are_found_in_the_raw_data(tmp_path):
    arr = np.random.default_rng(0).normal(100, 10, (12, 11, 10)).astype(np.float32)
    arr[3, 4, 5] = np.nan
    arr[6, 1, 2] = np.inf
    path = _nifti(tmp_path / "nan.nii.gz", arr)
    import SimpleITK as sitk

    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()  # what SimpleITK hides
    with pytest.raises(SpineAIError, match=r"2 NaN or infinite voxel\(s\), the first at voxel \(i, j, k\) = \(3, 4, 5\)"):
        read_volume(path)


def test_zero_pixdim_is_refused(tmp_path):
    import struct

    path = _nifti(tmp_path / "flat.nii", np.arange(512, dtype=np.int16).reshape(8, 8, 8))
    data = bytearray(path.read_bytes())
    data[88:92] = struct.pack("<f", 0.0)  # pixdim[3], as an exporter that forgot the slice spacing writes it
    path.write_bytes(bytes(data))
    with pytest.raises(SpineAIError, match="no voxel size along k .*1 mm"):
        read_volume(path)


def _dicom(tmp_path):
    from test_image import _write_dicom_series

    vol = Volume(np.random.default_rng(0).integers(0, 900, (10, 6, 7)).astype(np.int16), (0.7, 0.7, 3.0),
                 (10.0, -20.0, 30.0), np.eye(3))
    folder = tmp_path / "series"
    _write_dicom_series(folder, vol, "1.2.826.0.1.3680043.2.1125.2.1001")
    return folder, sorted(folder.iterdir())


def test_dicom_series_with_a_missing_slice_is_refused_naming_the_files(tmp_path):
    folder, files = _dicom(tmp_path)
    assert read_volume(folder).array.shape == (10, 6, 7)
    files[4].unlink()
    with pytest.raises(SpineAIError, match=f"uneven slice spacing: 6.000 mm between {files[3].name} and "
                                           f"{files[5].name} .* 3.000 mm apart"):
        read_volume(folder)


def test_dicom_series_with_a_corrupt_slice_is_refused_naming_it(tmp_path):
    folder, files = _dicom(tmp_path)
    data = files[6].read_bytes()
    for damaged in (data[:-60], data[:200], b"\0" * 300):  # pixel data cut short, header cut, not DICOM
        files[6].write_bytes(damaged)
        with pytest.raises(SpineAIError, match=f"(damaged slice file|outside any readable series).*{files[6].name}"):
            read_volume(folder)


def test_image_and_mask_swapped_is_detected(case_files, tmp_path, capsys):
    image, mask = case_files
    assert _cli("features", mask, image, "--out", tmp_path / "f.csv") == 2
    assert "wrong order" in capsys.readouterr().err and not (tmp_path / "f.csv").exists()


def test_fractional_float_mask_is_refused_with_the_rule(tmp_path, phantom):
    from spineai.radiomics import extract_features

    soft = phantom.lesion_mask.array.astype(np.float32)
    soft[np.nonzero(soft)[0][0], np.nonzero(soft)[1][0], np.nonzero(soft)[2][0]] = 0.5
    with pytest.raises(SpineAIError, match=r"1 voxel\(s\) with fractional values \(e.g. 0.5\).*threshold it first"):
        extract_features(phantom.image, phantom.lesion_mask.with_array(soft))
    # whole-number floats are a valid label map
    extract_features(phantom.image, phantom.lesion_mask.with_array(phantom.lesion_mask.array.astype(np.float32)))


def test_duplicated_training_rows_are_dropped_with_a_warning_or_refused(tmp_path):
    from spineai.models.training import load_dataset

    table = _toy_table(tmp_path / "t.csv")
    lines = table.read_text().splitlines()
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join(lines + lines[1:6]) + "\n")
    with pytest.warns(UserWarning, match="5 duplicated row"):
        ds = load_dataset(dup, "diagnosis")
    assert len(ds.y) == 40
    np.testing.assert_array_equal(ds.X, load_dataset(table, "diagnosis").X)
    renamed = tmp_path / "renamed.csv"  # the same lesion under a second id
    renamed.write_text("\n".join(lines + ["X999" + lines[3][4:]]) + "\n")
    with pytest.warns(UserWarning, match="1 duplicated row"):
        assert len(load_dataset(renamed, "diagnosis").y) == 40
    clash = tmp_path / "clash.csv"
    changed = lines[3].split(",")
    changed[1] = "123.5"  # the same id with another value
    clash.write_text("\n".join(lines + [",".join(changed)]) + "\n")
    with pytest.raises(SpineAIError, match="appears on rows 4 and 42 with different values"):
        load_dataset(clash, "diagnosis")


def test_near_duplicate_labels_are_refused_with_counts(tmp_path):
    from spineai.models.training import load_dataset

    table = _toy_table(tmp_path / "t.csv")
    lines = table.read_text().splitlines()
    lines[2] = lines[2].replace(",MET", ",Met")
    (tmp_path / "typo.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SpineAIError, match=r"differ only in case.*'MET' vs 'Met'.*'SD' 20, 'MET' 19, 'Met' 1"):
        load_dataset(tmp_path / "typo.csv", "diagnosis")


def test_evaluate_on_few_cases_warns_and_leaves_the_ci_undefined(tmp_path, bundle_zip, capsys):
    table = _toy_table(tmp_path / "tiny.csv", n=3)
    assert _cli("evaluate", bundle_zip, table, "--label-column", "diagnosis", "--out", tmp_path / "rep",
                "--bootstrap", "50") == 0
    cap = capsys.readouterr()
    assert "warning: fewer than 10 cases in class SD (2), MET (1)" in cap.err
    assert "[CI undefined]" in cap.out and "[1.000, 1.000]" not in cap.out
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert all(m["ci_low"] != m["ci_low"] for m in metrics.values())  # NaN


def test_cohort_skip_failures_writes_no_row_for_a_truncated_image(tmp_path, phantom, capsys):
    manifest, names = _cohort(tmp_path, phantom, 3)
    data = (tmp_path / "img.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 3])
    with open(manifest, "a") as fh:
        fh.write("broken,cut.nii.gz,lesion.nii.gz,\n")
    out = tmp_path / "f.csv"
    assert _cli("cohort", manifest, "--skip-failures", "--out", out) == 0
    assert "skipped broken: cannot read" in capsys.readouterr().err
    assert [r["id"] for r in csv.DictReader(open(out, encoding="utf-8"))] == names


# ==== tracebacks instead of messages ============================================================

def _table_with(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_utf16_and_semicolon_decimal_comma_tables_read_the_same(tmp_path):
    from spineai.models.tables import read_table

    text = "lesion_id,a,diagnosis\nL1,0.5,SD\nL2,1.25e3,MET\n"
    plain = read_table(_table_with(tmp_path, "plain.csv", text))
    utf16 = read_table(_table_with(tmp_path, "u16.csv", text, "utf-16"))
    euro = read_table(_table_with(tmp_path, "euro.csv", "lesion_id;a;diagnosis\nL1;0,5;SD\nL2;1,25e3;MET\n"))
    for t in (utf16, euro):
        assert t.columns == plain.columns
        np.testing.assert_array_equal(t.numeric("a"), plain.numeric("a"))
    with pytest.raises(SpineAIError, match="not UTF-8 text .*CSV UTF-8"):
        read_table(_table_with(tmp_path, "cp1252.csv", "lesion_id,a,diagnosis\nL1,0.5,Métastase\n", "cp1252"))


def test_corrupt_zip_and_model_json_give_one_line(tmp_path, bundle_zip, capsys):
    table = _toy_table(tmp_path / "t.csv", n=4)
    cut = tmp_path / "cut.zip"
    cut.write_bytes(bundle_zip.read_bytes()[:-100])
    bad_json = tmp_path / "badjson"
    from spineai.models.bundle import _read_files, sha256_bytes

    files = _read_files(bundle_zip)
    files["model.json"] = b'{"classes": ["SD", '
    manifest = json.loads(files["manifest.json"])
    manifest["files"]["model.json"] = sha256_bytes(files["model.json"])
    files["manifest.json"] = json.dumps(manifest).encode()
    bad_json.mkdir()
    for n, d in files.items():
        (bad_json / n).write_bytes(d)
    for bundle in (cut, bad_json):
        assert _cli("predict", bundle, table, "--out", tmp_path / f"{bundle.name}.csv") == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_huge_values_in_a_table_are_named(tmp_path, capsys):
    table = _toy_table(tmp_path / "t.csv")
    lines = table.read_text().splitlines()
    cells = lines[3].split(",")
    cells[2] = "1e308"
    lines[3] = ",".join(cells)
    table.write_text("\n".join(lines) + "\n")
    assert _cli("train", table, "--label-column", "diagnosis", "--model", "logreg", "--out", tmp_path / "m.zip",
                "--quiet") == 2
    err = capsys.readouterr().err
    column = lines[0].split(",")[2]
    assert f"values beyond ±1e100 in rows L002 (columns {column})" in err and len(err.strip().splitlines()) == 1


def test_segment_on_thin_volumes_and_corner_seeds(tmp_path, phantom, recwarn):
    from spineai.segment import segment

    for n in (1, 2):
        thin = Volume(phantom.image.array[:n].copy(), phantom.image.spacing, phantom.image.origin,
                      phantom.image.direction)
        with pytest.raises(SpineAIError, match=f"only {n} voxel\\(s\\) along k: 3D segmentation needs at least 3"):
            segment(thin, (50, 50, 0))
    # a corner seed where the vertebral-body region grows nothing: a message, no numpy warnings
    flat = np.full((30, 40, 40), 10.0, np.float32)
    flat[10:20, 10:30, 10:30] = np.random.default_rng(0).normal(300, 40, (10, 20, 20))
    with pytest.raises(SpineAIError):
        segment(Volume(flat, (1.0, 1.0, 3.0)), (0, 0, 0), mode="vertebral-body")
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("fault, line", [
    (OSError(28, "No space left on device", "/data/out.csv"), "the disk is full (/data/out.csv)"),
    (OSError(30, "Read-only file system", "/mnt/out.csv"), "the disk is read-only (/mnt/out.csv)"),
    (PermissionError(13, "Permission denied", "/root/x"), "permission denied (/root/x)"),
    (b"\xff".decode("utf-8", "strict") if False else UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
     "not UTF-8 text"),
    (zipfile.BadZipFile("File is not a zip file"), "damaged or non-zip file"),
    (json.JSONDecodeError("Expecting value", "{", 1), "invalid JSON"),
    (ValueError("could not convert string to float: 'x'"), "ValueError: could not convert"),
])
def test_main_turns_ordinary_faults_into_one_line(monkeypatch, capsys, tmp_path, fault, line):
    import spineai.cli as cli

    def boom(args):
        raise fault

    monkeypatch.setattr(cli, "cmd_features", boom)
    monkeypatch.delenv("SPINEAI_DEBUG", raising=False)
    assert cli.main(["features", "a", "b", "--out", str(tmp_path / "f.csv")]) == 2
    err = capsys.readouterr().err
    assert line in err and len(err.strip().splitlines()) == 1


def test_a_genuine_bug_says_so_and_debug_shows_the_traceback(monkeypatch, capsys, tmp_path):
    import spineai.cli as cli

    def bug(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(cli, "cmd_features", bug)
    monkeypatch.delenv("SPINEAI_DEBUG", raising=False)
    assert cli.main(["features", "a", "b", "--out", str(tmp_path / "f.csv")]) == 3
    assert "internal error: TypeError: unsupported operand (a bug in SpineAI: run again with SPINEAI_DEBUG=1" \
        in capsys.readouterr().err
    monkeypatch.setenv("SPINEAI_DEBUG", "1")
    with pytest.raises(TypeError):
        cli.main(["features", "a", "b", "--out", str(tmp_path / "f.csv")])
