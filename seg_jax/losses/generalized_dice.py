"""Placeholder: being written."""


def generalized_dice_loss(*args, **kwargs):
  raise NotImplementedError("generalized_dice_loss")
