"""Image classifiers (lesion MRI, radiographs) on spineai.deep."""
