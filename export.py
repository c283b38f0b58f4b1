"""Export a checkpoint to ONNX, with everything a consumer needs in the file's metadata:
    python export.py --checkpoint runs/demo/best.pt --out model.onnx [--opset N] [--image-size S]
                     [--thresholds runs/demo/thresholds.json] [--simplify] [--set predict.mode=sliding ...]

The network with a dynamic batch axis (torch's dynamo exporter where it works, the TorchScript exporter otherwise),
checked by onnx.checker and against PyTorch by ONNX Runtime. Run it like a checkpoint:
    python inference.py --checkpoint model.onnx --out submission.csv
The metadata keys are listed in trainer/export.py and the README (Deploy: ONNX).
"""
from __future__ import annotations

import argparse

from utils.cli import run_main


def parse_args(argv=None) -> argparse.Namespace:
    from models.onnx_model import EXPORTERS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a best.pt / last.pt written by train.py")
    p.add_argument("--out", required=True, help="the .onnx file to write")
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


def main(argv=None) -> int:
    args = parse_args(argv)
    from trainer.export import export_checkpoint
    from utils.errors import UserError
    from utils.files import check_output_file

    check_output_file(args.out)
    if not str(args.out).lower().endswith(".onnx"):
        raise UserError(f"--out {args.out}: name the file .onnx (inference.py and ensemble.py tell it by that)")
    if args.image_size is not None and args.image_size < 1:
        raise UserError(f"--image-size: must be a positive number of pixels, got {args.image_size}")
    if args.opset is not None and args.opset < 7:
        raise UserError(f"--opset: {args.opset} is older than any exporter supports")
    cfg, result = export_checkpoint(args.checkpoint, args.out, args.opset, args.image_size, args.thresholds,
                                    args.overrides, args.exporter, args.simplify)
    fallback = f" (dynamo failed: {result.fallback_reason})" if result.fallback_reason else ""
    print(f"wrote {args.out}: {cfg.model.arch}/{cfg.model.encoder}, {len(cfg.task.classes)} classes, exported by "
          f"the {result.exporter} path{fallback}, opset {result.opset}; ONNX Runtime matches PyTorch within "
          f"{result.max_abs_diff:.1e}")
    return 0


if __name__ == "__main__":
    run_main(main)
