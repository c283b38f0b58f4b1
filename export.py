"""Export a checkpoint to ONNX, with everything a consumer needs in the file's metadata:
    python export.py --checkpoint runs/demo/best.pt --out model.onnx [--opset N] [--image-size S]
                     [--thresholds runs/demo/thresholds.json] [--simplify] [--set predict.mode=sliding ...]

The network with a dynamic batch axis (torch's dynamo exporter where it works, the TorchScript exporter otherwise),
checked by onnx.checker and against PyTorch by ONNX Runtime. Run it like a checkpoint:
    python inference.py --checkpoint model.onnx --out submission.csv
The metadata keys are listed in trainer/export.py and the README (Deploy: ONNX).

A whole selection plan (ensemble.py --select) at once: every fold model of its members, and a plan that uses them:
    python export.py --plan plan.yaml --out deploy/          then: python ensemble.py --plan deploy/plan.yaml
"""
from __future__ import annotations

import argparse

from utils.cli import run_main


def parse_args(argv=None) -> argparse.Namespace:
    from models.onnx_model import EXPORTERS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a best.pt / last.pt written by train.py")
    source.add_argument("--plan", metavar="PLAN.yaml", help="a plan of ensemble.py --select: export every fold "
                        "model of its members into the folder --out, with a plan.yaml that runs them")
    p.add_argument("--out", required=True, help="the .onnx file to write (--plan: a new or empty folder)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's own; TorchScript: 17)")
    p.add_argument("--image-size", type=int, metavar="S", help="export for data.image_size S instead of the "
                   "run's (the network's input is S, or predict.window when sliding)")
    p.add_argument("--thresholds", metavar="JSON", help="per-class thresholds to store (from inference.py "
                   "--tune-thresholds; default: thresholds.json beside the checkpoint when present)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="change the stored config first, e.g. --set predict.tta=hflip")
    p.add_argument("--exporter", choices=EXPORTERS, default="auto",
                   help="auto (default): dynamo, and TorchScript where dynamo fails")
    p.add_argument("--simplify", action="store_true", help="simplify the graph with onnxslim (checked again after)")
    return p.parse_args(argv)


def check_opset(opset: int | None) -> None:
    from utils.errors import UserError

    if opset is not None:
        import onnx.defs

        newest = onnx.defs.onnx_opset_version()
        if not 7 <= opset <= newest:
            raise UserError(f"--opset: {opset} is outside what the exporters support (7 to {newest}, the "
                            f"installed onnx's newest)")


def export_a_plan(args) -> int:
    from utils.errors import UserError
    from utils.files import check_new_folder, check_output_folder

    given = [flag for flag, value in (("--image-size", args.image_size), ("--thresholds", args.thresholds),
                                      ("--set", args.overrides)) if value]
    if given:
        raise UserError(f"{', '.join(given)}: not with --plan (the plan holds its sizes, thresholds and overrides)")
    check_new_folder(check_output_folder(args.out))
    check_opset(args.opset)
    from selection.plan import export_plan  # torch and the models load only after the arguments passed

    print(export_plan(args.plan, args.out, args.opset, args.exporter, args.simplify))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.plan:
        return export_a_plan(args)
    from trainer.export import export_checkpoint
    from utils.errors import UserError
    from utils.files import check_output_file

    check_output_file(args.out)
    if not str(args.out).lower().endswith(".onnx"):
        raise UserError(f"--out {args.out}: name the file .onnx (inference.py and ensemble.py tell it by that)")
    if args.image_size is not None and args.image_size < 1:
        raise UserError(f"--image-size: must be a positive number of pixels, got {args.image_size}")
    check_opset(args.opset)
    cfg, result = export_checkpoint(args.checkpoint, args.out, args.opset, args.image_size, args.thresholds,
                                    args.overrides, args.exporter, args.simplify)
    fallback = f" (dynamo failed: {result.fallback_reason})" if result.fallback_reason else ""
    print(f"wrote {args.out}: {cfg.model.arch}/{cfg.model.encoder}, {len(cfg.task.classes)} classes, exported by "
          f"the {result.exporter} path{fallback}, opset {result.opset}; ONNX Runtime matches PyTorch within "
          f"{result.max_abs_diff:.1e}")
    return 0


if __name__ == "__main__":
    run_main(main)
