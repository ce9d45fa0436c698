"""Logic of the SpineAILumbar module (no widgets): see logic.LumbarLogic."""
