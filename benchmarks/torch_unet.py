r"""The U-Net of :class:`seg_jax.models.UNet` in PyTorch, for the train-step benchmark only.

Same topology, layer for layer (see ``seg_jax/models/unet.py``): per level a block of two
``3 x 3`` convolutions (``padding=1``, no bias when normalised), each followed by GroupNorm
(``min(num_groups, channels)`` groups, learned scale and bias, epsilon 1e-6 as ``nnx.GroupNorm``)
and a ReLU; 2x2 max-pooling down; a 2x2 stride-2 transposed convolution (with bias) halving the
channels up, concatenated after the encoder features of its level (skip first) and a block; a
1x1 head with bias. The parameter count equals seg_jax's (``benchmarks/train.py --torch``
asserts it). Initial values are PyTorch's defaults (they do not change the step's cost).

Also the loss of the default config, ``dice_ce`` (softmax cross-entropy plus ``1 -`` the mean
over classes of the soft Dice coefficient of the batch), with PyTorch ops, so that both steps
compute forward, loss, backward and the AdamW update on the same shapes.

PyTorch is a benchmark-only extra (``pip install .[torch]``); seg_jax never imports it.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int, num_groups: int) -> nn.Sequential:
  layers = []
  for c in (cin, cout):
    layers += [
      nn.Conv2d(c, cout, 3, padding=1, bias=False),
      nn.GroupNorm(min(num_groups, cout), cout, eps=1e-6),
      nn.ReLU(inplace=True),
    ]
  return nn.Sequential(*layers)


class TorchUNet(nn.Module):
  """2D U-Net, NCHW, GroupNorm: seg_jax's ``UNet(in_features, num_classes, features=...,
  depth=..., norm='group', num_groups=...)`` in PyTorch."""

  def __init__(self, in_features: int, num_classes: int, *, features: int, depth: int,
               num_groups: int = 8):  # fmt: skip
    super().__init__()
    widths = [features * 2**level for level in range(depth)]
    self.down = nn.ModuleList(
      _block(widths[level - 1] if level else in_features, w, num_groups)
      for level, w in enumerate(widths)
    )
    # Decoder modules coarsest first.
    levels = list(reversed(range(depth - 1)))
    self.upconv = nn.ModuleList(
      nn.ConvTranspose2d(widths[lv + 1], widths[lv], 2, stride=2) for lv in levels
    )
    self.up = nn.ModuleList(_block(2 * widths[lv], widths[lv], num_groups) for lv in levels)
    self.head = nn.Conv2d(features, num_classes, 1)
    self.pool = nn.MaxPool2d(2)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    skips = []
    for level, block in enumerate(self.down):
      if level:
        x = self.pool(x)
      x = block(x)
      skips.append(x)
    for i, (upconv, block) in enumerate(zip(self.upconv, self.up, strict=True)):
      x = block(torch.cat([skips[-2 - i], upconv(x)], dim=1))
    return self.head(x)


def dice_ce(logits: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
  """seg_jax's ``dice_ce`` defaults: cross-entropy plus ``1 -`` the soft Dice coefficient with the
  statistics over the batch, averaged over the classes. One output channel: sigmoid binary
  cross-entropy and the Dice of the foreground probability; else softmax over the channels."""
  dims = (0, 2, 3)
  if logits.shape[1] == 1:
    target = labels.unsqueeze(1).to(logits.dtype)
    ce = nn.functional.binary_cross_entropy_with_logits(logits, target)
    probs = logits.sigmoid()
  else:
    ce = nn.functional.cross_entropy(logits, labels)
    probs = logits.softmax(dim=1)
    target = nn.functional.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
  inter = (probs * target).sum(dims)
  denom = probs.sum(dims) + target.sum(dims)
  dice = (2 * inter + eps) / (denom + eps)
  return ce + (1 - dice.mean())


def make_step(model: nn.Module, *, lr: float, b1: float, b2: float, eps: float,
              weight_decay: float, grad_clip_norm: float):  # fmt: skip
  """``step(images NCHW, labels) -> loss``: forward, ``dice_ce``, backward, global-norm clipping
  (if ``grad_clip_norm > 0``) and an AdamW update, as seg_jax's trainer step (constant learning
  rate: the schedule's value costs nothing)."""
  opt = torch.optim.AdamW(
    model.parameters(), lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay
  )

  def step(images: torch.Tensor, labels: torch.Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    loss = dice_ce(model(images), labels)
    loss.backward()
    if grad_clip_norm > 0:
      nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
    opt.step()
    return float(loss.detach())

  return step


def parameter_count(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())
