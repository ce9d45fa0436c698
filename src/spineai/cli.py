"""The ``spineai`` command line: thin wrappers over the engine functions.

Each command imports what it needs when it runs, so ``spineai segment`` and ``spineai features``
never pay for torch or MONAI.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

from spineai import RESEARCH_USE_NOTICE, __version__
from spineai.errors import SpineAIError, SpineAIWarning
from spineai.deep.training import add_training_arguments


def _triple(text: str) -> tuple[float, float, float]:
    parts = text.replace(" ", "").split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers X,Y,Z, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers X,Y,Z, got {text!r}")
    return values


def cmd_segment(args) -> int:
    import time

    from spineai.image import read_volume, seed_to_index, write_volume, check_output_path
    from spineai.segment import segment

    check_output_path(args.out, args.overwrite, inputs=[args.image, args.within])  # refuse before any work
    image = read_volume(args.image)
    space = "ijk" if args.ijk else "ras"
    seed = seed_to_index(image, args.seed, space)
    adds = [seed_to_index(image, p, space) for p in args.add_point]
    removes = [seed_to_index(image, p, space) for p in args.remove_point]
    within = read_volume(args.within) if args.within else None
    if args.within_label is not None and within is None:
        raise SpineAIError("--within-label needs --within LABELMAP")
    details: dict = {}
    start = time.perf_counter()
    mask = segment(image, seed, mode=args.mode, within=within, within_label=args.within_label, method=args.method,
                   add_points=adds, remove_points=removes, device=args.device, model=args.model, details=details)
    seconds = time.perf_counter() - start
    write_volume(mask, args.out, overwrite=args.overwrite)
    n = int(mask.array.sum())
    ml = n * image.spacing[0] * image.spacing[1] * image.spacing[2] / 1000.0
    how = details["method"] + (f" ({details['model']} on {details['device']})" if details.get("device") else "")
    print(f"{args.mode} mask: {n} voxels, {ml:.2f} mL, seed voxel (i, j, k) = {seed} -> {args.out}")
    print(f"method: {how}, {seconds:.2f} s" + ("" if args.method != "auto" else f" [auto: {details['method_reason']}]"))
    return 0


def cmd_train_segmentation(args) -> int:
    from spineai.deep.training import report_training
    from spineai.progress import TextProgress
    from spineai.segment.body_training import ship_bundle, train_and_bundle

    summary = train_and_bundle(args.data, args.out, steps=args.steps, batch=args.batch, seed=args.seed, lr=args.lr,
                               workers=args.workers,
                               max_minutes=args.max_minutes, device=args.device, resume=not args.restart,
                               progress=TextProgress("train"), command="spineai " + " ".join(sys.argv[1:]))
    return report_training(summary, ship_bundle if args.ship else None)


# ---- lumbar disc levels (issue 14L) ----
def cmd_lumbar_levels(args) -> int:
    from spineai.image import read_volume
    from spineai.lumbar.levels import locate_levels

    result = locate_levels(read_volume(args.image), device=args.device, model=args.model)
    lps_to_ras = lambda p: [round(-p[0], 2), round(-p[1], 2), round(p[2], 2)]  # noqa: E731
    out = {"discs_lps": {k: [round(v, 2) for v in p] for k, p in result.discs.items()},
           "discs_ras": {k: lps_to_ras(p) for k, p in result.discs.items()},
           "bodies_lps": {k: [round(v, 2) for v in p] for k, p in result.body_points().items()},
           "model": result.model, "device": result.device, "seconds": round(result.timings["total"], 3)}
    text = json.dumps(out, indent=2)
    if args.out:
        from spineai.image import check_output_path

        check_output_path(args.out, args.overwrite, inputs=[args.image])
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def cmd_train_lumbar_levels(args) -> int:
    from spineai.deep.training import report_training
    from spineai.lumbar.levels_training import ship_levels_bundle, train_and_bundle
    from spineai.progress import TextProgress

    summary = train_and_bundle(args.data, args.out, steps=args.steps, batch=args.batch, seed=args.seed, lr=args.lr,
                               max_minutes=args.max_minutes, device=args.device, resume=not args.restart,
                               progress=TextProgress("train"), command="spineai " + " ".join(sys.argv[1:]))
    return report_training(summary, ship_levels_bundle if args.ship else None)


def _add_lumbar_levels_commands(sub, device_choices) -> None:
    from spineai.lumbar.levels_training import TRAIN_DEFAULTS as LEVELS_DEFAULTS

    p = sub.add_parser("lumbar-levels", help="find and name the lumbar discs (L1/L2 to L5/S1) on an MR volume",
                       description="Print (and with --out write) the disc and body positions as JSON, in LPS and RAS mm.")
    p.add_argument("image", help="NIfTI / NRRD / MetaImage file, or a folder with one DICOM series (sagittal or 3D)")
    p.add_argument("--device", choices=device_choices, default=None)
    p.add_argument("--model", default=None, help="lumbar-levels bundle (path or registry id; default the shipped one)")
    p.add_argument("--out", help="JSON file to write")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_lumbar_levels)

    p = sub.add_parser("train-lumbar-levels", help="train the lumbar disc-level locator on labelled bodies",
                       description="Train (or resume) the level locator on folders of CASE_img.nii.gz + "
                                   "CASE_bodies.nii.gz (e.g. spine-mr-bodies), validate it on held-out cases and "
                                   "write a model bundle with its card, log and validation tables.")
    p.add_argument("data", help="folder of CASE_img.nii.gz / CASE_bodies.nii.gz pairs")
    p.add_argument("--out", required=True, help="run folder: checkpoint, log, tables, and the bundle in OUT/model")
    add_training_arguments(p, LEVELS_DEFAULTS)
    p.set_defaults(func=cmd_train_lumbar_levels)
# ---- end lumbar disc levels ----


def cmd_features(args) -> int:
    from spineai.image import read_volume, check_output_path
    from spineai.radiomics import extract_features, write_features_csv

    check_output_path(args.out, args.overwrite, inputs=[args.image, args.mask, args.params])
    image = read_volume(args.image)
    mask = read_volume(args.mask)
    result = extract_features(image, mask, label=args.label, params=args.params)
    write_features_csv([result], args.out, overwrite=args.overwrite, ids=[args.id] if args.id else None)
    print(f"{len(result.values)} features from {result.provenance.get('voxel_count', '?')} voxels -> {args.out}")
    return 0


def cmd_cohort(args) -> int:
    import contextlib

    from spineai.cohort import CohortDB, output_lock, parse_steps, progress_path, read_manifest, run_cohort
    from spineai.cohort.export import cohort_rows, write_table
    from spineai.cohort.store import remove_database
    from spineai.image import check_output_path
    from spineai.progress import TextProgress

    if not args.db and not args.out:
        raise SpineAIError("give --db RESULTS.sqlite (the cohort database) and / or --out TABLE.csv|.parquet")
    steps = parse_steps(args.steps)
    if "classify" in steps and not args.model:
        args.model = "spineai-demo-phantom"
        print("classify: no --model given, using spineai-demo-phantom: a DEMONSTRATION model trained on synthetic "
              "phantoms, whose output means nothing about real patients", file=sys.stderr)
    cases = read_manifest(args.manifest, args.label_column)
    inputs = [args.manifest, args.params, *(c.image for c in cases), *(c.mask for c in cases if c.mask)]
    if args.out:
        check_output_path(args.out, args.overwrite, inputs=inputs)
    db_path = Path(args.db) if args.db else progress_path(args.out)
    from spineai.output import refuse_input_as_output

    refuse_input_as_output(db_path, inputs)
    with contextlib.ExitStack() as stack:
        stack.enter_context(output_lock(db_path))
        if args.out:
            stack.enter_context(output_lock(args.out))
        if args.overwrite and not args.db:
            remove_database(db_path)  # the progress of an earlier run on this --out: start again
        db = stack.enter_context(CohortDB(db_path))

        def started(to_run: int, done: int) -> None:
            if done:
                print(f"resuming: {done} of {len(cases)} cases were finished by an earlier run ({db_path.name})")

        summary = run_cohort(db, cases, steps, args.params, args.model, args.workers, args.dask,
                             TextProgress("cohort", eta=True), started, manifest=str(args.manifest),
                             image_model=args.image_model)
        for cid, step, message in summary.failed:
            print(f"{'skipped' if args.skip_failures else 'failed'} {cid}: {message}" +
                  ("" if step == "features" else f" (step {step})"), file=sys.stderr)
        computed = summary.done + len(summary.failed)
        rate = f", {60 * computed / summary.seconds:.1f} cases/min" if computed and summary.seconds > 0 else ""
        where = "in this process" if summary.executor == "inline" else (
            f"on {summary.workers} Dask worker threads" if args.dask else f"in {summary.workers} worker processes")
        print(f"{computed} cases computed {where} in {summary.seconds:.1f} s{rate}; {summary.already_done} already done; "
              f"{len(summary.failed)} failed" + (f"; database {db_path}" if args.db else ""))
        if summary.failed and not args.skip_failures:
            cid, _, message = summary.failed[0]
            raise SpineAIError(f"{len(summary.failed)} case(s) failed (first: case {cid}: {message}); their errors are "
                               f"recorded and the other cases are saved in {db_path}: fix the cases and rerun, or pass "
                               f"--skip-failures to {'export without them' if args.out else 'accept them'}")
        if args.out:
            columns, rows = cohort_rows(db, steps, [c.id for c in cases], args.label_column)
            if not rows:
                raise SpineAIError(f"every one of the {len(cases)} cases failed; nothing written")
            write_table(columns, rows, args.out, overwrite=args.overwrite)
            print(f"{len(rows)} of {len(cases)} cases -> {args.out}" +
                  (f" ({len(summary.failed)} skipped)" if summary.failed else ""))
    if args.out and not args.db:
        remove_database(db_path)  # the run is complete and exported: its progress is no longer needed
    return 0


def cmd_fuse(args) -> int:
    from spineai.cohort.fusion import fusion_data, run_fusion, write_fusion_report
    from spineai.featureset import FEATURES_31
    from spineai.models.estimators import MODEL_NAMES
    from spineai.models.tables import Table, read_table
    from spineai.output import refuse_existing, write_output_folder
    from spineai.progress import TextProgress

    out = refuse_existing(args.out, args.overwrite, inputs=[args.table])
    if args.imaging_model not in MODEL_NAMES:
        raise SpineAIError(f"unknown --imaging-model {args.imaging_model!r}: choose from {', '.join(MODEL_NAMES)}")
    clinical = [c for c in (args.clinical or "").split(",") if c]
    if str(args.table).endswith((".sqlite", ".db")):
        from spineai.cohort import CohortDB
        from spineai.cohort.export import cohort_rows

        if not Path(args.table).is_file():
            raise SpineAIError(f"no such cohort database: {args.table}")
        with CohortDB(args.table) as db:
            columns, rows = cohort_rows(db, ["features"], label_column=args.label_column)
            if not clinical:
                clinical = sorted({k for cid in db.case_ids() for k in json.loads(db.case_row(cid)["clinical"] or "{}")})
        table = Table(columns, [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows], str(args.table))
    else:
        table = read_table(args.table)
    features = [c for c in (args.imaging_features or "").split(",") if c]
    if not features and not args.imaging_probability:
        if not all(f in table.columns for f in FEATURES_31):
            raise SpineAIError("give the imaging branch: --imaging-features COLUMNS (default: SpineAI's 31 radiomic "
                               "features, absent here) or --imaging-probability COLUMN")
        features = list(FEATURES_31)
    data = fusion_data(table, args.label_column, clinical, features, args.imaging_probability, args.group_column,
                       args.positive)
    result = run_fusion(data, args.imaging_model, args.folds, args.seed, args.bootstrap, TextProgress("fuse"))
    write_output_folder(out, lambda tmp: write_fusion_report(tmp, result, data, Path(args.table).name), args.overwrite,
                        inputs=[args.table])
    print(f"{result['folds']}-fold cross-validation, {result['n_cases']} cases of {result['n_patients']} patients "
          f"(AUROC / AUPRC, 95 % CI):")
    for name, m in result["cv"]["scores"].items():
        print(f"  {name:32s} {m['auroc']['value']:.3f} [{m['auroc']['ci_low']:.3f}, {m['auroc']['ci_high']:.3f}]  "
              f"{m['auprc']['value']:.3f} [{m['auprc']['ci_low']:.3f}, {m['auprc']['ci_high']:.3f}]")
    print(f"report -> {out / 'report.html'}")
    return 0


def cmd_demo(args) -> int:
    from spineai.demo import run_demo
    from spineai.progress import TextProgress

    summary = run_demo(args.out, overwrite=args.overwrite, seed=args.seed, kind=args.kind,
                       progress=TextProgress("demo"))
    print(summary)
    return 0


def cmd_classify_image(args) -> int:
    from spineai.image import check_output_path, read_volume
    from spineai.imaging.lesion import OUTPUTS, classify_lesion, write_outputs

    for name in OUTPUTS.values():  # refuse before any work
        check_output_path(Path(args.out) / name, args.overwrite, inputs=[args.image, args.mask])
    image = read_volume(args.image)
    mask = read_volume(args.mask) if args.mask else None
    result = classify_lesion(image, mask=mask, seed=args.seed, model=args.bundle, method=args.method,
                             device=args.device, seed_space="ijk" if args.ijk else "ras")
    paths = write_outputs(result, image, args.out, args.overwrite)
    if result.demonstration:
        print(result.notice)
    print(f"{result.predicted}: " + ", ".join(f"{c} {p:.3f}" for c, p in result.probabilities.items())
          + f" ({result.model})")
    print(f"{result.method} heatmap on the image's geometry -> {paths['heatmap']}; overlay -> {paths['overlay']}; "
          f"probabilities -> {paths['probabilities']}")
    return 0


def cmd_train_image_classifier(args) -> int:
    from spineai.deep.training import report_training
    from spineai.imaging.lesion_training import ship_bundle, train_demo_model
    from spineai.progress import TextProgress

    if args.ship and args.manifest:
        raise SpineAIError("--ship puts the demonstration model into the package; your own model stays in --out")
    common = dict(backbone=args.backbone, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                  init_weights=args.init_weights, freeze_steps=args.freeze_steps,
                  max_minutes=args.max_minutes, device=args.device, resume=not args.restart,
                  progress=TextProgress("train"), command="spineai " + " ".join(sys.argv[1:]))
    if args.manifest:
        from spineai.imaging.lesion_training import train_from_manifest

        summary = train_from_manifest(args.manifest, args.out, model_id=args.model_id, **common)
    elif args.data:
        summary = train_demo_model(args.data, args.out, per_class=args.per_class, **common)
    else:
        raise SpineAIError("give DATA (a spine-mr-bodies folder, for the demonstration model) or --manifest CSV")
    demonstration = summary["stopped"] != "paused" and summary["card"]["demonstration"]
    return report_training(summary, ship_bundle if args.ship else None,
                           kind="DEMONSTRATION bundle" if demonstration else "bundle")


# Commands defined here; the classifier commands come from spineai.models (bundles, registry, HTTP),
# which a run of one of these never needs to import.
ENGINE_COMMANDS = ("segment", "features", "cohort", "demo", "lumbar", "classify-image", "train-image-classifier")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the arguments to parse, only what they need (see ENGINE_COMMANDS)."""
    from spineai.deep.device import DEVICE_CHOICES
    from spineai.radiomics import DEFAULT_PARAMETER_SET
    from spineai.segment import METHODS, SEGMENTATION_MODES
    from spineai.segment.body_training import TRAIN_DEFAULTS

    parser = argparse.ArgumentParser(
        prog="spineai",
        description="Spine lesion segmentation, radiomics and classification. " + RESEARCH_USE_NOTICE,
    )
    parser.add_argument("--version", action="version", version=f"spineai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("segment", help="segment the lesion or vertebral body around a seed point",
                       description="Segment the lesion (default) or the vertebral body holding a seed. "
                                   "Negative coordinates: write --seed=-12.5,30,4.")
    p.add_argument("image", help="NIfTI / NRRD / MetaImage file, or a folder with one DICOM series")
    p.add_argument("--seed", required=True, type=_triple, metavar="X,Y,Z",
                   help="seed point in RAS millimetres (as Slicer's markups), or voxel indices with --ijk")
    p.add_argument("--ijk", action="store_true", help="the seed is a voxel index (i, j, k), not RAS")
    p.add_argument("--mode", choices=SEGMENTATION_MODES, default="lesion")
    p.add_argument("--within", metavar="LABELMAP",
                   help="label map (e.g. TotalSegmentator vertebrae) that bounds the result; same geometry")
    p.add_argument("--within-label", type=int, metavar="N",
                   help="label of --within to stay inside (default: the label under the seed)")
    p.add_argument("--method", choices=METHODS, default="auto",
                   help="vertebral bodies: learned 3D U-Net (deep), level set (classic), or deep when torch and "
                        "its model are available (auto, default); lesions are always classic")
    p.add_argument("--add-point", type=_triple, action="append", default=[], metavar="X,Y,Z",
                   help="corrective click inside the body that the mask missed (deep; repeatable)")
    p.add_argument("--remove-point", type=_triple, action="append", default=[], metavar="X,Y,Z",
                   help="corrective click outside the body that the mask took in (deep; repeatable)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default=None,
                   help="where the learned model runs: auto (CUDA when present, default), cpu, cuda")
    p.add_argument("--model", default=None, help="click-segmentation bundle (path or registry id; default the shipped one)")
    p.add_argument("--out", required=True, help="mask file to write (same geometry as the image)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("train-segmentation", help="train the learned vertebral-body click model",
                       description="Train (or resume) the click-prompted vertebral-body U-Net on folders of "
                                   "CASE_img.nii.gz + CASE_bodies.nii.gz, validate it on held-out cases and write "
                                   "a model bundle with its card, training log and overlay pictures.")
    p.add_argument("data", help="folder of CASE_img.nii.gz / CASE_bodies.nii.gz pairs (e.g. spine-mr-bodies)")
    p.add_argument("--out", required=True, help="run folder: checkpoint, log, pictures, and the bundle in OUT/model")
    add_training_arguments(p, TRAIN_DEFAULTS)
    p.set_defaults(func=cmd_train_segmentation)

    p = sub.add_parser("features", help="extract the 31 radiomic features of a masked lesion")
    p.add_argument("image")
    p.add_argument("mask", help="mask or label map with the image's geometry")
    p.add_argument("--label", type=int, default=1, help="label value of the lesion in MASK (default 1)")
    p.add_argument("--params", default=DEFAULT_PARAMETER_SET,
                   help=f"named parameter set or a PyRadiomics parameter file (default {DEFAULT_PARAMETER_SET})")
    p.add_argument("--id", help="case identifier written in the first column")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("cohort", help="run segmentation, features and classification over a cohort manifest",
                       description="MANIFEST is a CSV with columns id, image, and mask or seed (RAS mm), optionally "
                                   "patient_id, label (the mask's label value), the class label column and clinical "
                                   "columns; relative paths are read from the manifest's folder. Every result goes to "
                                   "the SQLite database (--db), case by case: a rerun resumes; --out exports one "
                                   "row per finished case (.csv, or .parquet with pyarrow).")
    p.add_argument("manifest")
    p.add_argument("--steps", default="features",
                   help="comma-separated: segment, features, classify, classify-image (default features)")
    p.add_argument("--db", help="cohort database (SQLite) to create or resume; without it, --out keeps its progress "
                                "in OUT.progress.sqlite until the export succeeds")
    p.add_argument("--out", help="table to export: .csv or .parquet, one row per case that finished every step")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: the CPU cores available; 1 runs in this process)")
    p.add_argument("--dask", metavar="tcp://HOST:PORT", help="run on this dask.distributed scheduler instead")
    p.add_argument("--params", default=DEFAULT_PARAMETER_SET)
    p.add_argument("--model", help="classify: model bundle (path or registry id; default the demonstration model)")
    p.add_argument("--image-model", help="classify-image: lesion image model (path or registry id; default the "
                                         "demonstration model spineai-lesion-demo)")
    p.add_argument("--label-column", default="diagnosis", help="the manifest's class label column (default diagnosis)")
    p.add_argument("--skip-failures", action="store_true",
                   help="export without the failing cases and exit 0 (they are recorded with their errors either way)")
    p.add_argument("--overwrite", action="store_true", help="replace --out; without --db also restart its progress")
    p.set_defaults(func=cmd_cohort)

    p = sub.add_parser("fuse", help="late fusion of an imaging branch and clinical data, with a report",
                       description="TABLE (CSV / XLSX, or a cohort database .sqlite) holds one row per case: the label, "
                                   "a patient column, clinical columns, and imaging features or out-of-fold imaging "
                                   "probabilities. Reports imaging-only, clinical-only and fused side by side.")
    p.add_argument("table")
    p.add_argument("--label-column", default="diagnosis")
    p.add_argument("--positive", help="the class predicted against the rest (needed with more than two classes)")
    p.add_argument("--clinical", help="comma-separated clinical columns (a cohort database: its manifest's by default)")
    p.add_argument("--imaging-features", help="comma-separated imaging feature columns (default the 31 radiomic ones)")
    p.add_argument("--imaging-probability", metavar="COLUMN",
                   help="instead: out-of-fold probabilities of any SpineAI model (e.g. an image classifier's CV)")
    p.add_argument("--imaging-model", default="logreg", help="radiomic model of the imaging branch (default logreg)")
    p.add_argument("--group-column", help="patient column (default patient_id / patient / PatientID when present)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_fuse)

    p = sub.add_parser("demo", help="run the whole pipeline on a generated spine phantom")
    p.add_argument("--out", default="spineai-demo", help="output folder (default ./spineai-demo)")
    p.add_argument("--seed", type=int, default=0, help="phantom random seed")
    p.add_argument("--kind", choices=("SD", "MET", "STB"), default="MET", help="kind of phantom lesion")
    p.add_argument("--overwrite", action="store_true", help="replace files in --out")
    p.set_defaults(func=cmd_demo)

    _add_image_commands(sub, DEVICE_CHOICES)

    _add_lumbar_levels_commands(sub, DEVICE_CHOICES)

    if not (argv and argv[0] in ENGINE_COMMANDS and argv[0] != "lumbar"):
        from spineai.lumbar.cli import add_commands as add_lumbar_commands

        add_lumbar_commands(sub)

    if not (argv and argv[0] in ENGINE_COMMANDS):
        from spineai.models.cli import add_commands

        add_commands(sub)
    # Scoliosis radiographs (issue 16)
    from spineai.imaging.radiograph_cli import add_radiograph_commands

    add_radiograph_commands(sub)
    return parser


def _add_image_commands(sub, device_choices) -> None:
    """The image-classifier commands (issue 13)."""
    from spineai.imaging.classifier import BACKBONES
    from spineai.imaging.lesion_training import DEFAULTS

    p = sub.add_parser("classify-image", help="classify a lesion from its MR image, with a Grad-CAM heatmap",
                       description="Crop the lesion (given by a mask or a seed point), classify it with an image "
                                   "model bundle and write probabilities.json, heatmap.nii.gz (on the image's "
                                   "geometry) and heatmap_overlay.png into --out. Negative coordinates: "
                                   "--seed=-12.5,30,4.")
    p.add_argument("bundle", help="image model bundle: a path or a registry id (e.g. spineai-lesion-demo)")
    p.add_argument("image", help="NIfTI / NRRD / MetaImage file, or a folder with one DICOM series")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--mask", help="lesion mask with the image's geometry (the crop is centred on its centroid)")
    where.add_argument("--seed", type=_triple, metavar="X,Y,Z",
                       help="a point in the lesion, RAS millimetres (or voxel indices with --ijk)")
    p.add_argument("--ijk", action="store_true", help="the seed is a voxel index (i, j, k), not RAS")
    p.add_argument("--method", choices=("gradcam", "gradcam++"), default="gradcam", help="heatmap method")
    p.add_argument("--device", choices=device_choices, default=None)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=cmd_classify_image)

    p = sub.add_parser("train-image-classifier", help="train the SD / MET / STB image model (demonstration data)",
                       description="Generate SD / MET / STB lesions inside the real vertebral bodies of a "
                                   "spine-mr-bodies folder, split by source case, train a 2.5D image classifier, test "
                                   "it (metrics with CIs, Grad-CAM localisation) and write a DEMONSTRATION bundle.")
    p.add_argument("data", nargs="?", help="folder of CASE_img.nii.gz / CASE_bodies.nii.gz pairs (spine-mr-bodies): "
                                          "the demonstration model on generated lesions")
    p.add_argument("--manifest", help="your own labelled lesions instead: CSV with image, label, patient and mask or "
                                      "seed ('X,Y,Z' RAS mm); split by patient")
    p.add_argument("--model-id", default="my-lesion-images", help="the bundle's id (with --manifest)")
    p.add_argument("--out", required=True, help="run folder: crops, checkpoints, log, OUT/model")
    p.add_argument("--backbone", choices=BACKBONES, default=DEFAULTS["backbone"])
    p.add_argument("--init-weights", metavar="FILE", help="start from a local weights file (safetensors or a torch "
                                                          "state dict); tensors that fit are copied, nothing is downloaded")
    p.add_argument("--freeze-steps", type=int, default=0,
                   help="train only the head for this many steps first (backbone frozen), then all layers")
    add_training_arguments(p, DEFAULTS, ("steps", "batch", "lr", "seed", "per_class"))
    p.set_defaults(func=cmd_train_image_classifier)


def _join_negative_seed(argv: list[str]) -> list[str]:
    # argparse reads "--seed -10,5,3" as two options; accept it as a user would type it.
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in _POINT_OPTIONS and arg[:1] == "-" and arg[1:2] in tuple("0123456789."):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


_POINT_OPTIONS = ("--seed", "--add-point", "--remove-point")


def _fault_message(exc: BaseException) -> str:
    """One line for an ordinary fault of the machine or the input (not a bug of SpineAI)."""
    if isinstance(exc, OSError):
        reason = {errno.ENOSPC: "the disk is full", errno.EROFS: "the disk is read-only",
                  errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                  errno.EDQUOT: "the disk quota is exceeded"}.get(exc.errno) or exc.strerror or str(exc)
        return f"{reason} ({exc.filename})" if exc.filename else reason
    if isinstance(exc, UnicodeDecodeError):
        return (f"a file is not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8 "
                f"(e.g. 'CSV UTF-8' in a spreadsheet program)")
    if isinstance(exc, zipfile.BadZipFile):
        return f"a damaged or non-zip file where a zip was expected ({exc})"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON ({exc})"
    return f"{type(exc).__name__}: {exc}"


# Faults of the input or of the machine: one line, no traceback. Anything else is a bug.
ORDINARY_FAULTS = (OSError, ValueError, UnicodeError, zipfile.BadZipFile, EOFError, zlib.error, MemoryError)


def main(argv: list[str] | None = None) -> int:
    argv = _join_negative_seed(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    debug = os.environ.get("SPINEAI_DEBUG", "") not in ("", "0")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", SpineAIWarning)
            warnings.showwarning = _show_warning(args.command)
            return int(args.func(args) or 0)
    except SpineAIError as exc:
        print(f"spineai {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spineai {args.command}: interrupted", file=sys.stderr)
        return 130
    except ORDINARY_FAULTS as exc:
        if debug:
            raise
        print(f"spineai {args.command}: error: {_fault_message(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            raise
        print(f"spineai {args.command}: internal error: {type(exc).__name__}: {exc} (a bug in SpineAI: run again "
              f"with SPINEAI_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 3


def _show_warning(command: str):
    def show(message, category, filename, lineno, file=None, line=None):
        prefix = "warning" if issubclass(category, SpineAIWarning) else f"{category.__name__}"
        print(f"spineai {command}: {prefix}: {message}", file=sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
