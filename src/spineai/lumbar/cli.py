"""``spineai lumbar synthesize | train | evaluate | grade``: thin wrappers over spineai.lumbar."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from spineai.errors import SpineAIError
from spineai.deep.training import add_training_arguments


def cmd_synthesize(args) -> int:
    from spineai.lumbar.synthetic import generate_dataset
    from spineai.progress import TextProgress

    root = generate_dataset(args.out, args.studies, args.seed, overwrite=args.overwrite, progress=TextProgress("synthesize"))
    print(f"{args.studies} synthetic studies (RSNA layout, seed {args.seed}) -> {root}")
    return 0


def cmd_train(args) -> int:
    from spineai.deep.training import report_training
    from spineai.lumbar.training import ship, train_lumbar
    from spineai.progress import TextProgress

    data = args.data
    if args.synthetic:
        from spineai.lumbar.synthetic import ensure_dataset

        data = ensure_dataset(Path(args.out) / "data", args.synthetic, args.seed, progress=TextProgress("synthesize"))
    elif not data:
        raise SpineAIError("give DATA (an RSNA-layout folder) or --synthetic N")
    summary = train_lumbar(data, args.out, steps=args.steps, batch=args.batch, seed=args.seed, lr=args.lr,
                           max_minutes=args.max_minutes, device=args.device, resume=not args.restart,
                           progress=TextProgress("train"), command="spineai " + " ".join(sys.argv[1:]))
    lines = ["held-out studies, challenge score (lower is better):", *summary.get("report", [])]
    return report_training(summary, ship if args.ship else None, lines)


def cmd_evaluate(args) -> int:
    from spineai.lumbar.training import evaluate
    from spineai.progress import TextProgress

    result = evaluate(args.data, args.model, args.split, args.device, args.studies or None, TextProgress("evaluate"))
    if result["demonstration"]:
        from spineai.lumbar.grading import DEMONSTRATION_NOTICE

        print(DEMONSTRATION_NOTICE)
    print(f"{result['model']}: challenge score (lower is better)")
    for line in result["report"]:
        print(line)
    for condition, m in result["confusion_matrices"].items():
        print(f"{condition} (rows true, columns predicted: normal-mild, moderate, severe): {m}")
    for sid, notes in result["warnings"].items():
        for n in notes:
            print(f"study {sid}: {n}", file=sys.stderr)
    if args.out:
        from spineai.output import atomic_write

        atomic_write(Path(args.out), lambda tmp: tmp.write_text(json.dumps(result, indent=1), encoding="utf-8"),
                     overwrite=args.overwrite)
        print(f"-> {args.out}")
    return 0


def cmd_grade(args) -> int:
    from spineai.lumbar.grading import DEMONSTRATION_NOTICE, grade_study, write_grade
    from spineai.lumbar.study import open_rsna, read_rsna_study, read_study
    from spineai.progress import TextProgress

    series = {"sagittal_t1": args.sagittal_t1, "sagittal_t2": args.sagittal_t2, "axial_t2": args.axial_t2}
    if args.rsna:
        if not args.study:
            raise SpineAIError("--rsna needs --study STUDY_ID")
        if any(series.values()):
            raise SpineAIError("give either --rsna ROOT --study ID or the series paths, not both")
        study = read_rsna_study(open_rsna(args.rsna, args.split), args.study)
    else:
        if not any(series.values()):
            raise SpineAIError("give the study: --rsna ROOT --study ID, or at least one of --sagittal-t1, "
                               "--sagittal-t2, --axial-t2")
        study = read_study(series, args.study or "study")
    result = grade_study(study, args.model, args.device, explain=not args.no_explain, progress=TextProgress("grade"))
    written = write_grade(result, args.out, overwrite=args.overwrite, pictures=not args.no_explain)
    if result.demonstration:
        print(DEMONSTRATION_NOTICE)
    print(f"study {result.study_id}: graded from {', '.join(result.series_present)}; levels from {result.level_source}")
    for level in result.levels:
        worst = [f"{r['condition'].replace('_', ' ')} {r['most_likely']}" for r in result.rows()
                 if r["level"] == level and r["most_likely"] != "Normal/Mild"]
        print(f"  {level}: {'; '.join(worst) if worst else 'all Normal/Mild'}")
    print(f"-> {', '.join(str(p) for p in written[:2])} and {len(written) - 2} picture(s)")
    return 0


def add_commands(sub) -> None:
    from spineai.deep.device import DEVICE_CHOICES
    from spineai.lumbar.training import TRAIN_DEFAULTS

    lumbar = sub.add_parser("lumbar", help="lumbar degeneration grading (RSNA 2024 conditions and levels)",
                            description="Grade spinal canal, neural foraminal and subarticular stenosis at L1/L2-L5/S1 "
                                        "from sagittal T1, sagittal T2/STIR and axial T2 series (any may be missing).")
    cmds = lumbar.add_subparsers(dest="lumbar_command", metavar="ACTION", required=True)

    p = cmds.add_parser("synthesize", help="write synthetic studies in the RSNA layout (DICOM + CSVs)")
    p.add_argument("out")
    p.add_argument("--studies", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_synthesize)

    p = cmds.add_parser("train", help="train (or resume) the grader; evaluate it on held-out studies",
                        description="Train on an RSNA-layout folder (or --synthetic N generated studies in OUT/data); "
                                    "checkpoints in OUT, resumable; the bundle in OUT/model.")
    p.add_argument("data", nargs="?", help="RSNA-layout folder (train.csv, train_images/ ...)")
    p.add_argument("--synthetic", type=int, metavar="N", help="generate N synthetic studies into OUT/data and train on them")
    p.add_argument("--out", required=True)
    add_training_arguments(p, TRAIN_DEFAULTS)
    p.set_defaults(func=cmd_train)

    p = cmds.add_parser("evaluate", help="challenge score, confusion matrices, and the score with each series removed")
    p.add_argument("data", help="RSNA-layout folder with grades")
    p.add_argument("--model", default=None, help="grading bundle (path or registry id; default the shipped demonstration)")
    p.add_argument("--split", default="train", help="file prefix: train (train.csv, train_images/) or another")
    p.add_argument("--studies", nargs="*", help="only these study ids")
    p.add_argument("--out", help="JSON file for the results")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--device", choices=DEVICE_CHOICES, default=None)
    p.set_defaults(func=cmd_evaluate)

    p = cmds.add_parser("grade", help="grade one study: JSON, CSV and a picture per level",
                        description="A study from an RSNA-layout folder (--rsna ROOT --study ID) or from its series "
                                    "(DICOM folders or NIfTI files; any may be left out). Without label coordinates the "
                                    "levels come from the disc localiser.")
    p.add_argument("--rsna", metavar="ROOT")
    p.add_argument("--split", default="train")
    p.add_argument("--study", help="study id")
    p.add_argument("--sagittal-t1")
    p.add_argument("--sagittal-t2", help="sagittal T2 or STIR")
    p.add_argument("--axial-t2")
    p.add_argument("--model", default=None)
    p.add_argument("--device", choices=DEVICE_CHOICES, default=None)
    p.add_argument("--no-explain", action="store_true", help="skip Grad-CAM and the pictures")
    p.add_argument("--out", required=True, help="folder for grades.json, grades.csv and level_*.png")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_grade)
