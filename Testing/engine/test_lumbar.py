"""Lumbar grading, engine side without a network: the challenge metric against hand-computed values,
the study reader (RSNA layout and single studies; missing, unknown and damaged series), the
pre-processing and the synthetic studies."""

from __future__ import annotations

import math
import shutil
import warnings

import numpy as np
import pytest

from spineai.errors import SpineAIError, SpineAIWarning
from spineai.image import Volume, write_volume
from spineai.lumbar import CONDITIONS, LEVELS, SERIES_ROLES, target_columns
from spineai.lumbar.metric import challenge_score, class_frequencies, confusion_matrices
from spineai.lumbar.preprocess import (ClinicalEncoder, CROPS, canal_points_from_discs, equalise, level_crops,
                                       normalise, prepare_volume, study_crops)
from spineai.lumbar.study import open_rsna, read_rsna_study, read_study, series_role
from spineai.lumbar.synthetic import draw_anatomy, generate_dataset


# ---- metric -------------------------------------------------------------------------------------

def _two_studies():
    """Study A: spinal grades 0,1,2,0,0 predicted (.7,.2,.1); foraminal all 0 predicted (.8,.1,.1);
    subarticular all 0 predicted (.6,.3,.1). Study B: spinal all 0 predicted (.9,.05,.05); foraminal
    left L5/S1 severe, the rest 0, all predicted (.8,.1,.1); subarticular as A."""
    y = np.zeros((2, 25), int)
    p = np.zeros((2, 25, 3))
    y[0, :5] = [0, 1, 2, 0, 0]
    p[0, :5] = [0.7, 0.2, 0.1]
    p[1, :5] = [0.9, 0.05, 0.05]
    p[:, 5:15] = [0.8, 0.1, 0.1]
    y[1, 9] = 2  # left neural foraminal narrowing, L5/S1
    p[:, 15:] = [0.6, 0.3, 0.1]
    return y, p


def test_metric_matches_hand_computed_values():
    y, p = _two_studies()
    ln = math.log
    spinal = (3 * -ln(0.7) + 2 * -ln(0.2) + 4 * -ln(0.1) + 5 * -ln(0.9)) / (1 + 2 + 4 + 1 + 1 + 5)
    foraminal = (19 * -ln(0.8) + 4 * -ln(0.1)) / (19 + 4)
    subarticular = -ln(0.6)
    # any severe spinal: A is severe (weight 4, max P(severe) 0.1); B is not (weight 1, max P(severe) 0.05)
    any_severe = (4 * -ln(0.1) + 1 * -ln(0.95)) / 5
    s = challenge_score(y, p)
    assert s["spinal"] == pytest.approx(spinal, abs=1e-12)
    assert s["foraminal"] == pytest.approx(foraminal, abs=1e-12)
    assert s["subarticular"] == pytest.approx(subarticular, abs=1e-12)
    assert s["any_severe_spinal"] == pytest.approx(any_severe, abs=1e-12)
    assert s["score"] == pytest.approx((spinal + foraminal + subarticular + any_severe) / 4, abs=1e-12)


def test_metric_equals_scikit_learn_the_way_the_challenge_called_it():
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(3)
    y = rng.choice(3, size=(12, 25), p=[0.7, 0.2, 0.1])
    p = rng.dirichlet([2, 1, 1], size=(12, 25))
    w = np.array([1, 2, 4])
    s = challenge_score(y, p)
    for name, cols in (("spinal", range(0, 5)), ("foraminal", range(5, 15)), ("subarticular", range(15, 25))):
        yy, pp = y[:, cols].ravel(), p[:, cols].reshape(-1, 3)
        assert s[name] == pytest.approx(log_loss(yy, pp, sample_weight=w[yy], labels=[0, 1, 2]), rel=1e-9)
    any_y = (y[:, :5] == 2).any(1).astype(int)
    any_w = w[y[:, :5]].max(1)
    assert s["any_severe_spinal"] == pytest.approx(log_loss(any_y, p[:, :5, 2].max(1), sample_weight=any_w, labels=[0, 1]),
                                                   rel=1e-9)


def test_metric_leaves_ungraded_rows_out_and_clips_certainty():
    y, p = _two_studies()
    y2 = y.copy()
    y2[1, 5:15] = -1  # study B's foraminal rows not graded
    s = challenge_score(y2, p)
    assert s["foraminal"] == pytest.approx(-math.log(0.8))
    sure_wrong = np.zeros((1, 25, 3))
    sure_wrong[..., 2] = 1.0
    s = challenge_score(np.zeros((1, 25), int), sure_wrong)
    assert s["spinal"] == pytest.approx(-math.log(np.finfo(float).eps))  # clipped, not infinite


def test_metric_refuses_bad_inputs_with_clear_messages():
    y, p = _two_studies()
    with pytest.raises(SpineAIError, match=r"labels must be \(studies, 25\)"):
        challenge_score(y[:, :24], p)
    with pytest.raises(SpineAIError, match="probabilities must be finite and non-negative"):
        challenge_score(y, -p)
    with pytest.raises(SpineAIError, match="labels must be 0"):
        challenge_score(y + 3, p)


def test_prior_and_confusion_matrices():
    y, p = _two_studies()
    prior = class_frequencies(y)
    assert prior.shape == (25, 3) and np.allclose(prior.sum(1), 1)
    assert prior[2, 2] == pytest.approx(2 / 5)  # spinal L3/L4: one severe of two, +1 smoothing per grade
    m = confusion_matrices(y, p)
    assert m["spinal_canal_stenosis"].tolist() == [[8, 0, 0], [1, 0, 0], [1, 0, 0]]
    assert m["left_neural_foraminal_narrowing"].sum() == 10


# ---- synthetic studies and the reader ----------------------------------------------------------

@pytest.fixture(scope="module")
def rsna(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("lumbar") / "rsna", 2, seed=11)


def test_synthetic_study_reads_back_end_to_end(rsna):
    data = open_rsna(rsna)
    assert data.study_ids == ["1000", "1001"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpineAIWarning)  # a complete study gives no warning
        study = read_rsna_study(data, "1001")
    assert sorted(study.series) == sorted(SERIES_ROLES) and study.missing == [] and study.warnings == []
    truth = draw_anatomy(np.random.default_rng((11, 1)))
    assert study.labels.tolist() == truth.grades.ravel().tolist()
    assert study.series["axial_t2"].volume.array.shape[1:] == (108, 108)
    for li, level in enumerate(LEVELS):  # coordinates -> LPS through the DICOM geometry: within a slice of the truth
        assert np.linalg.norm(study.levels[level] - truth.canal_point(li)) < 2.5


def test_synthetic_grades_change_the_images_where_they_should(rsna):
    """A severe canal stenosis leaves less CSF (bright on T2) in the midline crop than a normal canal."""
    from spineai.lumbar.synthetic import CONTRAST, CSF, tissue

    grades = np.zeros((5, 5), int)
    grades[0, 3] = 2
    a = draw_anatomy(np.random.default_rng(0), grades)
    line = np.stack([np.zeros(60), a.curve(a.disc_z()[3]) + np.linspace(0, 40, 60), np.full(60, a.disc_z()[3])], 1)
    normal_line = line.copy()
    normal_line[:, 1] += a.curve(a.disc_z()[1]) - a.curve(a.disc_z()[3])
    normal_line[:, 2] = a.disc_z()[1]
    assert (tissue(a, line) == CSF).sum() < 0.45 * (tissue(a, normal_line) == CSF).sum()
    assert CONTRAST["T2"][CSF] > CONTRAST["T1"][CSF]


def test_missing_unknown_and_damaged_series_give_warnings_not_failures(rsna, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(rsna, root)
    study_dir = root / "train_images" / "1000"
    axial = sorted(study_dir.iterdir())[2]
    shutil.rmtree(axial)  # the axial series is missing
    t1 = sorted(study_dir.iterdir())[0]
    (t1 / "9.dcm").write_bytes((t1 / "9.dcm").read_bytes()[:600])  # a damaged slice in the middle
    (study_dir / "999").mkdir()  # a series folder no CSV describes
    shutil.copy(t1 / "1.dcm", study_dir / "999" / "1.dcm")
    with pytest.warns(SpineAIWarning) as caught:
        study = read_rsna_study(open_rsna(root), "1000")
    text = " | ".join(str(w.message) for w in caught)
    assert study.missing == ["axial_t2"]
    assert "no Axial T2 series: graded from Sagittal T1, Sagittal T2/STIR" in text
    assert "9.dcm" in text and "filled from the neighbouring slices" in text
    assert "series 999 is not in train_series_descriptions.csv" in text
    assert f"series {axial.name} (Axial T2) is listed but has no folder" in text
    assert study.series["sagittal_t1"].volume.array.shape[0] == 17  # the slice is interpolated, the stack intact
    assert set(study.levels) == set(LEVELS)  # the canal points come from the sagittal T2, still there


def test_unknown_series_description_and_no_usable_series(rsna, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(rsna, root)
    csv_path = root / "train_series_descriptions.csv"
    csv_path.write_text(csv_path.read_text().replace("Sagittal T1", "Coronal STIR"))
    with pytest.warns(SpineAIWarning) as caught:
        study = read_rsna_study(open_rsna(root), "1000")
    assert "unknown type 'Coronal STIR': left out" in str(caught[0].message)
    assert study.missing == ["sagittal_t1"]
    for d in (root / "train_images" / "1001").iterdir():
        for f in d.iterdir():
            f.write_bytes(b"not dicom")
    with pytest.warns(SpineAIWarning), pytest.raises(SpineAIError, match="study 1001: no usable series"):
        read_rsna_study(open_rsna(root), "1001")


def test_series_role_from_descriptions():
    assert series_role("Sagittal T1") == "sagittal_t1"
    assert series_role("SAG T2 STIR") == "sagittal_t2"
    assert series_role("Sagittal T2/STIR") == "sagittal_t2"
    assert series_role("AX T2 FSE") == "axial_t2"
    assert series_role("Axial T2") == "axial_t2"
    assert series_role("Coronal STIR") is None and series_role("localizer") is None


def test_single_study_from_nifti_files_and_dicom_folders(rsna, tmp_path):
    data = open_rsna(rsna)
    full = read_rsna_study(data, "1000")
    nii = write_volume(full.series["sagittal_t2"].volume, tmp_path / "sag_t2.nii.gz")
    t1_folder = full.series["sagittal_t1"].source
    with pytest.warns(SpineAIWarning, match="no Axial T2 series"):
        study = read_study({"sagittal_t2": nii, "sagittal_t1": t1_folder}, "s1", levels=full.levels)
    assert study.missing == ["axial_t2"]
    assert np.allclose(study.series["sagittal_t2"].volume.array, full.series["sagittal_t2"].volume.array)
    with pytest.raises(SpineAIError, match="unknown series role"):
        read_study({"coronal": nii})
    with pytest.warns(SpineAIWarning) as caught:
        read_study({"sagittal_t1": tmp_path / "absent", "sagittal_t2": nii})
    assert "Sagittal T1 series left out: no such file" in str(caught[0].message)


# ---- pre-processing -----------------------------------------------------------------------------

def test_normalise_and_equalise():
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, 100.0, size=(10, 20, 20)).astype(np.float32)
    n = normalise(a)
    assert n.min() == 0.0 and n.max() == 1.0
    assert np.mean(n == 1.0) == pytest.approx(0.01, abs=0.005)
    e = equalise(n)
    assert np.all(np.diff(e.ravel()[np.argsort(n.ravel())]) >= -1e-6)  # monotone
    assert np.histogram(e, bins=4, range=(0, 1))[0] / e.size == pytest.approx([0.25] * 4, abs=0.03)
    assert not normalise(np.zeros((3, 3, 3))).any()


def test_crops_are_taken_in_patient_space_with_the_documented_axes():
    """A bright point 6 mm posterior and 3 mm inferior of the level on the midline shows in the sagittal
    crop's middle slice 4 pixels right and 2 pixels down of the centre, whatever the image's orientation."""
    pytest.importorskip("torch", reason="level crops are sampled with torch (pip install 'spineai[deep]')")
    arr = np.zeros((40, 60, 60), np.float32)
    direction = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float)  # an oddly stored volume
    vol = Volume(arr, (1.0, 1.0, 1.0), (10.0, -20.0, 30.0), direction)
    centre = vol.ijk_to_lps_matrix() @ np.array([30, 30, 20, 1.0])
    target = centre[:3] + np.array([0.0, 6.0, -3.0])
    ijk = np.round(np.linalg.solve(vol.ijk_to_lps_matrix()[:3, :3], target - vol.ijk_to_lps_matrix()[:3, 3])).astype(int)
    arr[ijk[2], ijk[1], ijk[0]] = 1.0
    crops = level_crops(vol, "sagittal_t2", centre[:3])
    mid = CROPS["sagittal_t2"].offsets_mm.index(0.0)
    r, c = np.unravel_index(np.argmax(crops[mid]), crops[mid].shape)
    assert (c - 15.5, r - 15.5) == pytest.approx((6 / 1.5, 3 / 1.5), abs=0.6)
    assert np.isnan(level_crops(vol, "axial_t2", centre[:3] + 500)).all()  # outside the image: absent


def test_study_crops_mark_missing_series_and_levels_with_nan(rsna):
    pytest.importorskip("torch", reason="level crops are sampled with torch (pip install 'spineai[deep]')")
    study = read_rsna_study(open_rsna(rsna), "1000")
    vols = {r: prepare_volume(s.volume) for r, s in study.series.items() if r != "axial_t2"}
    levels = {k: v for k, v in study.levels.items() if k != "L1/L2"}
    x = study_crops(vols, levels)
    assert x.shape == (5, 3, 7, 32, 32)
    assert np.isnan(x[:, 2]).all() and np.isnan(x[0]).all()
    assert np.isfinite(x[1:, :2]).all() and 0 <= np.nanmin(x) and np.nanmax(x) <= 1


def test_disc_centres_become_canal_points():
    out = canal_points_from_discs({"L4/L5": (1.0, 2.0, 3.0)})
    assert np.allclose(out["L4/L5"], (1.0, 24.0, 3.0))


def test_clinical_encoder_imputes_explicitly_and_one_hot_encodes():
    rows = [{"age": "60", "bmi": "31", "sex": "F"}, {"age": "", "bmi": "24", "sex": "M"},
            {"age": "40", "bmi": "", "sex": ""}, {"age": "50", "bmi": "27", "sex": "F"}]
    enc = ClinicalEncoder(["age", "bmi"], ["sex"], imputer="median").fit(rows)
    x = enc.transform(rows)
    assert enc.feature_names == ["age", "bmi", "sex=F", "sex=M", "sex=missing"]
    assert x.shape == (4, 5)
    age = np.array([60, 50, 40, 50.0])  # the missing age is the median of 60, 40, 50
    assert x[:, 0] == pytest.approx((age - age.mean()) / age.std(), abs=1e-5)
    assert x[:, 2:].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]
    unseen = enc.transform([{"age": "70", "bmi": "20", "sex": "X"}])
    assert unseen[0, 2:].tolist() == [0, 0, 1]  # an unseen category counts as missing
    for imputer in ("iterative", "random-forest"):
        xi = ClinicalEncoder(["age", "bmi"], ["sex"], imputer=imputer).fit(rows).transform(rows)
        assert np.isfinite(xi).all() and xi.shape == (4, 5)
    with pytest.raises(SpineAIError, match="unknown imputer"):
        ClinicalEncoder(["age"], imputer="mean")
    with pytest.raises(SpineAIError, match="'old' is not a number"):
        enc.transform([{"age": "old", "bmi": "1", "sex": "F"}])
    with pytest.raises(SpineAIError, match="lacks column"):
        enc.transform([{"age": "1"}])


def test_columns_are_the_challenge_s():
    cols = target_columns()
    assert len(cols) == 25 and cols[0] == "spinal_canal_stenosis_l1_l2" and cols[-1] == "right_subarticular_stenosis_l5_s1"
    assert cols[9] == "left_neural_foraminal_narrowing_l5_s1" and len(CONDITIONS) == 5
