"""Official StyleGAN2 weights, converted to this project's Generator without running any code from the file.

- `unpickle`: parses pickles and `torch.save` files with an allow-list of harmless stand-ins; no `module_src` or
  other code from the file is executed (UnsafePickleError names what was refused).
- `ada`: NVIDIA's PyTorch `.pkl` (stylegan2-ada-pytorch, and stylegan3 trained with the StyleGAN2 config).
- `tf`: NVIDIA's original TF `.pkl` (`(G, D, Gs)`).
- `rosinality`: rosinality/stylegan2-pytorch `.pt` checkpoints.
- `common`: the `Converted` result and the layout checks the three share.
- `load`: format detection, `convert`, `load_official`, the conversion cache and `summary`.

Whatever cannot be represented exactly (StyleGAN1, StyleGAN3 alias-free, conditional models, unusual layouts) is
refused with UnsupportedNetworkError saying what the file is (docs/ARCHITECTURE.md, "Official weights").
"""
