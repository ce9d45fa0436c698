"""Torch model bundles: the card names the network (a MONAI class from an allow-list, and its
arguments) and the preprocessing; the weights are safetensors. Loading builds the network from the
card and fills it with the weights: nothing in a bundle is ever executed or unpickled."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from spineai.bundlefile import WEIGHTS, pack_files, read_bundle, verify_files, write_files
from spineai.errors import SpineAIError

# The only classes a card may name. A new architecture is added here, in code, on purpose.
NETWORKS = {
    "monai.networks.nets.UNet": ("monai.networks.nets", "UNet"),
    "monai.networks.nets.BasicUNet": ("monai.networks.nets", "BasicUNet"),
    "monai.networks.nets.DynUNet": ("monai.networks.nets", "DynUNet"),
    "monai.networks.nets.ResNet": ("monai.networks.nets", "ResNet"),
    "monai.networks.nets.DenseNet121": ("monai.networks.nets", "DenseNet121"),
    "monai.networks.nets.EfficientNetBN": ("monai.networks.nets", "EfficientNetBN"),
    "spineai.lumbar.network.LumbarGradingNet": ("spineai.lumbar.network", "LumbarGradingNet"),
    "spineai.imaging.vit.ViTClassifier": ("spineai.imaging.vit", "ViTClassifier"),  # MONAI ViT with a token map
}


def build_network(spec: dict):
    """A network from ``{"class": ..., "args": {...}}`` (the card's ``network`` entry)."""
    import importlib

    try:
        name, args = spec["class"], dict(spec.get("args", {}))
    except (KeyError, TypeError):
        raise SpineAIError("the model card's 'network' entry needs a 'class' and 'args'") from None
    if name not in NETWORKS:
        raise SpineAIError(f"the model card names network class {name!r}, which SpineAI does not build "
                           f"(known: {', '.join(sorted(NETWORKS))})")
    module, attr = NETWORKS[name]
    cls = getattr(importlib.import_module(module), attr)
    try:
        return cls(**args)
    except TypeError as exc:
        raise SpineAIError(f"the model card's arguments for {name} do not fit it: {exc}") from None


@dataclass
class TorchBundle:
    card: dict
    network: object  # torch.nn.Module, in eval mode
    source: str
    sha256: str
    verified: bool  # True only when the package's registry pins the bundle's sha256

    @property
    def is_demonstration(self) -> bool:
        return bool(self.card.get("demonstration"))


def save_torch_bundle(card: dict, network, path: str | os.PathLike, overwrite: bool = False) -> Path:
    from safetensors.torch import save as st_save

    if "network" not in card:
        raise SpineAIError("a torch bundle's card needs its 'network' entry (class and args)")
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    return write_files(pack_files(card, {WEIGHTS: st_save(state)}), path, overwrite)


def load_torch_bundle(path_or_id: str | os.PathLike, task: str | None = None, registry=None) -> TorchBundle:
    """Load, verify (manifest, registry pin), build the network from the card and load its weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    files, source, sha256, verified = read_bundle(path_or_id, registry)
    card = verify_files(files, source, {WEIGHTS})
    if task is not None and card.get("task") != task:
        raise SpineAIError(f"{source} is a {card.get('task')!r} model, not a {task!r} model")
    if WEIGHTS not in files:
        raise SpineAIError(f"{source}: the bundle has no {WEIGHTS}")
    network = build_network(card.get("network"))
    try:
        state = st_load(files[WEIGHTS])
    except (SafetensorError, ValueError) as exc:
        raise SpineAIError(f"{source}: {WEIGHTS} is unreadable ({exc})") from None
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SpineAIError(f"{source}: the weights do not fit the network the card describes: "
                           f"{str(exc).splitlines()[0]}") from None
    network.eval()
    return TorchBundle(card, network, source, sha256, verified)


MAX_SHIPPED_MB = 20  # a bundle inside the package; larger models are installed with ``spineai models install``


def ship_torch_bundle(bundle: str | os.PathLike, description, models_dir: Path | None = None,
                      registry: Path | None = None) -> dict:
    """Copy a trained bundle into the package (``resources/models/ID-VERSION.zip``) and pin its sha256
    in the bundled registry: what every training command's ``--ship`` does. ``description(card)``
    gives the registry's one-line summary (demonstration models say so in it)."""
    from spineai.bundlefile import sha256_file
    from spineai.models.build_bundled import write_registry
    from spineai.models.registry import BUNDLED_DIR, BUNDLED_REGISTRY

    files, source, _, _ = read_bundle(bundle)
    card = verify_files(files, source, {WEIGHTS})
    folder = Path(models_dir or BUNDLED_DIR)
    name = f"{card['id']}-{card['version']}.zip"
    staged = write_files(files, folder / f".staged-{name}", overwrite=True)
    size_mb = staged.stat().st_size / 2**20
    if size_mb > MAX_SHIPPED_MB:
        staged.unlink()
        raise SpineAIError(f"{name} would be {size_mb:.1f} MB: bundles shipped in the package stay under {MAX_SHIPPED_MB} MB")
    target = folder / name
    os.replace(staged, target)
    entry = {"id": card["id"], "version": card["version"], "task": card["task"], "url": name,
             "sha256": sha256_file(target), "demonstration": bool(card.get("demonstration"))}
    if "classes" in card:
        entry["classes"] = card["classes"]
    entry.update(description=description(card), engine_version=card["engine_version"])
    write_registry([entry], Path(registry or BUNDLED_REGISTRY))
    return entry

