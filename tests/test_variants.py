"""Every registry loss gives the same value and gradient however it is run (``chex.variants``).

``chex.variants`` runs one test body as several variants: traced and compiled (``with_jit``),
op by op in Python (``without_jit``), and op by op on arguments already placed on the device
(``with_device``). A loss whose value depended on the mode (a Python branch on a traced value, a
NumPy call on an array, a host round trip) would differ between them. Each variant is compared
with the value and gradient of the contract tests' shared jitted program
(tests/test_losses_contract.py), whose correctness each loss's own module checks against a
float64 NumPy reference; ``vmap`` is covered there (``test_vmap_and_bfloat16``).
"""

import chex
import jax
import numpy as np
import test_losses_contract as contract
from absl.testing import parameterized

from seg_jax import losses

_CASE = contract._case(seed=5)


class ExecutionModesTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True, with_device=True)
  @parameterized.named_parameters(*((name, name) for name in losses.names()))
  def test_value_and_gradient_agree_with_the_jitted_program(self, name):
    x, y, m = _CASE
    value_and_grad = self.variant(jax.value_and_grad(contract._loss(name)))
    value, grad = value_and_grad(x, y, m)
    want_value, want_grad = contract._value_grad(name, x, y, m)
    chex.assert_trees_all_close(
      (value, grad), (want_value, want_grad), rtol=1e-5, atol=1e-6, custom_message=name
    )
    self.assertTrue(np.isfinite(np.asarray(value)))
