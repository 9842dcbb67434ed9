"""Placeholder: being written."""


def lovasz_loss(*args, **kwargs):
  raise NotImplementedError("lovasz_loss")
