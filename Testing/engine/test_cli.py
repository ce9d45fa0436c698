"""The command line: segment, features and demo end to end, their errors, and a fast start."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from spineai.cli import main
from spineai.featureset import FEATURES_31
from spineai.image import Volume, dice, read_volume, write_volume


@pytest.fixture
def phantom_files(tmp_path, phantom):
    image = write_volume(phantom.image, tmp_path / "t2.nii.gz")
    truth = write_volume(phantom.lesion_mask, tmp_path / "truth.nii.gz")
    labels = write_volume(phantom.labels, tmp_path / "labels.nrrd")
    return image, truth, labels


def _seed_arg(phantom):
    return "--seed=" + ",".join(f"{v:.3f}" for v in phantom.lesion_center_ras)


def test_segment_then_features(tmp_path, phantom, phantom_files, capsys):
    image, truth, _ = phantom_files
    out = tmp_path / "lesion.nii.gz"
    assert main(["segment", str(image), _seed_arg(phantom), "--out", str(out)]) == 0
    mask = read_volume(out)
    assert mask.same_geometry(phantom.image)
    assert dice(mask.array, phantom.lesion_mask.array) >= 0.9
    assert "lesion mask:" in capsys.readouterr().out

    table = tmp_path / "features.csv"
    assert main(["features", str(image), str(out), "--id", "case-1", "--out", str(table)]) == 0
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 1
    values = [float(rows[0][name]) for name in FEATURES_31]
    assert all(np.isfinite(values))


def test_seed_with_ijk_and_negative_ras(tmp_path, phantom, phantom_files):
    image, _, _ = phantom_files
    i, j, k = phantom.lesion_center_ijk
    out = tmp_path / "a.nii.gz"
    assert main(["segment", str(image), "--seed", f"{i},{j},{k}", "--ijk", "--out", str(out)]) == 0
    ras = phantom.lesion_center_ras
    assert min(ras) < 0  # the phantom's lesion has a negative RAS coordinate: "--seed -x,..." must parse
    out2 = tmp_path / "b.nii.gz"
    assert main(["segment", str(image), "--seed", ",".join(f"{v:.3f}" for v in ras), "--out", str(out2)]) == 0
    np.testing.assert_array_equal(read_volume(out).array, read_volume(out2).array)


def test_segment_within_label_map(tmp_path, phantom, phantom_files):
    image, _, labels = phantom_files
    out = tmp_path / "body.nii.gz"
    code = main(["segment", str(image), _seed_arg(phantom), "--mode", "vertebral-body",
                 "--within", str(labels), "--out", str(out)])
    assert code == 0
    mask = read_volume(out).array.astype(bool)
    level = phantom.labels.array[tuple(np.asarray(phantom.lesion_center_ijk)[::-1])]
    assert mask.any() and np.all(phantom.labels.array[mask] == level)


def test_errors_are_one_line_and_nothing_overwritten(tmp_path, phantom, phantom_files, capsys):
    image, truth, _ = phantom_files
    before = truth.read_bytes()
    code = main(["segment", str(image), _seed_arg(phantom), "--out", str(truth)])
    assert code == 2
    err = capsys.readouterr().err
    assert "spineai segment: error:" in err and "already exists; pass --overwrite" in err
    assert truth.read_bytes() == before

    code = main(["segment", str(image), "--seed=5000,0,0", "--out", str(tmp_path / "x.nii.gz")])
    assert code == 2 and "lies outside the image" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()

    other = write_volume(Volume(np.ones((4, 4, 4), np.uint8)), tmp_path / "small.nii.gz")
    code = main(["features", str(image), str(other), "--out", str(tmp_path / "f.csv")])
    assert code == 2 and "does not have the image's geometry" in capsys.readouterr().err
    assert not (tmp_path / "f.csv").exists()

    code = main(["features", str(image), str(truth), "--label", "4", "--out", str(tmp_path / "f.csv")])
    assert code == 2 and "label 4 is absent" in capsys.readouterr().err


def test_demo_writes_everything(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seed", "3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["segmentation"]["dice_vs_truth"] >= 0.9
    assert list(summary["features"]) == list(FEATURES_31)
    assert (out / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "not a medical device" in printed
    try:
        import monai  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        assert "skipped" in summary["image_classification"]
    else:  # the image model's Grad-CAM heatmap, on the phantom's geometry, flagged as a demonstration
        assert read_volume(out / "heatmap.nii.gz").same_geometry(read_volume(out / "phantom_t2.nii.gz"))
        assert summary["image_classification"]["demonstration"] and "DEMONSTRATION MODEL" in printed
        assert (out / "heatmap_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A second run refuses to replace the outputs.
    assert main(["demo", "--out", str(out), "--seed", "3"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_start_imports_no_deep_learning():
    code = (
        "import sys, spineai.cli as c; c.build_parser();"
        "import spineai.segment, spineai.radiomics;"
        "bad = [m for m in ('torch', 'monai') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_engine_commands_do_not_import_the_classifier_stack():
    # `spineai features` and the other engine commands never need spineai.models (registry, HTTP).
    code = (
        "import sys, spineai.cli as c;"
        "[c.build_parser([cmd]) for cmd in c.ENGINE_COMMANDS];"
        "assert 'spineai.models' not in sys.modules, 'models imported';"
        "p = c.build_parser([]); assert 'spineai.models' in sys.modules;"
        "p.parse_args(['models', 'list'])"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
