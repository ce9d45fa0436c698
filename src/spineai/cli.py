"""The ``spineai`` command line: thin wrappers over the engine functions.

Each command imports what it needs when it runs, so ``spineai segment`` and ``spineai features``
never pay for torch or MONAI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spineai import RESEARCH_USE_NOTICE, __version__
from spineai.errors import SpineAIError


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
    from spineai.image import read_volume, seed_to_index, write_volume, check_output_path
    from spineai.segment import segment

    check_output_path(args.out, args.overwrite)  # refuse before any work
    image = read_volume(args.image)
    seed = seed_to_index(image, args.seed, "ijk" if args.ijk else "ras")
    within = read_volume(args.within) if args.within else None
    if args.within_label is not None and within is None:
        raise SpineAIError("--within-label needs --within LABELMAP")
    mask = segment(image, seed, mode=args.mode, within=within, within_label=args.within_label)
    write_volume(mask, args.out, overwrite=args.overwrite)
    n = int(mask.array.sum())
    ml = n * image.spacing[0] * image.spacing[1] * image.spacing[2] / 1000.0
    print(f"{args.mode} mask: {n} voxels, {ml:.2f} mL, seed voxel (i, j, k) = {seed} -> {args.out}")
    return 0


def cmd_features(args) -> int:
    from spineai.image import read_volume, check_output_path
    from spineai.radiomics import extract_features, write_features_csv

    check_output_path(args.out, args.overwrite)
    image = read_volume(args.image)
    mask = read_volume(args.mask)
    result = extract_features(image, mask, label=args.label, params=args.params)
    write_features_csv([result], args.out, overwrite=args.overwrite, ids=[args.id] if args.id else None)
    print(f"{len(result.values)} features from {result.provenance.get('voxel_count', '?')} voxels -> {args.out}")
    return 0


def cmd_cohort(args) -> int:
    from spineai.cohort import extract_cohort, read_manifest
    from spineai.image import check_output_path
    from spineai.progress import TextProgress
    from spineai.radiomics import write_features_csv

    check_output_path(args.out, args.overwrite)
    cases = read_manifest(args.manifest)
    results, ids, failures = extract_cohort(cases, args.params, args.skip_failures, TextProgress("features"))
    for failure in failures:
        print(f"skipped {failure.case.id}: {failure.error}", file=sys.stderr)
    if not results:
        raise SpineAIError(f"every one of the {len(cases)} cases failed; nothing written")
    write_features_csv(results, args.out, overwrite=args.overwrite, ids=ids)
    print(f"{len(results)} of {len(cases)} cases -> {args.out}" + (f" ({len(failures)} skipped)" if failures else ""))
    return 0


def cmd_demo(args) -> int:
    from spineai.demo import run_demo
    from spineai.progress import TextProgress

    summary = run_demo(args.out, overwrite=args.overwrite, seed=args.seed, kind=args.kind,
                       progress=TextProgress("demo"))
    print(summary)
    return 0


# Commands defined here; the classifier commands come from spineai.models (bundles, registry, HTTP),
# which a run of one of these never needs to import.
ENGINE_COMMANDS = ("segment", "features", "cohort", "demo")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the arguments to parse, only what they need (see ENGINE_COMMANDS)."""
    from spineai.radiomics import DEFAULT_PARAMETER_SET
    from spineai.segment import SEGMENTATION_MODES

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
    p.add_argument("--out", required=True, help="mask file to write (same geometry as the image)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_segment)

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

    p = sub.add_parser("cohort", help="extract the features of every lesion listed in a manifest CSV",
                       description="MANIFEST is a CSV with columns id, image, mask and optionally label; "
                                   "relative paths are read from the manifest's folder.")
    p.add_argument("manifest")
    p.add_argument("--params", default=DEFAULT_PARAMETER_SET)
    p.add_argument("--skip-failures", action="store_true",
                   help="report failing cases and go on (default: stop at the first, naming it)")
    p.add_argument("--out", required=True, help="CSV file to write, one row per case")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_cohort)

    p = sub.add_parser("demo", help="run the whole pipeline on a generated spine phantom")
    p.add_argument("--out", default="spineai-demo", help="output folder (default ./spineai-demo)")
    p.add_argument("--seed", type=int, default=0, help="phantom random seed")
    p.add_argument("--kind", choices=("SD", "MET", "STB"), default="MET", help="kind of phantom lesion")
    p.add_argument("--overwrite", action="store_true", help="replace files in --out")
    p.set_defaults(func=cmd_demo)

    if not (argv and argv[0] in ENGINE_COMMANDS):
        from spineai.models.cli import add_commands

        add_commands(sub)
    return parser


def _join_negative_seed(argv: list[str]) -> list[str]:
    # argparse reads "--seed -10,5,3" as two options; accept it as a user would type it.
    out = list(argv)
    for n, arg in enumerate(out[:-1]):
        if arg == "--seed" and out[n + 1].startswith("-"):
            out[n : n + 2] = [f"--seed={out[n + 1]}"]
            break
    return out


def main(argv: list[str] | None = None) -> int:
    argv = _join_negative_seed(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SpineAIError as exc:
        print(f"spineai {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spineai {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
