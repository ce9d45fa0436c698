"""Logic of the SpineAI (classify) module (no widgets): see logic.ClassifyLogic."""
