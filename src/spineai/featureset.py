"""The 31 texture features the SD / MET / STB classifiers read, in their fixed order.

Order and families follow the original SD/MET study (LIFEx): GLCM 6, GLRLM 11, NGLDM 3 (PyRadiomics:
NGTDM), GLZLM 11 (PyRadiomics: GLSZM). Engine feature names are ``<pyradiomics class>_<feature>``.
``LIFEX_TO_ENGINE`` maps the study table's column names onto them; the values are *not*
interchangeable (different discretisation), so models record which definition they were trained on.
"""

from __future__ import annotations

FEATURE_CLASSES: dict[str, tuple[str, ...]] = {
    "glcm": ("Id", "JointEnergy", "Contrast", "Correlation", "JointEntropy", "DifferenceAverage"),
    "glrlm": (
        "ShortRunEmphasis", "LongRunEmphasis", "LowGrayLevelRunEmphasis", "HighGrayLevelRunEmphasis",
        "ShortRunLowGrayLevelEmphasis", "ShortRunHighGrayLevelEmphasis", "LongRunLowGrayLevelEmphasis",
        "LongRunHighGrayLevelEmphasis", "GrayLevelNonUniformity", "RunLengthNonUniformity", "RunPercentage",
    ),
    "ngtdm": ("Coarseness", "Contrast", "Busyness"),
    "glszm": (
        "SmallAreaEmphasis", "LargeAreaEmphasis", "LowGrayLevelZoneEmphasis", "HighGrayLevelZoneEmphasis",
        "SmallAreaLowGrayLevelEmphasis", "SmallAreaHighGrayLevelEmphasis", "LargeAreaLowGrayLevelEmphasis",
        "LargeAreaHighGrayLevelEmphasis", "GrayLevelNonUniformity", "SizeZoneNonUniformity", "ZonePercentage",
    ),
}

FEATURES_31: tuple[str, ...] = tuple(f"{cls}_{name}" for cls, names in FEATURE_CLASSES.items() for name in names)

LIFEX_31: tuple[str, ...] = (
    "GLCM_homogeneity", "GLCM_energy", "GLCM_contrast", "GLCM_correlation", "GLCM_entropy_log2",
    "GLCM_dissimilarity",
    "GLRLM_SRE", "GLRLM_LRE", "GLRLM_LGRE", "GLRLM_HGRE", "GLRLM_SRLGE", "GLRLM_SRHGE", "GLRLM_LRLGE",
    "GLRLM_LRHGE", "GLRLM_GLNU", "GLRLM_RLNU", "GLRLM_RP",
    "NGLDM_Coarseness", "NGLDM_Contrast", "NGLDM_Busyness",
    "GLZLM_SZE", "GLZLM_LZE", "GLZLM_LGZE", "GLZLM_HGZE", "GLZLM_SZLGE", "GLZLM_SZHGE", "GLZLM_LZLGE",
    "GLZLM_LZHGE", "GLZLM_GLNU", "GLZLM_ZLNU", "GLZLM_ZP",
)

LIFEX_TO_ENGINE: dict[str, str] = dict(zip(LIFEX_31, FEATURES_31))

# What a model card says about where its feature values come from.
DEFINITION_PYRADIOMICS = "spineai-pyradiomics"
DEFINITION_LIFEX = "lifex"

assert len(FEATURES_31) == 31 and len(LIFEX_31) == 31
