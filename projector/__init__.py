"""Projection of images into the generator's latent space (W or W+) with LPIPS and noise regularisation."""
