"""``nnunet-ext mammo-sam export-encoder``: write the encoder of a trained Mammo-SAM model as a SAM-format
checkpoint (``image_encoder.*`` keys, RGB patch embedding, plus SAM decoder weights when the model has them).

The phantom set-up uses it: ``MammoSAMPretrainTrainer_tiny`` trains the tiny encoder on a source phantom set, and the
exported file, named by ``nnUNet_ext_sam_checkpoint``, is the "foundation model" every tiny trainer starts from. It
also turns any Mammo-SAM model back into a file SAM's own tools read.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_ext.errors import UserInputError


def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("export-encoder", help="nnU-Net Mammo-SAM checkpoint -> SAM-format encoder checkpoint")
    s.add_argument("-i", required=True, help="nnU-Net checkpoint of a Mammo-SAM trainer (checkpoint_final.pth)")
    s.add_argument("-o", required=True, help="output .pth (must not exist: nothing is overwritten)")


def export_encoder(checkpoint: str | Path, output: str | Path) -> dict:
    """Read an nnU-Net checkpoint, write its SAM-format part to ``output``; returns a summary."""
    import torch

    from .weights import sam_format, write_checkpoint

    checkpoint, output = Path(checkpoint), Path(output)
    if not checkpoint.is_file():
        raise UserInputError(f"-i {checkpoint}: no such file")
    if output.exists():
        raise UserInputError(f"-o {output} exists; nothing is overwritten: choose a new path")
    try:  # nnU-Net checkpoints hold plans and numpy values: not loadable with weights_only=True
        content = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as error:
        raise UserInputError(f"-i {checkpoint}: not a checkpoint torch.load can read: "
                             f"{' '.join(str(error).split())[:200]}") from None
    if not isinstance(content, dict) or "network_weights" not in content:
        raise UserInputError(f"-i {checkpoint}: not an nnU-Net checkpoint (no network_weights)")
    try:
        state = sam_format(content["network_weights"])
    except UserInputError as error:
        raise UserInputError(f"-i {checkpoint} (trainer {content.get('trainer_name', '?')}): {error}") from None
    write_checkpoint(state, output)
    return {"trainer": content.get("trainer_name"), "tensors": len(state),
            "parameters": sum(v.numel() for v in state.values())}


def run(args: argparse.Namespace) -> int:
    summary = export_encoder(args.i, args.o)
    print(f"wrote {args.o}: {summary['tensors']} tensors, {summary['parameters']} parameters from "
          f"{summary['trainer']}")
    return 0
