"""Slicer's own Python framework, loaded over slicer-core without the Slicer application.

``../shared/slicer-harness`` (or the folder named by ``SPINEAI_SLICER_HARNESS``) holds unmodified
files from Slicer v5.10.0: ``ScriptedLoadableModule.py``, ``parameterNodeWrapper/`` and
``SampleData.py``. ``install()`` makes them importable as ``slicer.ScriptedLoadableModule``,
``slicer.parameterNodeWrapper`` and ``SampleData``, over the real MRML of slicer-core.

What is stood in for, because only the Qt application provides it:
- ``qt`` and ``ctk``: every class is a ``FakeWidget`` subclass made on first use (the parameter node
  wrapper compares widget types by identity, so one class per name); widgets keep their properties,
  PythonQt-style ``connect("signal()", slot)`` connections and ``signal.connect`` signals, and a
  test can ``emit`` a signal as a user would.
- ``slicer.i18n``: ``tr`` and ``translate`` return the text.
- the application objects the Qt layer creates: ``slicer.app`` (a ``FakeApplication``),
  ``slicer.modules`` and the Qt widget classes ``slicer.qMRML*`` / ``slicer.qSlicer*``.
Nothing of Slicer's own Python is rewritten: the module base classes, the parameter node
wrapper with its serializers, validators and GUI connectors, and SampleData run as shipped.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
HARNESS_VARIABLE = "SPINEAI_SLICER_HARNESS"
SLICER_VERSION_FOLDER = "slicer-5.10.0"


def harness_folder() -> Optional[Path]:
    """The harness folder, or None when it is absent (a user's clone)."""
    configured = os.environ.get(HARNESS_VARIABLE)
    folder = Path(configured) if configured else ROOT.parent / "shared" / "slicer-harness"
    marker = folder / SLICER_VERSION_FOLDER / "Base" / "Python" / "slicer" / "ScriptedLoadableModule.py"
    return folder if marker.is_file() else None


def missing_reason() -> str:
    return (f"Slicer's framework files are absent: set {HARNESS_VARIABLE} or put the harness at "
            f"{ROOT.parent / 'shared' / 'slicer-harness'} (see its README)")


# ---- qt / ctk ------------------------------------------------------------------------------

class Signal:
    """``widget.someSignal.connect(slot)`` / ``.disconnect(slot)`` / ``.emit(*args)``."""

    def __init__(self):
        self.slots = []

    def connect(self, slot):
        self.slots.append(slot)

    def disconnect(self, slot=None):
        self.slots = [] if slot is None else [s for s in self.slots if s != slot]

    def emit(self, *args):
        for slot in list(self.slots):
            call_slot(slot, args)


def call_slot(slot, args):
    """Call ``slot`` with as many of the signal's arguments as it takes, as PythonQt does."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return slot(*args)
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return slot(*args)
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return slot(*args[:len(positional)])


class _QtName(str):
    """A class-level Qt name: an enum value (qt.Qt.WaitCursor) or a static call that does nothing
    here (qt.QApplication.setOverrideCursor(...))."""

    def __call__(self, *args, **kwargs):
        return None


class _QtMeta(type):
    def __getattr__(cls, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return _QtName(name)


class FakeWidget(metaclass=_QtMeta):
    """One Qt object. Attributes hold Qt properties; names ending in a signal word are signals."""

    _SIGNAL_WORDS = ("Changed", "clicked", "toggled", "timeout", "triggered", "Edited")

    def __init__(self, *args, **kwargs):
        self._properties = {}
        self._connections = {}  # "clicked(bool)" -> [slots]
        self._signals = {}
        self._children = []
        self._items = []  # combo boxes: [(text, data)]
        self._currentNode = None
        self.enabled, self.visible, self.checked, self.currentIndex = True, True, False, -1
        self.text = args[0] if args and isinstance(args[0], str) else ""

    def __getattr__(self, name):
        if name.startswith("_") or not name.endswith(self._SIGNAL_WORDS) and name not in ("timeout",):
            raise AttributeError(f"{type(self).__name__} stand-in has no attribute {name!r}")
        return self._signals.setdefault(name, Signal())

    # PythonQt's string-signal connections
    def connect(self, signal, slot):
        self._connections.setdefault(signal.split("(")[0], []).append(slot)
        return True

    def disconnect(self, signal, slot=None):
        name = signal.split("(")[0]
        self._connections[name] = [s for s in self._connections.get(name, []) if slot is not None and s != slot]

    def emit(self, signal, *args):
        """What a user action does: call the string-connected slots and the signal's slots."""
        for slot in list(self._connections.get(signal, [])):
            call_slot(slot, args)
        if signal in self._signals:
            self._signals[signal].emit(*args)

    def property(self, name):
        return self._properties.get(name)

    def setProperty(self, name, value):
        self._properties[name] = value

    def isWidgetType(self):
        return False  # the parameter node wrapper then reads the ``ui`` namespace, as in Slicer

    def blockSignals(self, block):
        return False

    # layouts / containers
    def layout(self):
        return self

    def addWidget(self, widget, *args):
        self._children.append(widget)

    def setLayout(self, layout):
        pass

    def setMRMLScene(self, scene):
        self.mrmlScene = scene

    # node selectors
    def currentNode(self):
        return self._currentNode

    def setCurrentNode(self, node):
        self._currentNode = node

    def setPlaceMultipleMarkups(self, mode):
        self.placeMultipleMarkups = mode

    # spin boxes / sliders
    def setRange(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def setMinimum(self, minimum):
        self.minimum = minimum

    def setMaximum(self, maximum):
        self.maximum = maximum

    # combo boxes
    def clear(self):
        self._items, self.currentIndex = [], -1

    def addItem(self, text, data=None):
        self._items.append((text, data))
        if self.currentIndex < 0:
            self.currentIndex = 0

    def findData(self, data):
        return next((n for n, (_, d) in enumerate(self._items) if d == data), -1)

    def itemData(self, index):
        return self._items[index][1] if 0 <= index < len(self._items) else None

    def setCurrentIndex(self, index):
        self.currentIndex = index

    def count(self):
        return len(self._items)


class FakeTimer(FakeWidget):
    """``qt.QTimer``: started and stopped; a test fires it with ``fire()``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.active, self.interval = False, 0

    def setInterval(self, msec):
        self.interval = msec

    def start(self, *args):
        self.active = True

    def stop(self):
        self.active = False

    def isActive(self):
        return self.active

    def fire(self):
        if self.active:  # a stopped QTimer delivers nothing
            self.emit("timeout")

    @staticmethod
    def singleShot(msec, slot):
        slot()


class FakeSettings(FakeWidget):
    values: dict = {}

    def value(self, key, default=None):
        return self.values.get(key, default)

    def setValue(self, key, value):
        self.values[key] = value

    def contains(self, key):
        return key in self.values


def _qt_like_module(name: str, special: dict) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(special)
    classes = {}

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if attr not in classes:
            classes[attr] = _QtMeta(attr, (FakeWidget,), {"__module__": name})
        return classes[attr]

    module.__getattr__ = __getattr__
    return module


class FakeApplication(FakeWidget):
    """``slicer.app``: what the module code and the framework ask of the running application."""

    def __init__(self):
        super().__init__()
        self.applicationName = "Slicer"
        self.processEventsCalls = 0
        self.statusMessages = []
        self._moduleManager = FakeWidget()
        self._applicationLogic = None

    def processEvents(self, *args):
        self.processEventsCalls += 1

    def testingEnabled(self):
        return True  # message boxes then return their testing value instead of blocking

    def commandOptions(self):
        return types.SimpleNamespace(noMainWindow=True)

    def moduleManager(self):
        return self._moduleManager

    def topLevelWidgets(self):
        return []  # no main window: status-bar messages and dialogs have nowhere to go

    def layoutManager(self):
        return None  # no main window: no views to fit (slicer.util checks for None)


# ---- loading ---------------------------------------------------------------------------------

_installed: Optional[Path] = None


def install() -> Path:
    """Make Slicer's framework importable; returns the harness folder. Idempotent."""
    global _installed
    if _installed is not None:
        return _installed
    folder = harness_folder()
    if folder is None:
        raise FileNotFoundError(missing_reason())
    import slicer  # slicer-core

    if not hasattr(slicer, "vtkMRMLScene"):
        raise ImportError("the installed `slicer` package is not slicer-core (another package overwrote it)")
    sys.modules.setdefault("qt", _qt_like_module("qt", {"QTimer": FakeTimer, "QSettings": FakeSettings}))
    sys.modules.setdefault("ctk", _qt_like_module("ctk", {}))
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    sys.modules["slicer.i18n"] = i18n
    slicer.i18n = i18n
    qt = sys.modules["qt"]
    # Slicer's Qt widget classes (slicer.qMRML*, slicer.qSlicer*) that the framework and our .ui
    # files name: stand-ins like every other Qt class.
    sources = [*folder.rglob("*.py"), *ROOT.glob("SpineAI*/Resources/UI/*.ui"), *ROOT.glob("SpineAI*/SpineAI*.py")]
    names = {m for path in sources for m in re.findall(r"\b(?:slicer\.|class=\")(q(?:MRML|Slicer)\w+)", path.read_text(errors="replace"))}
    for widget_class in sorted(names):
        if not hasattr(slicer, widget_class):
            setattr(slicer, widget_class, getattr(qt, widget_class))
    slicer.app = FakeApplication()
    slicer.modules = types.SimpleNamespace()
    base = folder / SLICER_VERSION_FOLDER / "Base" / "Python" / "slicer"
    if str(base) not in slicer.__path__:
        slicer.__path__.insert(0, str(base))
    sample_data = folder / SLICER_VERSION_FOLDER / "Modules" / "Scripted" / "SampleData"
    if str(sample_data) not in sys.path:
        sys.path.insert(0, str(sample_data))
    import slicer.ScriptedLoadableModule  # noqa: F401 - from the harness, not a stand-in
    import slicer.parameterNodeWrapper  # noqa: F401

    assert Path(slicer.ScriptedLoadableModule.__file__).resolve().is_relative_to(folder.resolve())
    _installed = folder
    return folder


def module_parent(module_name: str, module_file: str):
    """The qSlicerScriptedLoadableModule that Slicer passes to a module class (and lists in
    ``slicer.modules``, where ``slicer.util.modulePath`` finds it)."""
    import slicer

    parent = types.SimpleNamespace(path=module_file, isEntered=False)
    setattr(slicer.modules, module_name.lower(), parent)
    return parent


def load_ui(path):
    """``slicer.util.loadUI``: a top widget whose children are the .ui's named widgets, with their
    Qt classes from the stand-in modules and their dynamic properties (SlicerParameterName...)."""
    import ctk
    import qt

    import slicer

    root = ET.parse(path).getroot()
    top = None
    for element in root.iter("widget"):
        cls_name = element.get("class")
        source = slicer if cls_name.startswith("qMRML") or cls_name.startswith("qSlicer") else ctk if cls_name.startswith("ctk") else qt
        widget = getattr(source, cls_name)()
        widget.objectName = element.get("name")
        for prop in element.findall("property"):
            value = prop.find("string")
            if value is not None:
                widget.setProperty(prop.get("name"), value.text)
        if top is None:
            top = widget
        else:
            top._children.append(widget)
    return top


def child_widget_variables(widget):
    """``slicer.util.childWidgetVariables``: a namespace of the named children."""
    return types.SimpleNamespace(**{child.objectName: child for child in widget._children})
