"""Image classifiers on ``spineai.deep``: lesion crops from MR volumes (``lesion``), generated
SD / MET / STB lesions on real anatomy (``lesion_data``), and the task-neutral pieces every image
classifier shares (``classifier``: network factory, training, evaluation, heatmaps on the source
geometry). torch and MONAI are imported only inside the functions that need them."""
