"""The learned vertebral-body click segmentation, on real MR it never trained on.

Cases come from SPINEAI_TEST_DATA/spine-mr-bodies (the shipped model's validation cases, listed in
its card) and SPINEAI_TEST_DATA/spine-samples (out of distribution: cervical T2).
"""

from __future__ import annotations

import numpy as np
import pytest

from spineai.errors import SpineAIError
from spineai.image import Volume, read_volume

torch = pytest.importorskip("torch", reason="the learned segmentation needs torch (pip install 'spineai[deep]')")
pytest.importorskip("monai", reason="the learned segmentation needs MONAI (pip install 'spineai[deep]')")
pytestmark = pytest.mark.filterwarnings("ignore")

from spineai.deep.bundle import load_torch_bundle  # noqa: E402
from spineai.segment import choose_method, segment  # noqa: E402
from spineai.segment.body_training import _corrective_click, innermost_voxel  # noqa: E402
from spineai.segment.deep import DEFAULT_MODEL  # noqa: E402


def dice(a, b) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


@pytest.fixture(scope="module")
def card():
    return load_torch_bundle(DEFAULT_MODEL).card


@pytest.fixture(scope="module")
def validation_case(card):
    """The first VB3 (water-fat) validation case: never seen in training."""
    from shared_data import shared_data_path

    name = next(n for n in card["training"]["validation_cases"] if n.startswith("VB3"))
    folder = shared_data_path("spine-mr-bodies")
    return name, read_volume(folder / f"{name}_img.nii.gz"), read_volume(folder / f"{name}_bodies.nii.gz").array


def test_shipped_bundle_is_pinned_and_described(card):
    bundle = load_torch_bundle(DEFAULT_MODEL)
    assert bundle.verified, "the shipped model must be pinned by sha256 in the registry"
    assert card["task"] == "click-segmentation" and not card["demonstration"]
    assert set(card["training"]["train_cases"]).isdisjoint(card["training"]["validation_cases"])
    assert len(card["training"]["validation_cases"]) >= 12
    assert {n[:3] for n in card["training"]["validation_cases"]} == {"VB2", "VB3"}
    v = card["metrics"]["validation"]
    # Measured at training time on the 13 unseen cases (73 bodies): the card's own figures.
    assert v["deep_centre"]["mean_dice"] >= 0.90 and v["deep_inner-half"]["mean_dice"] >= 0.90
    assert v["deep_centre"]["below_0.80"] == 0 and v["deep_inner-half"]["below_0.80"] == 0
    assert v["deep_centre"]["mean_dice"] > v["classic_centre"]["mean_dice"] + 0.1
    assert all(word in " ".join(card["training"]["citations"]) for word in ("Burian", "Zukic"))


def test_every_body_of_an_unseen_case(validation_case):
    name, image, labels = validation_case
    for b in [int(v) for v in np.unique(labels) if v]:
        truth = labels == b
        details: dict = {}
        mask = segment(image, innermost_voxel(truth), "vertebral-body", method="deep", device="cpu", details=details)
        assert mask.same_geometry(image) and mask.array.dtype == np.uint8
        assert details["method"] == "deep" and details["device"].startswith("cpu")
        d = dice(mask.array.astype(bool), truth)
        print(f"{name} body {b}: Dice {d:.3f}")
        assert d >= 0.85


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine: CPU/GPU agreement not testable")
def test_gpu_gives_the_cpu_mask(validation_case):
    """On the GPU the network runs in bfloat16 autocast (float32 on the CPU): the masks must still agree."""
    _, image, labels = validation_case
    for b in [int(v) for v in np.unique(labels) if v]:
        click = innermost_voxel(labels == b)
        cpu = segment(image, click, "vertebral-body", method="deep", device="cpu").array.astype(bool)
        details: dict = {}
        gpu = segment(image, click, "vertebral-body", method="deep", device="cuda", details=details)
        assert details["device"].startswith("cuda") and gpu.same_geometry(image)
        assert dice(gpu.array.astype(bool), cpu) >= 0.99


def _crop(image: Volume, labels: np.ndarray, centre_ijk, half=(40, 45, 50)):
    i, j, k = centre_ijk
    lo = [max(c - h, 0) for c, h in zip((i, j, k), half)]
    box = (slice(lo[2], k + half[2]), slice(lo[1], j + half[1]), slice(lo[0], i + half[0]))
    origin = image.ijk_to_lps_matrix() @ np.array([*lo, 1.0])
    return Volume(image.array[box], image.spacing, origin[:3], image.direction), labels[box], tuple(np.subtract(centre_ijk, lo))


def test_any_orientation_gives_the_same_body(validation_case):
    """The same anatomy stored with permuted and flipped axes (another direction matrix) gives the
    same mask in patient space: the model sees patches in LPS, not in the file's voxel order."""
    _, image, labels = validation_case
    b = int(np.unique(labels)[2])
    image, labels, click = _crop(image, labels, innermost_voxel(labels == b))
    a = segment(image, click, "vertebral-body", method="deep", device="cpu").array
    # New voxel order: array axes (k, j, i) -> (i, k, j) reversed along one axis.
    arr = np.transpose(image.array, (2, 0, 1))[:, ::-1, :]
    d = image.direction @ np.diag(image.spacing)
    n_k = image.array.shape[0]
    # new index (i', j', k') = (j, k reversed, i): voxel (i, j, k) of the old image.
    m = np.column_stack([d[:, 1], -d[:, 2], d[:, 0]])
    origin = image.ijk_to_lps_matrix() @ np.array([0, 0, n_k - 1, 1.0])
    spacing = np.linalg.norm(m, axis=0)
    other = Volume(np.ascontiguousarray(arr), tuple(spacing), tuple(origin[:3]), m / spacing)
    i, j, k = click
    click2 = (j, n_k - 1 - k, i)
    assert other.array[click2[2], click2[1], click2[0]] == image.array[k, j, i]
    b2 = segment(other, click2, "vertebral-body", method="deep", device="cpu").array
    back = np.transpose(b2[:, ::-1, :], (1, 2, 0))
    assert back.shape == a.shape
    assert dice(a.astype(bool), back.astype(bool)) >= 0.97


def test_thick_sagittal_slices(validation_case):
    """4 mm sagittal slices (a routine clinical protocol) from the 1 mm case: still the body."""
    import SimpleITK as sitk

    _, image, labels = validation_case
    b = int(np.unique(labels)[3])
    img, lab, click = _crop(image, labels, innermost_voxel(labels == b))

    def thick(vol: np.ndarray, interp):
        s = sitk.GetImageFromArray(vol.astype(np.float32))
        s.SetSpacing(img.spacing)
        size = [max(1, int(round(n * sp / t))) for n, sp, t in zip(s.GetSize(), img.spacing, (4.0, 1.0, 1.0))]
        out = sitk.Resample(s, size, sitk.Transform(), interp, (0, 0, 0), (4.0, 1.0, 1.0))
        return sitk.GetArrayFromImage(out)

    smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(img.array.astype(np.float32)), [1.7, 0.1, 0.1]))
    arr = thick(smooth, sitk.sitkLinear)
    truth = thick((lab == b).astype(np.float32), sitk.sitkNearestNeighbor) > 0.5
    origin = img.ijk_to_lps_matrix() @ np.array([1.5, 0, 0, 1.0])  # centre of the first 4 mm slab
    vol = Volume(arr, (4.0, 1.0, 1.0), tuple(origin[:3]), img.direction)
    seed = (min(int(round((click[0] - 1.5) / 4.0)), arr.shape[2] - 1), click[1], click[2])
    mask = segment(vol, seed, "vertebral-body", method="deep", device="cpu").array.astype(bool)
    assert dice(mask, truth) >= 0.85


def test_one_corrective_click_raises_dice_where_it_helps(card):
    """DeepEdit-style: a click in the largest error region (add for a missed part, remove for a part
    taken in wrongly) after a click off the body's centre, on unseen cases."""
    from shared_data import shared_data_path

    folder = shared_data_path("spine-mr-bodies")
    rng = np.random.default_rng(5)
    gains = []
    for name in card["training"]["validation_cases"][:3]:
        image = read_volume(folder / f"{name}_img.nii.gz")
        labels = read_volume(folder / f"{name}_bodies.nii.gz").array
        for b in [int(v) for v in np.unique(labels) if v]:
            truth = labels == b
            inside = np.argwhere(truth)
            k, j, i = inside[rng.integers(len(inside))]  # anywhere in the body, its rim included
            click = (int(i), int(j), int(k))
            mask = segment(image, click, "vertebral-body", method="deep", device="cpu").array.astype(bool)
            fix = _corrective_click(mask, truth, np.asarray(image.spacing)[::-1])
            if fix is None:
                continue
            kind, point = fix
            fixed = segment(image, click, "vertebral-body", method="deep", device="cpu",
                            add_points=[point] if kind == "add" else [],
                            remove_points=[point] if kind == "remove" else []).array.astype(bool)
            gains.append(dice(fixed, truth) - dice(mask, truth))
    if not gains:
        pytest.skip("no body of these cases left an error region of 1 mL or more to correct")
    print("corrective-click Dice gains:", np.round(gains, 3))
    assert np.mean(gains) > 0 and sum(g > 0 for g in gains) >= 0.6 * len(gains)


def test_corrective_clicks_are_honoured(validation_case):
    _, image, labels = validation_case
    b = int(np.unique(labels)[1])
    truth = labels == b
    click = innermost_voxel(truth)
    inside = np.argwhere(truth)
    k, j, i = inside[len(inside) // 3]
    remove = (int(i), int(j), int(k))
    mask = segment(image, click, "vertebral-body", method="deep", device="cpu", remove_points=[remove]).array
    assert mask[remove[2], remove[1], remove[0]] == 0
    with pytest.raises(SpineAIError, match="outside the image"):
        segment(image, click, "vertebral-body", method="deep", add_points=[(10_000, 0, 0)])
    with pytest.raises(SpineAIError, match="corrective add / remove points need the learned method"):
        segment(image, click, "vertebral-body", method="classic", add_points=[click])


def test_out_of_distribution_cervical_t2():
    """Cervical T2 at 1.5 mm (TPTBox sample): neither lumbar nor water-fat, and C7 is cut by the image edge."""
    from shared_data import shared_data_path

    image = read_volume(shared_data_path("spine-samples", "sub-mri_label-6_T2w.nii.gz"))
    vert = read_volume(shared_data_path("spine-samples", "sub-mri_seg-vert_label-6_msk.nii.gz")).array
    sub = read_volume(shared_data_path("spine-samples", "sub-mri_seg-subreg_label-6_msk.nii.gz")).array
    for level in (6, 7):
        body = (vert == level) & (sub == 49)
        mask = segment(image, innermost_voxel(body), "vertebral-body", method="deep", device="cpu").array.astype(bool)
        d = dice(mask, body)
        print(f"T2 C{level}: deep Dice {d:.3f}")
        assert d >= 0.90  # 0.915 / 0.916 measured (classic: 0.867 / 0.896)


def test_method_choice():
    assert choose_method("lesion", "auto")[0] == "classic"
    with pytest.raises(SpineAIError, match="segments vertebral bodies only"):
        choose_method("lesion", "deep")
    used, why = choose_method("vertebral-body", "auto", model="no-such-model")
    assert used == "classic" and "no-such-model" in why
    assert choose_method("vertebral-body", "auto")[0] == "deep"
    with pytest.raises(SpineAIError, match="unknown segmentation method"):
        choose_method("vertebral-body", "neural")


def test_command_line(validation_case, tmp_path, capsys):
    from spineai.cli import main

    _, image, labels = validation_case
    b = int(np.unique(labels)[1])
    ras = image.ijk_to_ras(innermost_voxel(labels == b))
    from spineai.image import write_volume

    write_volume(image, tmp_path / "img.nii.gz")
    seed = ",".join(f"{v:.2f}" for v in ras)
    assert main(["segment", str(tmp_path / "img.nii.gz"), "--seed", seed, "--mode", "vertebral-body",
                 "--device", "cpu", "--out", str(tmp_path / "body.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "method: deep (spineai-body-click" in out and "[auto: learned model available]" in out
    mask = read_volume(tmp_path / "body.nii.gz")
    assert mask.same_geometry(image) and dice(mask.array.astype(bool), labels == b) >= 0.88
    assert main(["segment", str(tmp_path / "img.nii.gz"), "--seed", seed, "--method", "deep",
                 "--out", str(tmp_path / "lesion.nii.gz")]) == 2
    assert "segments vertebral bodies only" in capsys.readouterr().err


def test_the_body_model_installs_offline_from_its_file(tmp_path, monkeypatch):
    """`spineai models install FILE`: a torch bundle installs like a classifier bundle (no network)."""
    from spineai.models import registry

    monkeypatch.setenv("SPINEAI_HOME", str(tmp_path / "home"))
    src = registry.BUNDLED_DIR / "spineai-body-click-1.0.0.zip"
    entry = registry.install(str(src))
    assert entry["task"] == "click-segmentation" and entry["id"] == "spineai-body-click"
    assert load_torch_bundle("spineai-body-click").source == entry["path"]  # the installed copy wins
