"""`sgproject convert`: an official NVIDIA / rosinality file to an sgproject .safetensors checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sgproject.app import app, err, fail, handle_errors, out


@app.command(rich_help_panel="Generator")
@handle_errors
def convert(
    src: Path = typer.Argument(
        ..., help="An NVIDIA .pkl (stylegan2-ada-pytorch, stylegan3, TF StyleGAN2) or a rosinality .pt."
    ),
    dst: Path = typer.Argument(..., help="The checkpoint to write (.safetensors; a .json sidecar is written beside)."),
    key: Optional[str] = typer.Option(
        None, "--key", help="Which network: G_ema or G (NVIDIA PyTorch), Gs or G (TF), g_ema or g (rosinality)."
    ),
) -> None:
    """Convert official StyleGAN2 weights once, without running any code from the file.

    Example: sgproject convert ffhq.pkl ffhq.safetensors
    """
    from generator.official.load import convert_file  # local: keeps --help fast

    if dst.suffix != ".safetensors":
        fail(f"the output must be a .safetensors file, got {dst}")
    if dst.exists() and dst.resolve() == src.resolve():
        fail("the output would overwrite the input")
    err.print(f"converting {src} ...")
    record = convert_file(src, dst, key=key)
    # One "name value" line each, never wrapped (hashes and paths stay whole for scripts and grep).
    out.print(f"{'written':<15} {dst}", soft_wrap=True, highlight=False, markup=False)
    for k, v in record.items():
        if k == "channels":
            v = " ".join(f"{r}:{c}" for r, c in v.items())
        text = f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
        out.print(f"{k:<15} {text}", soft_wrap=True, highlight=False, markup=False)
