"""The deep-learning foundation: device choice, torch bundles, patch geometry, the training loop."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from spineai.errors import SpineAIError
from spineai.image import Volume

torch = pytest.importorskip("torch", reason="the deep-learning tests need torch (pip install 'spineai[deep]')")
pytest.importorskip("monai", reason="the deep-learning tests need MONAI (pip install 'spineai[deep]')")

from spineai.deep.bundle import build_network, load_torch_bundle, save_torch_bundle  # noqa: E402
from spineai.deep.device import select_device  # noqa: E402
from spineai.deep.patches import PatchGrid, patch_to_volume, sample_patch  # noqa: E402

TINY = {"class": "monai.networks.nets.UNet",
        "args": {"spatial_dims": 3, "in_channels": 2, "out_channels": 1, "channels": [4, 8], "strides": [2],
                 "num_res_units": 0}}


# ---- device ------------------------------------------------------------------------------------

def test_device_choice(monkeypatch):
    assert select_device("cpu").type == "cpu"
    monkeypatch.setenv("SPINEAI_DEVICE", "cpu")
    assert select_device(None).type == "cpu"
    with pytest.raises(SpineAIError, match="unknown device 'tpu'"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SpineAIError, match="sees no CUDA GPU"):
            select_device("cuda")
        monkeypatch.delenv("SPINEAI_DEVICE")
        assert select_device("auto").type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine: CPU/GPU agreement not testable")
def test_cpu_and_gpu_agree():
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        cpu = net(x)
        gpu = net.to("cuda")(x.to("cuda")).cpu()
    # cuDNN convolutions in float32 run as TF32 on Ampere and later (10-bit mantissa): on an H100 the
    # outputs differed by up to ~3e-4 at magnitudes ~0.3, so 1e-4 would test the GPU's arithmetic,
    # not SpineAI. Mask-level agreement on real data: test_segment_deep.py.
    assert torch.allclose(cpu, gpu, atol=2e-3, rtol=1e-2)


# ---- bundles -----------------------------------------------------------------------------------

def _card():
    return {"id": "tiny", "version": "1.0.0", "task": "click-segmentation", "network": TINY, "engine_version": "0.1.0"}


def test_bundle_round_trip_gives_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    for name in ("b.zip", "folder"):
        path = save_torch_bundle(_card(), net, tmp_path / name)
        loaded = load_torch_bundle(path, task="click-segmentation")
        x = torch.randn(1, 2, 16, 16, 16)
        with torch.no_grad():
            assert torch.equal(net(x), loaded.network(x))
        assert not loaded.network.training and not loaded.verified
    with pytest.raises(SpineAIError, match="not a 'classification' model"):
        load_torch_bundle(tmp_path / "b.zip", task="classification")
    with pytest.raises(SpineAIError, match="exists"):
        save_torch_bundle(_card(), net, tmp_path / "b.zip")


def _rewrite(src, dst, edit):
    """Copy a bundle zip, editing the card and recomputing the manifest (a tamper that keeps integrity)."""
    from spineai.bundlefile import pack_files, read_files, write_files

    files = read_files(src)
    card = edit(json.loads(files["model.json"]))
    payload = {k: v for k, v in files.items() if k not in ("model.json", "manifest.json")}
    return write_files(pack_files(card, payload), dst)


def test_bundle_refuses_unknown_network_classes_and_misfit_weights(tmp_path):
    path = save_torch_bundle(_card(), build_network(TINY), tmp_path / "b.zip")
    evil = _rewrite(path, tmp_path / "evil.zip", lambda c: {**c, "network": {"class": "os.system", "args": {}}})
    with pytest.raises(SpineAIError, match="network class 'os.system', which SpineAI does not build"):
        load_torch_bundle(evil)
    wider = _rewrite(path, tmp_path / "wider.zip",
                     lambda c: {**c, "network": {**TINY, "args": {**TINY["args"], "channels": [8, 16]}}})
    with pytest.raises(SpineAIError, match="weights do not fit the network"):
        load_torch_bundle(wider)
    bad_args = _rewrite(path, tmp_path / "args.zip", lambda c: {**c, "network": {**TINY, "args": {"nope": 1}}})
    with pytest.raises(SpineAIError, match="arguments for monai.networks.nets.UNet do not fit"):
        load_torch_bundle(bad_args)


def test_bundle_detects_tampered_weights(tmp_path):
    path = save_torch_bundle(_card(), build_network(TINY), tmp_path / "b.zip")
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    files["weights.safetensors"] = files["weights.safetensors"][:-8] + b"\0" * 8
    with zipfile.ZipFile(tmp_path / "t.zip", "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)
    with pytest.raises(SpineAIError, match="sha256 mismatch for weights.safetensors"):
        load_torch_bundle(tmp_path / "t.zip")


# ---- patch geometry ----------------------------------------------------------------------------

def _oblique_anisotropic_volume():
    """A 4 mm-slice volume with an oblique direction and a bright ball of radius 10 mm at a known LPS point."""
    a = np.deg2rad(25)
    direction = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]) @ np.diag([1, -1, 1])
    spacing = (0.8, 0.9, 4.0)
    shape = (24, 90, 100)  # k, j, i
    origin = (-30.0, 20.0, -40.0)
    vol = Volume(np.zeros(shape, np.float32), spacing, origin, direction)
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    lps = np.stack([i, j, k], -1) @ (direction @ np.diag(spacing)).T + np.array(origin)
    centre = lps[12, 45, 50]
    ball = np.linalg.norm(lps - centre, axis=-1) <= 10.0
    return Volume(ball.astype(np.float32) * 100.0, spacing, origin, direction), centre, ball


def test_patch_lands_on_the_same_patient_coordinates():
    vol, centre, ball = _oblique_anisotropic_volume()
    grid = PatchGrid(tuple(centre), (24, 24, 32), 1.5)
    values, inside = sample_patch(vol, grid)
    assert values.shape == (24, 24, 32) and float(inside.min()) == 1.0
    # The ball's centre of mass in the patch is the patch centre (the grid is centred on it).
    z, y, x = np.nonzero(values.numpy() > 50)
    assert abs(x.mean() - 15.5) < 0.6 and abs(y.mean() - 11.5) < 0.6 and abs(z.mean() - 11.5) < 0.6
    # Radius 10 mm = 6.7 patch voxels across the fine in-plane axis, whatever the image's spacing
    # (the 4 mm slices blur the oblique direction, so its extent is only bounded).
    assert 5.5 < (y.max() - y.min()) / 2 < 7.5 and (z.max() - z.min()) / 2 < 10
    # And back onto the image's own grid: the same voxels as the ball (up to partial volume at its rim).
    back, box = patch_to_volume(values / 100.0, grid, vol)
    full = np.zeros(vol.array.shape, np.float32)
    full[box] = back
    m = full >= 0.5
    dice = 2 * (m & ball).sum() / (m.sum() + ball.sum())
    assert dice > 0.85


def test_patch_outside_the_image_is_marked():
    vol, centre, _ = _oblique_anisotropic_volume()
    far = PatchGrid(tuple(np.asarray(centre) + 1000.0), (8, 8, 8), 1.5)
    values, inside = sample_patch(vol, far)
    assert float(inside.sum()) == 0 and float(values.abs().sum()) == 0


# ---- the training loop -------------------------------------------------------------------------

def _toy_problem():
    def sample_batch(rng):
        x = torch.from_numpy(rng.normal(size=(2, 2, 16, 16, 16)).astype(np.float32))
        return x, (x[:, :1] > 0).float()

    loss = torch.nn.BCEWithLogitsLoss()
    validate = lambda net: {"val_dice": float(-loss(net(torch.ones(1, 2, 16, 16, 16)), torch.ones(1, 1, 16, 16, 16)))}  # noqa: E731
    return sample_batch, loss, validate


def test_training_resumes_exactly_as_an_uninterrupted_run(tmp_path):
    from spineai.deep.training import TrainConfig, train

    sample_batch, loss, validate = _toy_problem()
    cfg = TrainConfig(steps=6, lr=1e-2, warmup=2, val_every=3, patience=10, seed=3, background_batches=False)
    torch.manual_seed(0)
    straight = build_network(TINY)
    whole = train(straight, sample_batch, loss, validate, tmp_path / "a", cfg, torch.device("cpu"))
    torch.manual_seed(0)
    resumed = build_network(TINY)
    first = train(resumed, sample_batch, loss, validate, tmp_path / "b",
                  TrainConfig(**{**cfg.__dict__, "max_minutes": 0.0}), torch.device("cpu"))
    assert first.stopped == "paused" and first.steps_done == 1
    fresh = build_network(TINY)  # a new process would start from other weights: the checkpoint decides
    second = train(fresh, sample_batch, loss, validate, tmp_path / "b", cfg, torch.device("cpu"))
    assert second.stopped == "finished" and second.steps_done == 6
    for (name, a), b in zip(straight.state_dict().items(), fresh.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    log = (tmp_path / "b" / "training_log.csv").read_text().splitlines()
    assert log[0].startswith("step,lr,train_loss,seconds,val_dice") and len(log) == 1 + 3
    assert (tmp_path / "b" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert whole.best_step in (3, 6)


def test_unreadable_checkpoint_is_named(tmp_path):
    from spineai.deep.training import TrainConfig, train

    sample_batch, loss, validate = _toy_problem()
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text("{broken")
    with pytest.raises(SpineAIError, match="checkpoint .* is unreadable"):
        train(build_network(TINY), sample_batch, loss, validate, tmp_path, TrainConfig(steps=2, background_batches=False),
              torch.device("cpu"))


def test_ship_pins_the_bundle_and_refuses_an_oversize_one_keeping_what_is_there(tmp_path, monkeypatch):
    from spineai.deep import bundle as bundles

    torch.manual_seed(0)
    src = save_torch_bundle(_card(), build_network(TINY), tmp_path / "tiny.zip")
    models = tmp_path / "models"
    models.mkdir()
    registry = models / "registry.json"  # bundles are found beside their registry
    registry.write_text(json.dumps({"schema": 1, "models": []}))
    entry = bundles.ship_torch_bundle(src, lambda card: f"{card['id']} for a test", models, registry)
    assert entry["url"] == "tiny-1.0.0.zip" and entry["description"] == "tiny for a test"
    assert json.loads(registry.read_text())["models"] == [entry]
    assert load_torch_bundle("tiny", registry=registry).verified
    before = (models / "tiny-1.0.0.zip").read_bytes()
    monkeypatch.setattr(bundles, "MAX_SHIPPED_MB", 0.0001)
    with pytest.raises(SpineAIError, match="stay under 0.0001 MB"):
        bundles.ship_torch_bundle(src, lambda card: "too big", models, registry)
    assert (models / "tiny-1.0.0.zip").read_bytes() == before
    assert sorted(p.name for p in models.iterdir()) == ["registry.json", "tiny-1.0.0.zip"]


def test_training_commands_end_alike(capsys):
    from spineai.deep.training import report_training

    assert report_training({"stopped": "paused", "steps": 7}, ship=lambda b: pytest.fail("a paused run ships nothing")) == 0
    assert "paused at step 7 (--max-minutes): run the same command again" in capsys.readouterr().out
    shipped = []

    def ship(bundle):
        shipped.append(bundle)
        return {"id": "m", "version": "1.2.0", "url": "m-1.2.0.zip", "sha256": "ab" * 32}

    done = {"stopped": "finished", "steps": 300, "best_step": 250, "bundle": "run/model", "report": ["dice 0.9"]}
    assert report_training(done, ship, kind="DEMONSTRATION bundle") == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["finished at step 300 (best step 250); DEMONSTRATION bundle -> run/model", "dice 0.9",
                   "shipped m 1.2.0 -> resources/models/m-1.2.0.zip (sha256 abababababab...)"]
    assert shipped == ["run/model"]
    report_training(done, lines=["other"])
    assert capsys.readouterr().out.splitlines()[1:] == ["other"]


def test_every_card_records_how_its_model_was_made(monkeypatch):
    from spineai.deep.training import run_record

    monkeypatch.setenv("SPINEAI_GIT_COMMIT", "abc123 (copied checkout)")
    rec = run_record(150.0, "spineai train-x DATA --out RUN", "cpu (2 threads)")
    assert list(rec) == ["device", "hardware", "duration_minutes", "command", "git_commit"]
    assert rec["duration_minutes"] == 2.5 and rec["git_commit"] == "abc123 (copied checkout)"
    assert rec["hardware"].endswith("CPU cores") and rec["command"] == "spineai train-x DATA --out RUN"
    assert "device" not in run_record(60.0, "c")  # the radiograph card records its device elsewhere
