"""Python packages the engine needs inside Slicer: checked on first use, installed after asking once.

Rules (from SlicerTotalSegmentator's experience, whose issue tracker is full of broken torch installs):
- nothing is checked or installed at import time or in a constructor: only when the user first
  presses a button that needs the package;
- the user sees the list of what is missing and confirms once for all of it;
- torch is never pip-installed: it comes from the PyTorch extension (``PyTorchUtils``), which picks
  the build that matches the computer's GPU driver or a CPU build;
- packages Slicer already ships (numpy, SimpleITK, scipy) are only checked, not reinstalled.

The installer takes its interface functions (confirm, pip, progress, torch installer) as arguments,
so this file never touches widgets and the tests can drive it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from spineai.errors import SpineAIError


@dataclass(frozen=True)
class Requirement:
    module: str  # import name
    pip: Optional[str]  # pip requirement, None for torch (PyTorch extension)
    why: str


# What each task needs. PyPI's `pyradiomics` 3.1.0 does not build against numpy 2 (Slicer >= 5.9);
# `pyradiomics-bhklab` is the same `radiomics` package and builds.
REQUIREMENTS: dict[str, tuple[Requirement, ...]] = {
    "segment": (
        Requirement("SimpleITK", "SimpleITK>=2.3", "image filters for segmentation"),
        Requirement("scipy", "scipy>=1.11", "connected components and morphology"),
    ),
    "radiomics": (
        Requirement("SimpleITK", "SimpleITK>=2.3", "image I/O for PyRadiomics"),
        Requirement("radiomics", "pyradiomics-bhklab>=3.1.4", "the 31 radiomic features"),
    ),
    "classify": (
        Requirement("sklearn", "scikit-learn>=1.4", "linear / SVM / forest models"),
        Requirement("xgboost", "xgboost-cpu>=2.1", "gradient-boosted tree models"),
        Requirement("safetensors", "safetensors>=0.4", "model weights without pickle"),
    ),
    "deep": (
        Requirement("torch", None, "neural-network models (installed by the PyTorch extension)"),
    ),
}


def is_installed(module: str, finder: Callable[[str], object] = importlib.util.find_spec) -> bool:
    try:
        return finder(module) is not None
    except (ImportError, ValueError):
        return False


def missing(tasks: Iterable[str], finder: Callable[[str], object] = importlib.util.find_spec) -> list[Requirement]:
    """Requirements of ``tasks`` whose module cannot be imported, each listed once."""
    seen, out = set(), []
    for task in tasks:
        if task not in REQUIREMENTS:
            raise SpineAIError(f"unknown task {task!r}; known: {', '.join(REQUIREMENTS)}")
        for req in REQUIREMENTS[task]:
            if req.module not in seen and not is_installed(req.module, finder):
                seen.add(req.module)
                out.append(req)
    return out


def describe(requirements: list[Requirement]) -> str:
    return "\n".join(
        f"- {r.pip or 'PyTorch (through the PyTorch extension)'}: {r.why}" for r in requirements
    )


class DependencyInstaller:
    """Ensure packages for a task; asks once per session, then installs with progress.

    ``confirm(text, details) -> bool``, ``pip_install(requirement)``, ``progress(done, total, message)``
    and ``install_torch() -> module or None`` are supplied by the widget (Slicer dialogs,
    ``slicer.util.pip_install``, the progress bar, ``PyTorchUtils``).
    """

    def __init__(self, confirm, pip_install, progress=None, install_torch=None,
                 finder: Callable[[str], object] = importlib.util.find_spec):
        self.confirm, self.pip_install = confirm, pip_install
        self.progress = progress or (lambda done, total, message="": None)
        self.install_torch = install_torch
        self.finder = finder
        self.declined = False

    def ensure(self, *tasks: str) -> None:
        todo = missing(tasks, self.finder)
        if not todo:
            return
        if self.declined:
            raise SpineAIError("required Python packages are missing and installation was declined:\n" + describe(todo))
        text = ("SpineAI needs Python packages that are not installed yet. Installing needs a network "
                "connection and may take several minutes. Install them now?")
        if not self.confirm(text, describe(todo)):
            self.declined = True  # ask once: do not nag on every click
            raise SpineAIError("required Python packages are missing and installation was declined:\n" + describe(todo))
        for n, req in enumerate(todo):
            self.progress(n, len(todo), f"installing {req.pip or 'PyTorch'}")
            if req.pip is None:
                if self.install_torch is None or self.install_torch() is None:
                    raise SpineAIError(
                        "PyTorch is missing: install the 'PyTorch' extension from the Extensions Manager, "
                        "restart Slicer, then try again"
                    )
            else:
                self.pip_install(req.pip)
        self.progress(len(todo), len(todo), "packages installed")
        still = missing(tasks, self.finder)
        if still:
            raise SpineAIError("installation finished but these packages still cannot be imported "
                               "(restart Slicer and try again):\n" + describe(still))


def slicer_torch_installer(minimum_version: str = "2.0"):
    """A ``install_torch`` for DependencyInstaller that goes through the PyTorch extension."""

    def install():
        try:
            import PyTorchUtils  # provided by the PyTorch extension
        except ModuleNotFoundError:
            return None
        torch_logic = PyTorchUtils.PyTorchUtilsLogic()
        if torch_logic.torchInstalled():
            return torch_logic.torch
        # The user already confirmed the whole list once: do not ask a second time.
        return torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=f">={minimum_version}")

    return install


def slicer_dependency_installer(progress=None) -> DependencyInstaller:
    """The installer the module widgets use: Slicer's confirmation dialog, pip and PyTorchUtils."""
    import slicer

    return DependencyInstaller(
        confirm=lambda text, details: slicer.util.confirmOkCancelDisplay(
            text, "SpineAI: install Python packages", detailedText=details),
        pip_install=slicer.util.pip_install,
        progress=progress,
        install_torch=slicer_torch_installer(),
    )


def choose_device(force_cpu: bool, torch_module=None) -> str:
    """'cuda' when a usable GPU is there and the user did not force the CPU, else 'cpu'.

    Imports torch only when called (the caller has made sure it is installed).
    """
    if force_cpu:
        return "cpu"
    if torch_module is None:
        import torch as torch_module  # noqa: PLC0415 - only where torch is really used
    try:
        if torch_module.cuda.is_available():
            return "cuda"
        mps = getattr(getattr(torch_module, "backends", None), "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
    except Exception:  # noqa: BLE001 - a broken CUDA install must fall back, not crash
        pass
    return "cpu"
