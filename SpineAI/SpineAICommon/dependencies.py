"""Python packages the engine needs inside Slicer: checked on first use, installed after asking once.

Rules (from SlicerTotalSegmentator's experience, whose issue tracker is full of broken torch installs):
- nothing is checked or installed at import time or in a constructor: only when the user first
  presses a button that needs the package;
- the user sees the list of what is missing and confirms once for all of it;
- packages without wheels for every platform are never pip-installed: torch comes from the PyTorch
  extension (``PyTorchUtils``, which picks the build for the computer's GPU driver or a CPU build),
  PyRadiomics from the SlicerRadiomics extension (built on the Slicer factory for every platform;
  ``pyradiomics-bhklab`` on PyPI is a source package that needs a C compiler);
- the XGBoost package is chosen per platform: ``xgboost-cpu`` (6 MB, no 350 MB NCCL library) where
  it has wheels (Linux, Windows), ``xgboost`` on macOS;
- packages Slicer already ships (numpy, SimpleITK, scipy) are only checked, not reinstalled;
- every failure ends in a dialog that says what failed and what to do.

The installer takes its interface functions (confirm, pip, progress, report, torch installer) as
arguments, so this file never touches widgets and the tests can drive it. scripts/check_wheels.py
checks that every pip requirement here has a wheel for each platform and Python that Slicer ships.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from spineai.errors import SpineAIError

PLATFORMS = ("linux", "win32", "darwin")  # as sys.platform names them


@dataclass(frozen=True)
class Requirement:
    module: str  # import name
    pip: Optional[str]  # pip requirement; None when a Slicer extension provides the module
    why: str
    extension: Optional[str] = None  # the Slicer extension that provides it
    pip_options: str = ""  # e.g. --no-deps: MONAI's own torch requirement would pull a multi-GB CUDA build

    def label(self) -> str:
        return self.pip or f"{self.module} (from the {self.extension} extension)"


class DependencyError(SpineAIError):
    """A package could not be installed; the message says what to do."""


def platform_key(platform: str = sys.platform) -> str:
    if platform.startswith("win"):
        return "win32"
    return "darwin" if platform == "darwin" else "linux"


def xgboost_requirement(platform: str = sys.platform) -> str:
    # xgboost-cpu has wheels for manylinux and win_amd64 only; on Linux plain xgboost pulls NCCL.
    return "xgboost>=2.1" if platform_key(platform) == "darwin" else "xgboost-cpu>=2.1"


def requirements(platform: str = sys.platform) -> dict[str, tuple[Requirement, ...]]:
    """What each task needs on ``platform``."""
    simpleitk = Requirement("SimpleITK", "SimpleITK>=2.3", "image filters and I/O")
    return {
        "segment": (simpleitk, Requirement("scipy", "scipy>=1.11", "connected components and morphology")),
        "radiomics": (simpleitk, Requirement("radiomics", None, "the 31 radiomic features (PyRadiomics)",
                                             extension="SlicerRadiomics")),
        "classify": (
            Requirement("sklearn", "scikit-learn>=1.4", "linear / SVM / forest models"),
            Requirement("xgboost", xgboost_requirement(platform), "gradient-boosted tree models"),
            Requirement("safetensors", "safetensors>=0.4", "model weights without pickle"),
        ),
        # torch first, from the PyTorch extension (the build for this computer's GPU driver); then MONAI
        # without its dependencies, so that pip never replaces that torch.
        "deep": (Requirement("torch", None, "neural-network models", extension="PyTorch"),
                 Requirement("monai", "monai>=1.4", "network architectures, transforms and Grad-CAM (MONAI)",
                             pip_options="--no-deps"),
                 Requirement("einops", "einops>=0.7", "tensor reshaping for MONAI's vision transformer"),
                 Requirement("safetensors", "safetensors>=0.4", "model weights without pickle")),
    }


def is_installed(module: str, finder: Callable[[str], object] = importlib.util.find_spec) -> bool:
    try:
        return finder(module) is not None
    except (ImportError, ValueError):
        return False


def missing(tasks: Iterable[str], finder: Callable[[str], object] = importlib.util.find_spec,
            platform: str = sys.platform) -> list[Requirement]:
    """Requirements of ``tasks`` whose module cannot be imported, each listed once."""
    table = requirements(platform)
    seen, out = set(), []
    for task in tasks:
        if task not in table:
            raise SpineAIError(f"unknown task {task!r}; known: {', '.join(table)}")
        for req in table[task]:
            if req.module not in seen and not is_installed(req.module, finder):
                seen.add(req.module)
                out.append(req)
    return out


def describe(requirements: list[Requirement]) -> str:
    return "\n".join(f"- {r.label()}: {r.why}" for r in requirements)


def _extension_advice(extension: str) -> str:
    return (f"install the '{extension}' extension from the Extensions Manager (View > Extensions Manager), "
            "restart Slicer, then try again")


class DependencyInstaller:
    """Ensure packages for a task; asks once per session, then installs with progress.

    ``confirm(text, details) -> bool``, ``pip_install(requirement)``, ``progress(done, total, message)``,
    ``report(text, details)`` (the failure dialog) and ``install_torch() -> module or None`` are
    supplied by the widget (Slicer dialogs, ``slicer.util.pip_install``, the progress bar,
    ``PyTorchUtils``).
    """

    def __init__(self, confirm, pip_install, progress=None, install_torch=None,
                 finder: Callable[[str], object] = importlib.util.find_spec, report=None,
                 platform: str = sys.platform):
        self.confirm, self.pip_install = confirm, pip_install
        self.progress = progress or (lambda done, total, message="": None)
        self.install_torch = install_torch
        self.finder = finder
        self.report = report or (lambda text, details: None)
        self.platform = platform
        self.declined = False

    def _fail(self, text: str, details: str = "") -> None:
        self.report(text, details)
        raise DependencyError(text + (f"\n{details}" if details else ""))

    def ensure(self, *tasks: str) -> None:
        todo = missing(tasks, self.finder, self.platform)
        if not todo:
            return
        # What no pip can provide comes from another extension: say which, before asking anything.
        for req in todo:
            if req.extension and not (req.extension == "PyTorch" and self.install_torch is not None):
                self._fail(f"SpineAI needs {req.module} ({req.why}), which the {req.extension} extension "
                           f"provides: {_extension_advice(req.extension)}.")
        if self.declined:
            raise SpineAIError("required Python packages are missing and installation was declined:\n" + describe(todo))
        text = ("SpineAI needs Python packages that are not installed yet. Installing needs a network "
                "connection and may take several minutes. Install them now?")
        if not self.confirm(text, describe(todo)):
            self.declined = True  # ask once: do not nag on every click
            raise SpineAIError("required Python packages are missing and installation was declined:\n" + describe(todo))
        for n, req in enumerate(todo):
            self.progress(n, len(todo), f"installing {req.label()}")
            if req.pip is None:
                if self.install_torch() is None:
                    self._fail(f"PyTorch is missing: {_extension_advice('PyTorch')}.")
                continue
            try:
                self.pip_install(f"{req.pip} {req.pip_options}".strip())
            except Exception as exc:  # noqa: BLE001 - CalledProcessError, OSError, ...: all end in the dialog
                done = ", ".join(r.label() for r in todo[:n]) or "nothing"
                output = getattr(exc, "output", None) or getattr(exc, "stderr", None) or ""
                self._fail(
                    f"Installing {req.pip} failed ({type(exc).__name__}: {exc}). Installed before it: {done}. "
                    "What to do: check the network connection (and proxy settings), then press the button "
                    "again; on a computer without internet access, download the wheel elsewhere and install "
                    f"it in the Python console with slicer.util.pip_install('path/to/file.whl').",
                    str(output))
        self.progress(len(todo), len(todo), "packages installed")
        still = missing(tasks, self.finder, self.platform)
        if still:
            self._fail("Installation finished but these packages still cannot be imported. What to do: "
                       "restart Slicer and try again.", describe(still))


def slicer_torch_installer(minimum_version: str = "2.4"):  # MONAI 1.4+ needs torch 2.4
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
        report=lambda text, details: slicer.util.errorDisplay(
            text, windowTitle="SpineAI: a Python package could not be installed", detailedText=details or None),
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
