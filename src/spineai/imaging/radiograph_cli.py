"""The radiograph commands of ``spineai``: train-radiograph, classify-radiograph, generate-radiograph."""

from __future__ import annotations

import json
import sys

from spineai.deep.training import add_training_arguments, report_training


def cmd_train_radiograph(args) -> int:
    from spineai.imaging.radiograph_classifier import ship_bundle, train_radiograph_model
    from spineai.progress import TextProgress

    result = train_radiograph_model(
        args.out, backbone=args.backbone, input_size=args.input_size, steps=args.steps, batch=args.batch, lr=args.lr,
        balance=args.balance, freeze_steps=args.freeze_steps, init_weights=args.init_weights,
        train_films=args.train_films, train_prevalence=args.train_prevalence, tuning_films=args.tuning_films,
        test_films=args.test_films, film_size=args.film_size, seed=args.seed, threshold_rule=args.threshold_rule,
        threshold_target=args.threshold_target, max_minutes=args.max_minutes, device=args.device,
        resume=not args.restart, progress=TextProgress("train-radiograph"),
        command="spineai " + " ".join(sys.argv[1:]))
    if result["stopped"] == "paused":
        return report_training(result)
    test = result["card"]["metrics"]["test"]
    lines = [f"test ({test['n']} films, {test['positives']} scoliosis): AUPRC {_ci(test['auprc'])} "
             f"(chance {test['auprc']['chance_level']:.3f}), ROC-AUC {_ci(test['roc_auc'])}"]
    lines += [f"  {rule:9s} threshold {m['threshold']:.3f}: precision {_ci(m['precision'])}, recall {_ci(m['recall'])}"
              for rule, m in test["at_threshold"].items()]
    return report_training(result, ship_bundle if args.ship else None, lines)


def _ci(m: dict) -> str:
    def num(v):
        return "n/a" if v is None else f"{v:.3f}"

    return f"{num(m['value'])} [{num(m.get('ci_low'))}, {num(m.get('ci_high'))}]"


def cmd_classify_radiograph(args) -> int:
    from spineai.imaging.radiograph import radiograph_plane, read_radiograph
    from spineai.imaging.radiograph_classifier import (
        DEMONSTRATION_NOTICE, classify_radiograph, load_radiograph_model, save_radiograph_overlay,
    )
    from spineai.output import refuse_existing, write_output_folder

    refuse_existing(args.out, args.overwrite, inputs=[args.image])  # before any work
    volume = read_radiograph(args.image)
    bundle = load_radiograph_model(args.model, args.device)
    result = classify_radiograph(bundle, volume, method=args.method, threshold=args.threshold)
    summary = {"image": str(args.image), **result.summary()}

    def write(folder):
        from spineai.image import write_volume

        (folder / "result.json").write_text(json.dumps(summary, indent=2))
        write_volume(result.heatmap_volume, folder / "gradcam.nii.gz")
        save_radiograph_overlay(radiograph_plane(volume), result, folder / "overlay.png")

    write_output_folder(args.out, write, overwrite=args.overwrite, inputs=[args.image])
    if result.demonstration:
        print(DEMONSTRATION_NOTICE)
    verdict = "scoliosis" if result.decision else "no scoliosis"
    print(f"P(scoliosis) = {result.probability:.3f}; threshold {result.threshold:.3f} ({result.threshold_rule}) -> {verdict}")
    print(f"Cobb angle: {result.cobb.angle_deg:.1f} deg" if result.cobb is not None else f"Cobb angle: none ({result.cobb_error})")
    print(f"-> {args.out}/ (result.json, overlay.png, gradcam.nii.gz)")
    return 0


def cmd_generate_radiograph(args) -> int:
    from spineai.image import check_output_path, write_volume
    from spineai.imaging.radiograph_synth import generate_radiograph

    check_output_path(args.out, args.overwrite)
    film = generate_radiograph(args.cobb, seed=args.seed, size=args.size)
    out = str(args.out).lower()
    if out.endswith(".png"):
        import numpy as np
        import SimpleITK as sitk

        from spineai.image import atomic_write

        picture = sitk.GetImageFromArray(np.round(film.image * 255).astype(np.uint8))
        atomic_write(args.out, lambda tmp: sitk.WriteImage(picture, str(tmp)), suffix=".png", overwrite=args.overwrite)
    else:
        write_volume(film.volume(), args.out, overwrite=args.overwrite)
    print(f"generated frontal radiograph, Cobb angle {film.cobb_deg:.1f} deg "
          f"({'scoliosis' if film.scoliosis else 'no scoliosis'}), seed {args.seed} -> {args.out}")
    return 0


def add_radiograph_commands(sub) -> None:
    from spineai.deep.device import DEVICE_CHOICES
    from spineai.imaging.radiograph_classifier import RADIOGRAPH_BACKBONES, THRESHOLD_RULES, TRAIN_DEFAULTS

    p = sub.add_parser("classify-radiograph", help="scoliosis screening of a frontal radiograph, with Grad-CAM and the Cobb angle",
                       description="Probability of scoliosis, the model's chosen threshold and decision, the Cobb "
                                   "angle from the spine's centre line, and a Grad-CAM overlay PNG.")
    p.add_argument("image", help="radiograph: one DICOM file (MONOCHROME1 or 2), PNG / JPEG, or NIfTI / NRRD")
    p.add_argument("--out", required=True, help="output folder: result.json, overlay.png, gradcam.nii.gz")
    p.add_argument("--model", default=None, help="scoliosis bundle (path or registry id; default the shipped demonstration)")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the one stored in the model)")
    p.add_argument("--method", choices=("gradcam", "gradcam++"), default="gradcam")
    p.add_argument("--device", choices=DEVICE_CHOICES, default=None)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_classify_radiograph)

    p = sub.add_parser("train-radiograph", help="train the scoliosis radiograph classifier on generated films",
                       description="Generate films, train (or resume), choose thresholds on tuning films and test on "
                                   "test films at the study's 1.6 % prevalence; writes OUT/model and OUT/metrics.json.")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log, the bundle in OUT/model)")
    p.add_argument("--backbone", choices=RADIOGRAPH_BACKBONES, default=TRAIN_DEFAULTS["backbone"])
    p.add_argument("--balance", choices=("sampling", "weights"), default=TRAIN_DEFAULTS["balance"],
                   help="balanced batches (sampling, default) or inverse-frequency class weights in the loss")
    p.add_argument("--threshold-rule", choices=tuple(THRESHOLD_RULES), default=TRAIN_DEFAULTS["threshold_rule"],
                   help="the rule whose threshold the bundle uses (all rules are stored)")
    p.add_argument("--threshold-target", type=float, default=None,
                   help=f"target of the recall / precision rule (defaults {THRESHOLD_RULES['recall']} / {THRESHOLD_RULES['precision']})")
    p.add_argument("--init-weights", default=None, help="local weights file to start from (safetensors or torch state dict)")
    add_training_arguments(p, TRAIN_DEFAULTS, ("input_size", "steps", "batch", "lr", "freeze_steps", "train_films",
                                               "train_prevalence", "tuning_films", "test_films", "film_size", "seed"))
    p.set_defaults(func=cmd_train_radiograph)

    p = sub.add_parser("generate-radiograph", help="write a synthetic frontal spine radiograph with a known Cobb angle")
    p.add_argument("--cobb", type=float, required=True, help="Cobb angle in degrees (0-90; >= 10 is scoliosis)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="pixels across (default 256)")
    p.add_argument("--out", required=True, help=".png, .nii.gz or .nrrd file")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_generate_radiograph)
