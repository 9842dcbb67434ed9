"""Segmentation models (Flax NNX). Needs the ``train`` extra (flax)."""

from seg_jax.models.unet import NORMS, ConvBlock, UNet

__all__ = ["NORMS", "ConvBlock", "UNet"]
