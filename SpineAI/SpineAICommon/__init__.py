"""Slicer-side helpers shared by the SpineAI modules: MRML <-> engine conversion (mrml), background
jobs (jobs, worker) and first-use dependency installation (dependencies).

Importing this package is cheap and imports neither Qt nor heavy packages.
"""
