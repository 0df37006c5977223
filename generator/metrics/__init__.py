"""Generator quality metrics (docs/ARCHITECTURE.md, "Metrics").

- `features`: the FID feature networks (torchvision Inception-v3, the portrait attribute network, a random one).
- `fid`: FID (Heusel et al. 2017): feature statistics, the Fréchet distance, cached real statistics.
- `ppl`: PPL (Karras et al. 2019, 2020): perceptual path length in W.
- `lpips`: the LPIPS-VGG perceptual distance PPL is defined with (the projector uses it too).
- `attrnet`: the portrait attribute network (a feature space for FID on portrait models).
- `common`: MetricError and the progress callback type.
- `evaluate`: one call that runs FID and/or PPL for `sgproject metrics`.
"""
