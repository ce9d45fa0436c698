"""SpineAI engine: spine lesion segmentation, radiomics and classification.

Plain Python, no Slicer imports. Heavy packages (torch, MONAI) are imported only inside the
functions that need them, so `import spineai` and the segment / features commands start fast.

Research software, not a medical device.
"""

__version__ = "0.1.0"

RESEARCH_USE_NOTICE = (
    "SpineAI is research software, not a medical device: do not use its output for diagnosis."
)

from spineai.errors import SpineAIError  # noqa: E402

__all__ = ["__version__", "RESEARCH_USE_NOTICE", "SpineAIError"]
