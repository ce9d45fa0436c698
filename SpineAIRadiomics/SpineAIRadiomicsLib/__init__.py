"""Logic of the SpineAIRadiomics module (no widgets): see logic.RadiomicsLogic."""
