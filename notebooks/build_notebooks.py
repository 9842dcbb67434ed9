"""Builds notebooks/choosing_a_loss.ipynb and notebooks/losses_in_your_code.ipynb (no outputs).

Run from anywhere: python notebooks/build_notebooks.py [REPO_ROOT]. The notebooks are stored
without outputs; tests/test_notebooks.py executes them.
"""

import os
import sys
import textwrap

import nbformat
from nbformat import v4

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def md(text):
  return v4.new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text, tags=None):
  cell = v4.new_code_cell(textwrap.dedent(text).strip("\n"))
  if tags:
    cell.metadata["tags"] = list(tags)
  return cell


def notebook(cells):
  nb = v4.new_notebook()
  nb.cells = cells
  nb.metadata["kernelspec"] = {
    "display_name": "Python 3 (ipykernel)",
    "language": "python",
    "name": "python3",
  }
  nb.metadata["language_info"] = {"name": "python"}
  return nb


# ------------------------------------------------------------------------------------------------
# choosing_a_loss.ipynb

choosing = [
  md(r"""
  # Choosing a segmentation loss

  Which loss should a U-Net be trained with? Guides answer with rules of thumb (binary
  cross-entropy for binary masks, cross-entropy for several classes, Dice or focal loss under class
  imbalance, a compound such as Dice + cross-entropy as the safe default); benchmarks answer that
  no single loss wins everywhere (Ma et al., *Loss odyssey in medical image segmentation*, MedIA
  2021). This notebook is the reasoning behind the rules, computed live with `seg_jax`:

  1. **What each loss computes**, with worked examples checked by hand.
  2. **Each pixel loss and its gradient** against the predicted probability, for a positive and a
     negative pixel: binary cross-entropy, focal loss at several $\gamma$, and what one pixel of a
     small object does to Dice.
  3. **The effect of imbalance**: a small comparison of losses on the `balanced` and `imbalanced`
     synthetic data sets, trained live.
  4. **How to choose** on *your* data: `python -m seg_jax.inspect` and `python -m seg_jax.compare`.

  The parameter cell below sets the size. `SMALL = True` runs everything in a minute or two on a
  2-core CPU (the test suite runs it that way): the comparison in section 3 is then a toy, meant
  to show the mechanics and the direction of the effects, not to rank losses. `SMALL = False`
  trains at a more meaningful size (tens of minutes on a CPU, a few on a GPU).
  """),
  code(
    """
    # Parameters (papermill-style: this cell is tagged "parameters").
    SMALL = True  # True: tiny live comparison (~1-2 min on 2 CPU cores); False: a more meaningful size.
    DATA_DIR = ""  # tfds data directory for the synthetic data; "" = tfds's default (~/tensorflow_datasets).
    WORK_DIR = ""  # where the training runs of section 3 are written; "" = a new temporary directory.
    """,
    tags=["parameters"],
  ),
  code(
    """
    import contextlib
    import functools
    import io
    import os
    import tempfile
    import time
    import warnings

    import jax
    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging
    from IPython.display import Image, Markdown, display

    from seg_jax import losses

    WORK_DIR = WORK_DIR or tempfile.mkdtemp(prefix="choosing_a_loss_")
    # Compiled programs are cached on disk, so the same model and loss compile once for both data sets
    # of section 3 (set before the first compilation).
    jax.config.update("jax_compilation_cache_dir", os.path.join(WORK_DIR, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    tfds.disable_progress_bar()
    absl_logging.set_verbosity(absl_logging.ERROR)
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a notebook without widgets
    np.set_printoptions(precision=4, suppress=True)
    print(f"JAX {jax.__version__} on {jax.devices()}; runs go to {WORK_DIR}")
    """
  ),
  md(r"""
  ## 1. What each loss computes

  A segmentation network outputs, for every pixel $i$, logits $x_{ic}$ over channels $c$. With
  one channel (binary data) the foreground probability is $p_i = \sigma(x_i)$; with several it
  is $p_{ic} = \mathrm{softmax}(x_i)_c$. The losses differ in *what they average over*:

  * **Pixel losses** (`binary_cross_entropy`, `cross_entropy`, `focal`) are a mean of per-pixel
    terms: every pixel weighs $1/N$, so a class that covers 2 % of the pixels gets about 2 % of
    the loss and of the gradient.
    BCE: $\ell_i = -[y_i \log p_i + (1-y_i)\log(1-p_i)]$; CE: $\ell_i = -\log p_{i,t_i}$ for the
    true class $t_i$; focal: $\ell_i = -(1-p_t)^\gamma \log p_t$ (Lin et al. 2017), which
    shrinks the loss of pixels that are already right ($p_t \to 1$).
  * **Overlap (region) losses** (`dice`, `jaccard`, `tversky`, `focal_tversky`,
    `generalized_dice`, `log_cosh_dice`, `lovasz`) are a ratio of sums over a class:
    soft Dice is $D = \frac{2\sum_i p_i g_i}{\sum_i p_i + \sum_i g_i}$ and the loss $1 - D$.
    Every class counts the same whatever its size.
  * **Distance and topology losses** (`boundary`, `hausdorff_dt`, `cldice`) weigh errors by their
    distance to the true boundary or compare skeletons; they are used *with* a region loss.
  * **Compounds** (`dice_ce`, `dice_focal`, `unified_focal`, and any `losses.combine({...})`)
    add a pixel loss and a region loss.

  The registry, live (the first line of every docstring):
  """),
  code(
    """
    FAMILY = {
        "binary_cross_entropy": "pixel", "cross_entropy": "pixel", "focal": "pixel",
        "topk_cross_entropy": "pixel",
        "dice": "overlap", "jaccard": "overlap", "tversky": "overlap", "focal_tversky": "overlap",
        "generalized_dice": "overlap", "log_cosh_dice": "overlap", "lovasz": "overlap",
        "mcc": "overlap", "boundary_dou": "overlap",
        "boundary": "distance", "hausdorff_dt": "distance", "cldice": "topology",
        "skeleton_recall": "topology",
        "dice_ce": "compound", "dice_focal": "compound", "unified_focal": "compound",
        "dice_boundary": "compound", "dice_hausdorff": "compound", "dice_topk": "compound",
        "dice_skeleton_recall": "compound",
    }
    assert set(FAMILY) == set(losses.names()), sorted(set(FAMILY) ^ set(losses.names()))
    rows = ["| registry name | family | what it is |", "|---|---|---|"]
    for name in sorted(losses.names(), key=lambda n: (list(FAMILY.values()).index(FAMILY[n]), n)):
        first_line = losses.lookup(name).__doc__.strip().splitlines()[0]
        rows.append(f"| `{name}` | {FAMILY[name]} | {first_line} |")
    display(Markdown("\\n".join(rows)))
    """
  ),
  md(r"""
  ### Worked example 1: binary cross-entropy on a positive pixel

  A foreground pixel ($y = 1$) predicted with $p = 0.9$ costs $-\ln 0.9 = 0.105$; predicted with
  $p = 0.1$ it costs $-\ln 0.1 = 2.303$, 22 times more. The loss grows without bound as a
  confident prediction becomes wrong. `seg_jax` takes logits; $x = \ln\frac{p}{1-p}$ gives
  $\sigma(x) = p$.
  """),
  code(
    """
    positive = jnp.ones((1, 1), jnp.int32)  # labels: (batch=1, 1 pixel), class 1
    for p, by_hand in [(0.9, 0.105), (0.1, 2.303)]:
        logit = jnp.log(p / (1 - p)).reshape(1, 1, 1)  # (batch, pixels, channels=1)
        value = float(losses.binary_cross_entropy(logit, positive))
        print(f"BCE(p={p}, y=1) = {value:.4f}   by hand -ln({p}) = {by_hand}")
        np.testing.assert_allclose(value, by_hand, atol=5e-4)
    """
  ),
  md(r"""
  ### Worked example 2: categorical cross-entropy

  Three classes with predicted probabilities $[0.1, 0.7, 0.2]$ and true class 1: only the
  probability of the true class matters, $\mathrm{CE} = -\ln 0.7 = 0.357$. The focal loss with
  $\gamma = 2$ multiplies it by $(1 - 0.7)^2 = 0.09$: $0.09 \times 0.357 = 0.0321$.
  """),
  code(
    """
    probs = jnp.array([0.1, 0.7, 0.2]).reshape(1, 1, 3)
    label = jnp.array([[1]])
    ce = float(losses.cross_entropy(jnp.log(probs), label))
    fl = float(losses.focal_loss(jnp.log(probs), label, gamma=2.0))
    print(f"CE    = {ce:.4f}   by hand -ln 0.7            = 0.357")
    print(f"focal = {fl:.4f}   by hand (1 - 0.7)^2 * 0.357 = 0.0321")
    np.testing.assert_allclose(ce, 0.357, atol=5e-4)
    np.testing.assert_allclose(fl, 0.0321, atol=5e-5)
    """
  ),
  md(r"""
  ### Worked example 3: Dice on a small object

  **A 7-pixel image** with a 2-pixel object (pixels 3 and 4). The prediction covers pixel 3
  ($p = 0.8$), barely touches pixel 4 ($p = 0.1$) and puts a false positive on pixel 6
  ($p = 0.6$), 0 elsewhere. Then $I = \sum p g = 0.8 + 0.1 = 0.9$, $P = \sum p = 1.5$,
  $G = \sum g = 2$ and $D = 2I/(P+G) = 1.8/3.5 = 0.514$: the Dice loss is $0.486$.

  **A 10 x 10 image with a 2-pixel object** (2 % foreground), three predictions:

  | prediction | BCE by hand | Dice loss by hand |
  |---|---|---|
  | (a) $p = 0.1$ everywhere | $[98(-\ln 0.9) + 2(-\ln 0.1)]/100 = 0.149$ | $1 - \frac{2 \cdot 0.2}{10 + 2} = 0.967$ |
  | (b) $p = 0.9$ on the object, $0.1$ elsewhere | $-\ln 0.9 = 0.105$ | $1 - \frac{2 \cdot 1.8}{11.6 + 2} = 0.735$ |
  | (c) $p = 0.9$ on the object, $0.01$ elsewhere | $[98(-\ln 0.99) + 2(-\ln 0.9)]/100 = 0.012$ | $1 - \frac{2 \cdot 1.8}{2.78 + 2} = 0.247$ |

  BCE already calls (a), a model that has found nothing, nearly solved (0.149), and finding the
  object, (a) to (b), lowers it by less than a third: the 98 background pixels dominate it.
  Dice calls (a) almost completely wrong, rewards finding the object, and then charges the soft
  false positives spread over the background: 98 pixels at $p = 0.1$ add $9.8$ to $P$, five times
  the object's size.
  """),
  code(
    """
    # 7-pixel image, probabilities given directly (from_logits=False), no smoothing.
    p7 = np.zeros((1, 7, 1), np.float32)
    p7[0, 3, 0], p7[0, 4, 0], p7[0, 6, 0] = 0.8, 0.1, 0.6
    g7 = np.zeros((1, 7), np.int32)
    g7[0, 3:5] = 1
    d7 = float(losses.dice_loss(p7, g7, from_logits=False, smooth=0.0))
    print(f"7-pixel image: dice loss = {d7:.4f}   by hand 1 - 1.8/3.5 = 0.486")
    np.testing.assert_allclose(d7, 1 - 1.8 / 3.5, atol=1e-5)

    # 10 x 10 image with a 2-pixel object.
    g = np.zeros((1, 10, 10), np.int32)
    g[0, 4, 4:6] = 1
    cases = {
        "(a) p=0.1 everywhere": (0.1, 0.1, 0.149, 0.967),
        "(b) p=0.9 object, 0.1 elsewhere": (0.9, 0.1, 0.105, 0.735),
        "(c) p=0.9 object, 0.01 elsewhere": (0.9, 0.01, 0.012, 0.247),
    }
    rows = ["| prediction | BCE (seg_jax) | by hand | Dice loss (seg_jax) | by hand |", "|---|---|---|---|---|"]
    for name, (p_obj, p_bg, bce_hand, dice_hand) in cases.items():
        prob = np.where(g == 1, p_obj, p_bg).astype(np.float32)[..., None]
        logits = np.log(prob / (1 - prob))
        bce = float(losses.binary_cross_entropy(logits, g))
        dice = float(losses.dice_loss(logits, g, smooth=0.0))
        np.testing.assert_allclose([bce, dice], [bce_hand, dice_hand], atol=6e-4)
        rows.append(f"| {name} | {bce:.4f} | {bce_hand} | {dice:.4f} | {dice_hand} |")
    display(Markdown("\\n".join(rows)))
    """
  ),
  md(r"""
  ## 2. Each pixel loss and its gradient

  The network does not see the loss, it sees the gradient with respect to its logits. Below, one
  pixel's loss and $\partial \ell / \partial x$ (the logit) against its predicted foreground
  probability $p$, for a positive ($y = 1$) and a negative ($y = 0$) pixel, computed with
  `jax.vmap(jax.value_and_grad(...))` through the `seg_jax` losses.

  For BCE, $\partial \ell / \partial x = p - y$: the push is proportional to the error, and an
  almost-right pixel still gets a small push. Focal loss multiplies the loss by
  $(1 - p_t)^\gamma$, where $p_t$ is the probability of the true class: the larger $\gamma$, the
  flatter the curves near $p_t = 1$ (easy pixels) while wrong pixels ($p_t$ small) keep most of
  their gradient.
  """),
  code(
    """
    p_grid = np.linspace(0.005, 0.995, 199)
    z_grid = jnp.asarray(np.log(p_grid / (1 - p_grid)), jnp.float32)


    @functools.partial(jax.jit, static_argnums=(0, 1))
    def pixel_curve(loss_fn, y):
        # Loss and d loss / d logit of a one-pixel image, for every logit in z_grid.
        label = jnp.full((1, 1), y, jnp.int32)
        value_and_grad = jax.value_and_grad(lambda z: loss_fn(z.reshape(1, 1, 1), label))
        return jax.vmap(value_and_grad)(z_grid)


    curves = {"BCE": losses.binary_cross_entropy}
    for gamma in (0.5, 1.0, 2.0, 5.0):
        curves[f"focal, $\\\\gamma$={gamma:g}"] = losses.get("focal", gamma=gamma)

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    for col, y in enumerate((1, 0)):
        for (name, fn), ls in zip(curves.items(), ["-", "--", "-.", ":", (0, (5, 1, 1, 1))]):
            value, grad = pixel_curve(fn, y)
            color = "black" if name == "BCE" else None
            axes[0, col].plot(p_grid, value, ls=ls, color=color, label=name)
            axes[1, col].plot(p_grid, grad, ls=ls, color=color, label=name)
        kind = "positive pixel (y = 1)" if y == 1 else "negative pixel (y = 0)"
        axes[0, col].set(title=f"Loss, {kind}", ylabel="loss of the pixel", ylim=(0, 4))
        axes[1, col].set(title=f"Gradient, {kind}", xlabel="predicted foreground probability p",
                         ylabel="d loss / d logit")
        axes[1, col].axhline(0, color="grey", lw=0.5)
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Pixel losses and their gradients: BCE and focal loss")
    fig.tight_layout()
    plt.show()
    """
  ),
  md(r"""
  ### What $\gamma$ does to easy pixels

  The focal factor $(1 - p_t)^\gamma$ is the ratio focal / cross-entropy for one pixel. Measured
  from the two `seg_jax` losses (and equal to the formula):
  """),
  code(
    """
    gammas = (0.0, 0.5, 1.0, 2.0, 5.0)
    p_ts = (0.5, 0.7, 0.9, 0.99)
    rows = ["| $p_t$ | " + " | ".join(f"$\\\\gamma$ = {g:g}" for g in gammas) + " |",
            "|---|" + "---|" * len(gammas)]
    for p_t in p_ts:
        logit = jnp.full((1, 1, 1), np.log(p_t / (1 - p_t)), jnp.float32)
        bce = losses.binary_cross_entropy(logit, positive)
        cells = []
        for gamma in gammas:
            ratio = float(losses.focal_loss(logit, positive, gamma=gamma) / bce)
            np.testing.assert_allclose(ratio, (1 - p_t) ** gamma, rtol=1e-4)
            cells.append(f"{ratio:.2g}")
        rows.append(f"| {p_t} | " + " | ".join(cells) + " |")
    display(Markdown("\\n".join(rows)))
    """
  ),
  md(r"""
  With $\gamma = 2$ a pixel at $p_t = 0.9$ keeps 1 % of its cross-entropy and one at $0.99$ keeps
  0.01 %; a pixel at $p_t = 0.5$ keeps 25 %. Under imbalance this changes who owns the loss. Take
  an image of 1000 pixels: 980 easy background pixels at $p_t = 0.95$ and 20 hard foreground
  pixels at $p_t = 0.3$. By hand, BCE gives the background $980 \times 0.0513 = 50.3$ against
  $20 \times 1.204 = 24.1$ for the object, 68 % of the loss; focal loss with $\gamma = 2$ gives
  it $980 \times 0.0025 \times 0.0513 = 0.126$ against $20 \times 0.49 \times 1.204 = 11.8$, 1 %.
  """),
  code(
    """
    def pixel_loss(fn, p, y):
        logit = jnp.full((1, 1, 1), np.log(p / (1 - p)), jnp.float32)
        return float(fn(logit, jnp.full((1, 1), y, jnp.int32)))

    rows = ["| loss | background share of the loss |", "|---|---|"]
    for name, fn in [("BCE", losses.binary_cross_entropy)] + [
        (f"focal, $\\\\gamma$ = {g:g}", losses.get("focal", gamma=g)) for g in (0.5, 1.0, 2.0, 5.0)
    ]:
        easy = 980 * pixel_loss(fn, 0.05, 0)  # background pixels, p_t = 0.95
        hard = 20 * pixel_loss(fn, 0.3, 1)  # foreground pixels, p_t = 0.3
        rows.append(f"| {name} | {100 * easy / (easy + hard):.1f} % |")
    display(Markdown("\\n".join(rows)))
    """
  ),
  md(r"""
  ### One pixel of a small object, under Dice

  Dice is not a sum over pixels, so a pixel's gradient depends on the whole image. From
  $D = 2I/(P+G)$:

  $$\frac{\partial (1 - D)}{\partial p_i} = \frac{D - 2 g_i}{P + G},$$

  negative for an object pixel (push $p_i$ up, size $(2 - D)/(P+G)$), positive for a background
  pixel (push down, size $D/(P+G)$). The scale is $1/(P+G)$, about one over the object's size
  once the prediction is about the right size, not $1/N$ as for a mean over the image. Below: an image of $N = 1024$ pixels, an object of $G$
  pixels predicted at $p = 0.5$, background at $p = 0.02$; we move the probability of one
  object pixel (left) or one background pixel (right) and record the Dice loss of the image and
  the gradient with respect to that pixel's logit. BCE (mean over the image) is drawn for
  comparison: its gradient, $(p - y)/N$, does not depend on the object's size.
  """),
  code(
    """
    N = 1024
    sizes = (4, 16, 64, 256)


    @functools.partial(jax.jit, static_argnums=0)
    def one_pixel_curves(loss_fn, base, labels, pixel):
        # Loss of the image and d loss / d logit of `pixel`, for every logit of that pixel in z_grid.
        def f(z):
            return loss_fn(base.at[0, pixel, 0].set(z), labels)

        return jax.vmap(jax.value_and_grad(f))(z_grid)


    def image_with_object(size):
        labels = np.zeros((1, N), np.int32)
        labels[0, :size] = 1
        prob = np.where(labels == 1, 0.5, 0.02)[..., None]
        return jnp.asarray(np.log(prob / (1 - prob)), jnp.float32), jnp.asarray(labels)


    dice_fn = losses.get("dice")
    half = int(np.argmin(np.abs(p_grid - 0.5)))  # index of p = 0.5
    summary = ["| object size | Dice loss change as one object pixel goes from p = 0 to 1 | "
               "Dice / BCE gradient at p = 0.5, object pixel | same, background pixel |", "|---|---|---|---|"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    curves = {}
    for col, (pixel, kind) in enumerate([(0, "object pixel (y = 1)"), (N - 1, "background pixel (y = 0)")]):
        _, bce_grad = one_pixel_curves(losses.binary_cross_entropy, *image_with_object(sizes[0]), pixel)
        for size in sizes:
            value, grad = one_pixel_curves(dice_fn, *image_with_object(size), pixel)
            curves[size, pixel] = (value, grad / bce_grad)
            axes[0, col].plot(p_grid, value, label=f"Dice, object of {size} px")
            axes[1, col].semilogy(p_grid, np.abs(grad), label=f"Dice, object of {size} px")
        axes[1, col].semilogy(p_grid, np.abs(bce_grad), "k--", label="BCE (any object size)")
        axes[0, col].set(title=f"Dice loss of the image vs one {kind}", ylabel="Dice loss of the image")
        axes[1, col].set(title=f"|gradient| at one {kind}", xlabel="predicted foreground probability p of that pixel",
                         ylabel="|d loss / d logit|")
    for ax in axes.ravel():
        ax.grid(alpha=0.3, which="both")
    handles, labels_ = axes[1, 0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="lower center", ncol=5, fontsize=9)
    fig.suptitle(f"Per-pixel effect of Dice on an image of {N} pixels: small objects get large gradients")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    plt.show()
    for size in sizes:
        value, ratio_obj = curves[size, 0]
        ratio_bg = curves[size, N - 1][1]
        summary.append(f"| {size} px | {float(value[0] - value[-1]):.3f} | "
                       f"{float(ratio_obj[half]):.0f}x | {float(ratio_bg[half]):.1f}x |")
    display(Markdown("\\n".join(summary)))
    """
  ),
  md(r"""
  On a 4-pixel object, one object pixel moves the image's Dice loss by several hundredths and
  gets a gradient tens of times BCE's; on a 256-pixel object it barely matters. This is why
  overlap losses are advised under imbalance: they give a small class the same weight as a large
  one. Two side effects follow from the formula. Background pixels are pushed down in proportion
  to $D$: while the object is still poorly found ($D$ small) Dice hardly penalises false
  positives, so a Dice-trained model can over-segment early in training (recall above
  precision). And the scale $1/(P+G)$ is large when the object and the prediction are small
  (noisy early training; empty images, where $G = 0$ leaves only the smoothing constant), which
  is one reason compounds such as Dice + CE are the usual default.

  ## 3. The effect of imbalance, measured

  The same tiny U-Net, schedule and seed, trained with each loss on two synthetic data sets:
  `balanced` (ellipses and polygons, about 20 % foreground) and `imbalanced` (1-2 small objects,
  about 2 % foreground). Each data set is one call of `seg_jax.compare.run_comparison`, the
  function behind `python -m seg_jax.compare`: it trains one model per loss with
  `seg_jax.train.train_and_evaluate`, everything but the loss and the seed identical (two seeds
  here, three by default), scores every validation image, and writes `report.md` (its verdict
  first: which losses are tied with the best, which differ significantly), `summary.json` and
  figures into the comparison's directory.
  """),
  code(
    """
    import sys

    from seg_jax import compare, data
    from seg_jax.training import config as train_config

    KINDS = ("balanced", "imbalanced")
    if SMALL:
        LOSSES = ["cross_entropy", "focal", "dice"]
    else:
        LOSSES = ["cross_entropy", "focal", "dice", "dice_ce"]


    def make_config(kind):
        c = train_config.default_config()  # the loss is set per run by run_comparison
        c.data.data_dir = DATA_DIR
        c.data.config = kind
        t = c.train
        if SMALL:  # 6.6 k parameters, 32 x 32 images, 60 steps of 8 images
            c.model.features, c.model.depth, c.model.num_groups = 8, 2, 4
            c.data.image_size = 32
            c.data.synthetic.num_train, c.data.synthetic.num_validation = 64, 16
            c.data.synthetic.num_test = 4
            c.data.num_threads = 1
            t.steps, t.batch_size, t.learning_rate, t.warmup_steps = 60, 8, 1e-2, 5
            t.log_every, t.eval_every = 5, 20
        else:  # 64 x 64 images, 1000 training images, 400 steps of 16 images
            c.model.features, c.model.depth = 16, 3
            t.steps, t.eval_every, t.log_every = 400, 100, 20
        t.checkpoint_every = 0
        t.test_at_end = False
        t.async_checkpoints = False
        t.progress_bar = False
        t.num_plot_examples = 0  # compare draws one grid of all losses instead
        return c


    with contextlib.redirect_stdout(io.StringIO()):  # tfds's "Downloading and preparing..." lines
        datasets = {kind: data.load(make_config(kind).data) for kind in KINDS}
    fig, axes = plt.subplots(2, 5, figsize=(12, 5.4))
    for row, kind in enumerate(KINDS):
        ds = datasets[kind]
        for col in range(5):
            ex = ds.example("train", col)
            ax = axes[row, col]
            ax.imshow(ex["image"])
            ax.contour(ex["label"], levels=[0.5], colors="red", linewidths=1)
            ax.set_title(f"{kind} #{col}: {100 * ex['label'].mean():.1f} % fg", fontsize=9)
            ax.axis("off")
    fig.suptitle("Training examples (red: outline of the true foreground)")
    fig.tight_layout()
    plt.show()
    """
  ),
  md(r"""
  Training: one progress line per loss (the trainer's own log goes to `train.log` in each
  comparison's directory). Re-running the notebook with the same `WORK_DIR` trains nothing
  again: `run_comparison` skips finished runs and resumes interrupted ones.
  """),
  code(
    """
    summaries = {}
    notebook_stdout = sys.stdout
    for kind in KINDS:
        outdir = os.path.join(WORK_DIR, kind)
        log = io.StringIO()
        print(f"--- {kind}")
        with contextlib.redirect_stdout(log):
            summaries[kind] = compare.run_comparison(
                make_config(kind), LOSSES, outdir,
                seeds=2 if SMALL else 3,
                num_examples=(3 if SMALL else 4) if kind == "imbalanced" else 0,
                echo=lambda line: print(line, file=notebook_stdout),
            )
        with open(os.path.join(outdir, "train.log"), "a") as f:
            f.write(log.getvalue())
    print("written by compare:", sorted(f for f in os.listdir(os.path.join(WORK_DIR, "imbalanced"))
                                        if os.path.isfile(os.path.join(WORK_DIR, "imbalanced", f))))
    """
  ),
  code(
    """
    def final(kind, loss):
        return summaries[kind]["runs"][loss][0]["final"] or {}  # seed 0


    def fmt(value):
        if value is None or not np.isfinite(value):
            return "-"
        return f"{value:.3f}"


    rows = ["| data | loss | Dice | IoU | precision | recall | HD95 (px) | wall time (s) |",
            "|---|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        for loss in LOSSES:
            m = final(kind, loss)
            rows.append(
                f"| {kind} | `{loss}` | {fmt(m.get('dice_mean'))} | {fmt(m.get('iou_mean'))} | "
                f"{fmt(m.get('precision_mean'))} | {fmt(m.get('recall_mean'))} | {fmt(m.get('hd95'))} | "
                f"{summaries[kind]['runs'][loss][0]['wall_s']:.1f} |"
            )
    display(Markdown(
        "Seed 0: validation metrics of the foreground class after the last step "
        "(`-`: undefined, e.g. the precision of a model that predicts no foreground, or HD95 "
        "when no image has foreground in both prediction and truth; wall time includes "
        "compilation).\\n\\n" + "\\n".join(rows)
    ))

    metric_names = [("dice_mean", "Dice"), ("precision_mean", "precision"), ("recall_mean", "recall")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    width = 0.8 / len(LOSSES)
    x = np.arange(len(KINDS))
    for ax, (key, label) in zip(axes[:3], metric_names):
        for j, loss in enumerate(LOSSES):
            # Undefined (e.g. the precision of a model predicting no foreground): no bar, "n/a".
            values = [final(kind, loss).get(key, np.nan) for kind in KINDS]
            bars = ax.bar(x + (j - (len(LOSSES) - 1) / 2) * width, np.nan_to_num(values), width,
                          label=loss)
            ax.bar_label(bars, labels=[f"{v:.2f}" if np.isfinite(v) else "n/a" for v in values],
                         fontsize=7)
        ax.set(xticks=x, xticklabels=KINDS, ylim=(0, 1.05), xlabel="data set",
               ylabel=f"validation {label}", title=f"Foreground {label}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[3]
    for j, loss in enumerate(LOSSES):
        for kind, ls in zip(KINDS, ["-", "--"]):
            curve = summaries[kind]["runs"][loss][0]["curves"]
            ax.plot(curve["val_step"], curve["val_dice"], ls=ls, marker="o", color=f"C{j}",
                    label=f"{loss}, {kind}")
    ax.set(xlabel="training step", ylabel="validation Dice", ylim=(0, 1), title="Learning curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("Same model, data and schedule; only the loss changes")
    fig.tight_layout()
    plt.show()
    """
  ),
  md(r"""
  The same validation images of the `imbalanced` set segmented by each loss (the
  `predictions.png` that `compare` writes next to `report.md`):
  """),
  code(
    """
    display(Image(filename=summaries["imbalanced"]["figures"]["predictions"], width=760))
    """
  ),
  code(
    """
    lines = ["Measured in this run (validation Dice, balanced -> imbalanced):", ""]
    for loss in LOSSES:
        b, i = (final(kind, loss).get("dice_mean", 0.0) for kind in KINDS)
        rec = final("imbalanced", loss).get("recall_mean", 0.0)
        pre = final("imbalanced", loss).get("precision_mean")
        pre = "undefined (no foreground predicted)" if pre is None else f"{pre:.3f}"
        lines.append(f"* `{loss}`: {b:.3f} -> {i:.3f}; on `imbalanced` recall {rec:.3f}, precision {pre}.")
    lines += ["", f"Highest Dice on `imbalanced` here: `{summaries['imbalanced']['best']}`."]
    for kind in KINDS:  # compare's verdict over all seeds, paired by image (report.md)
        lines += ["", f"**Verdict on `{kind}`** (`report.md`): {summaries[kind]['verdict']}"]
    display(Markdown("\\n".join(lines)))
    """
  ),
  md(r"""
  How to read this. What to look for, from sections 1-2: on the balanced set every loss gets
  enough signal from the objects, so the losses should end close to each other. On the
  imbalanced set the pixel-averaged losses (cross-entropy, and focal loss, which is still a
  pixel average) see an almost all-background image, and a short schedule is where this shows
  most: a model that predicts no foreground at all (recall 0, precision undefined) or finds the
  objects late. Ma et al. (2021) report the same failure of plain focal loss on small
  structures. Dice normalises by the object's size, so it finds the objects early, typically with
  high recall and low precision (its push on false positives is proportional to $D$, section 2).
  Whether the pixel losses catch up with a longer schedule, and which loss ends best, depends on
  the data and the schedule: that is what `SMALL = False`, and `compare` on your own data,
  measure. In `SMALL` mode these are a few dozen steps of a 6.6 k-parameter model judged on 16
  validation images: read the direction of the effects, not the ranking. `docs/choosing.md`
  reports `compare` runs with the protocol (3 seeds, the default 400 steps, paired tests over the
  validation images): on `imbalanced`, `dice` was best (0.846) with `dice_boundary` tied and
  cross-entropy 0.051 lower; on the thin-structure set `dice` and `dice_ce` were tied and
  `cldice` collapsed on two of three seeds, which is why it is tried beside `dice_ce`, not
  instead of it.

  ## 4. How to choose

  The rules of thumb, and why (sections 1-3):

  | situation | start with | why |
  |---|---|---|
  | any data | `cross_entropy` and `dice_ce` as references | CE is the standard; Dice + CE is nnU-Net's default and among the most robust in Ma et al. 2021 |
  | rarest foreground class < 10 % of the pixels | `dice`, `dice_ce`, `dice_topk`, `focal_tversky`; under 1 % also `dice_focal` | overlap losses weigh a class by its size, not its pixel count (section 2); focal loss alone down-weights easy pixels but stays a pixel average |
  | thin structures (vessels, roads) | add `cldice`, `dice_skeleton_recall` | a 1-pixel break costs almost nothing in Dice but breaks the topology |
  | small objects, boundary quality | `dice_boundary`, `dice_hausdorff` (a distance loss added to Dice) | they weigh errors by their distance to the true contour |
  | many images without foreground | keep batch statistics (`per_image=False`, the default) or `ignore_empty=True` | per-image Dice is 0/0 there, decided by the smoothing constant |

  These are the rules `python -m seg_jax.inspect` applies (written down in `seg_jax/choosing/recommend.py`
  and `docs/choosing.md`, with their sources). It measures the labels of a data set and prints the
  losses to try and the `compare` command that tests them. Here it is called as a library on the
  two data sets of section 3:
  """),
  code(
    """
    from seg_jax.choosing.inspect import inspect_dataset, report

    reports = {}
    for kind in KINDS:
        stats = inspect_dataset(datasets[kind], "train")
        reports[kind] = report(stats, config_path="configs/default.py",
                               overrides=[f"--config.data.config={kind}"])
    print(reports["imbalanced"]["text"])
    """
  ),
  code(
    """
    fig, ax = plt.subplots(figsize=(8, 3.8))
    bins = [b["bin"] for b in reports["balanced"]["statistics"]["foreground_fraction"]["histogram"]]
    x = np.arange(len(bins))
    for j, kind in enumerate(KINDS):
        hist = reports[kind]["statistics"]["foreground_fraction"]["histogram"]
        counts = np.array([b["count"] for b in hist], float)
        ax.bar(x + (j - 0.5) * 0.4, 100 * counts / counts.sum(), 0.4, label=kind)
    ax.set(xticks=x, xticklabels=bins, xlabel="foreground fraction of the image",
           ylabel="% of training images", title="Foreground fraction per image (seg_jax.inspect)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plt.show()
    for kind in KINDS:
        print(f"{kind:>10}: losses to try {reports[kind]['losses']}")
    """
  ),
  md(r"""
  On your own data the same two steps run from the command line, with the config that trains
  your model (`configs/default.py` and its `--config.*` overrides; `--config.data.name=image_folder
  --config.data.folder.path=...` for a folder of images and masks):

  ```bash
  # 1. Measure the labels and get the losses worth trying, with the reasons and sources.
  python -m seg_jax.inspect --config=configs/default.py --config.data.config=imbalanced

  # 2. Train one model per loss, everything else identical; report.md + figures in the
  #    comparison's directory (finished losses are not trained again).
  python -m seg_jax.compare --config=configs/default.py --config.data.config=imbalanced \
      --losses=cross_entropy,dice_ce,dice,dice_topk,focal_tversky
  ```

  The exact `compare` command `inspect` printed for the imbalanced data above:
  """),
  code(
    """
    print(reports["imbalanced"]["compare_command"])
    """
  ),
  md(r"""
  Then choose on the metric that matters for the task, on the validation split, and look beyond
  the mean Dice: precision and recall (a loss can win Dice by over-segmenting), HD95 (boundary
  errors), and the prediction images. Prefer the simplest loss within noise of the best; a
  compound (Dice + CE) is the usual safe choice when the differences are small, and a loss that
  wins only on one seed or one schedule has not won.

  **References.** Lin et al., *Focal loss for dense object detection*, ICCV 2017. Milletari et
  al., *V-Net*, 3DV 2016. Sudre et al., *Generalised Dice overlap*, DLMIA 2017. Isensee et al.,
  *nnU-Net*, Nature Methods 2021. Ma et al., *Loss odyssey in medical image segmentation*, MedIA
  2021. See `docs/choosing.md` for the full list.
  """),
]

# ------------------------------------------------------------------------------------------------
# losses_in_your_code.ipynb

in_your_code = [
  md(r"""
  # seg_jax losses in your own JAX training code

  `seg_jax.losses` needs only `jax`, `numpy` and `chex`: every loss is a pure function
  `loss(logits, labels, *, options) -> jax.Array` on channels-last arrays, so it drops into any
  JAX training loop. This notebook trains a tiny Flax NNX model with optax on synthetic batches and
  shows `jax.jit`, `jax.grad`, `jax.vmap`, `losses.get` / `losses.combine`, masks and
  `ignore_index`, and `jax.shard_map` with `axis_name` over the available devices.
  """),
  code(
    """
    # Parameters (papermill-style: this cell is tagged "parameters").
    SMALL = True  # fewer training steps
    """,
    tags=["parameters"],
  ),
  code(
    """
    import jax

    # On a CPU-only machine, split the CPU into 4 devices so that the shard_map section has devices
    # to shard over. This must run before JAX's first operation; it does not affect GPUs or TPUs.
    try:
        jax.config.update("jax_num_cpu_devices", 4)
    except RuntimeError:  # JAX already initialised (the cell is re-run): keep the devices it has.
        pass

    import jax.numpy as jnp
    import matplotlib.pyplot as plt
    import numpy as np
    import optax
    from flax import nnx
    from jax.sharding import Mesh, PartitionSpec as P

    from seg_jax import losses

    print(f"JAX {jax.__version__}, devices: {jax.devices()}")
    print("registry:", ", ".join(losses.names()))
    """
  ),
  md(r"""
  ## A synthetic batch and a tiny model

  Images with 1-3 bright discs on noise; labels are integer class maps `(batch, height, width)`
  with 1 = disc. The model outputs one logit channel, so the losses use their binary (sigmoid)
  mode.
  """),
  code(
    """
    def make_batch(n, size=32, seed=0):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:size, :size]
        labels = np.zeros((n, size, size), np.int32)
        for i in range(n):
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.uniform(4, size - 4, 2)
                r = rng.uniform(2, 6)
                labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = 1
        images = 0.5 * labels[..., None] + rng.normal(0, 0.3, (n, size, size, 1))
        return jnp.asarray(images, jnp.float32), jnp.asarray(labels)


    class TinyNet(nnx.Module):  # Flax NNX
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(1, 16, (3, 3), rngs=rngs)
            self.conv2 = nnx.Conv(16, 16, (3, 3), rngs=rngs)
            self.head = nnx.Conv(16, 1, (1, 1), rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.conv1(x))
            x = nnx.relu(self.conv2(x))
            return self.head(x)  # (batch, H, W, 1) logits


    images, labels = make_batch(8)
    # NNX's functional form: a static graph definition and a pytree of parameters, merged back
    # into the module inside jitted functions (what seg_jax's trainer does with its U-Net).
    graphdef, params = nnx.split(TinyNet(nnx.Rngs(0)))


    def forward(p, x):
        return nnx.merge(graphdef, p)(x)


    apply = jax.jit(forward)
    logits = apply(params, images)
    print("images", images.shape, "labels", labels.shape, labels.dtype, "logits", logits.shape)
    print(f"foreground: {100 * float(labels.mean()):.1f} % of the pixels")
    """
  ),
  md(r"""
  ## Calling losses: direct, `get`, `combine`

  Call a loss directly, bind options by registry name with `losses.get(name, **options)` (what a
  config file does), or build a weighted sum with `losses.combine({name: weight}, **shared)`.
  Unknown names and options are errors that list the valid ones.
  """),
  code(
    """
    candidates = {
        "dice": losses.dice_loss,
        "BCE": losses.binary_cross_entropy,
        "tversky(0.3, 0.7)": losses.get("tversky", alpha=0.3, beta=0.7),  # weigh false negatives more
        "dice + BCE": losses.combine({"dice": 1.0, "binary_cross_entropy": 1.0}),
        "preset dice_ce": losses.get("dice_ce"),  # dice + cross-entropy (sigmoid on one channel)
    }
    for name, fn in candidates.items():
        print(f"{name:<18} {float(jax.jit(fn)(logits, labels)):.4f}")
    try:
        losses.get("focal", gama=2.0)
    except TypeError as err:
        print("\\nTypeError:", err)
    """
  ),
  md(r"""
  ## A training loop with optax and `jax.jit`

  The loss is an ordinary JAX function of the logits: `jax.value_and_grad` differentiates through
  it and `jax.jit` compiles the whole step.
  """),
  code(
    """
    loss_fn = losses.combine({"dice": 1.0, "binary_cross_entropy": 1.0})
    tx = optax.adam(1e-2)


    @jax.jit
    def train_step(params, opt_state, images, labels):
        def objective(p):
            return loss_fn(forward(p, images), labels)

        loss, grads = jax.value_and_grad(objective)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss


    def hard_dice(params, images, labels):
        pred = np.asarray(apply(params, images))[..., 0] > 0
        truth = np.asarray(labels) == 1
        return 2 * np.sum(pred & truth) / (np.sum(pred) + np.sum(truth))


    steps = 60 if SMALL else 300
    opt_state = tx.init(params)
    history = []
    for step in range(steps):
        batch_images, batch_labels = make_batch(8, seed=step + 1)
        params, opt_state, loss = train_step(params, opt_state, batch_images, batch_labels)
        history.append(float(loss))
    val_images, val_labels = make_batch(16, seed=10_000)
    print(f"after {steps} steps: training loss {history[-1]:.3f}, "
          f"validation Dice {hard_dice(params, val_images, val_labels):.3f}")

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), gridspec_kw={"width_ratios": [2, 1, 1, 1]})
    axes[0].plot(history, label="dice + BCE")
    axes[0].set(xlabel="step", ylabel="training loss", title="Training loss")
    axes[0].grid(alpha=0.3)
    axes[0].legend()
    pred = np.asarray(apply(params, val_images))[0, ..., 0] > 0
    for ax, img, title in zip(axes[1:], [val_images[0, ..., 0], val_labels[0], pred],
                              ["validation image", "truth", "prediction"]):
        ax.imshow(img, cmap="gray")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    plt.show()
    """
  ),
  md(r"""
  ## `jax.grad` and `jax.vmap`

  The gradient with respect to the logits has the logits' shape. `jax.vmap` over examples gives
  per-example losses; for a region loss that is the per-image statistic, the same as
  `per_image=True, reduction='none'`.
  """),
  code(
    """
    logits = apply(params, images)
    g = jax.jit(jax.grad(losses.dice_loss))(logits, labels)
    print("d dice / d logits:", g.shape, "finite:", bool(jnp.isfinite(g).all()))

    per_example = jax.jit(jax.vmap(lambda x, y: losses.dice_loss(x[None], y[None])))(logits, labels)
    builtin = jax.jit(losses.get("dice", per_image=True, reduction="none"))(logits, labels)
    print("vmap     :", np.asarray(per_example))
    print("per_image:", np.asarray(builtin))
    np.testing.assert_allclose(per_example, builtin, rtol=1e-5, atol=1e-6)
    """
  ),
  md(r"""
  ## Masks and `ignore_index`

  Unannotated pixels can be marked in the label map (`ignore_index`, e.g. 255) or given weight 0
  in a `mask` of shape `(batch, height, width)`. Ignored pixels contribute nothing: the loss is
  the one of the kept pixels and their gradient is exactly 0. `losses.check_labels` validates
  label maps eagerly (inside `jit` a loss cannot raise on values).
  """),
  code(
    """
    partial = labels.at[:, :, :8].set(255)  # the left 8 columns are not annotated
    keep = partial != 255
    with_ignore = jax.jit(losses.get("dice_ce", ignore_index=255))
    a = with_ignore(logits, partial)
    b = jax.jit(losses.dice_ce_loss)(logits, jnp.where(keep, labels, 0), mask=keep.astype(jnp.float32))
    print(f"ignore_index: {float(a):.6f}   mask: {float(b):.6f}")
    np.testing.assert_allclose(a, b, rtol=1e-6)

    g = jax.jit(jax.grad(with_ignore))(logits, partial)
    print("max |gradient| on ignored pixels:", float(jnp.abs(g[:, :, :8]).max()))
    assert float(jnp.abs(g[:, :, :8]).max()) == 0.0

    losses.check_labels(partial, num_classes=2, ignore_index=255)  # passes
    try:
        losses.check_labels(labels.at[0, 0, 0].set(7), num_classes=2, ignore_index=255)
    except ValueError as err:
        print("ValueError:", err)
    """
  ),
  md(r"""
  ## Data parallelism: `jax.shard_map` with `axis_name`

  With the batch split over devices, a region loss computed on each shard is *not* the loss of
  the batch (Dice of pooled sums is not the mean of per-shard Dice). Passing `axis_name` makes
  the loss `psum` its statistics over that mesh axis, so every device gets the value of the
  whole global batch. The gradient convention: under `shard_map` with its default
  `check_vma=True`, the gradient with respect to a replicated parameter comes back already
  reduced over the devices: it *is* the one-device gradient of the global batch, to be used as it
  is. (With `check_vma=False` the `pmap` convention applies instead: the devices' gradients
  differ and their `pmean` is the global gradient. A test against the one-device gradient, as
  below, catches a mix-up either way.)
  """),
  code(
    """
    n = len(jax.devices())
    mesh = Mesh(np.array(jax.devices()), ("data",))
    images, labels = make_batch(2 * n, seed=123)  # 2 examples per device
    logits = apply(params, images)


    def per_shard(x, y, axis_name):
        return losses.dice_loss(x, y, axis_name=axis_name)[None]  # one value per device


    with_axis = jax.jit(jax.shard_map(lambda x, y: losses.dice_loss(x, y, axis_name="data"),
                                      mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P()))
    without_axis = jax.jit(jax.shard_map(lambda x, y: per_shard(x, y, None),
                                         mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P("data")))
    single = jax.jit(losses.dice_loss)(logits, labels)
    print(f"{n} device(s); dice of the global batch on one device: {float(single):.6f}")
    print(f"shard_map with axis_name='data'                : {float(with_axis(logits, labels)):.6f}")
    print(f"mean of per-shard dice without axis_name       : {float(without_axis(logits, labels).mean()):.6f}")
    # Equal up to float32 rounding: the devices' partial sums are added in another order than one
    # device's sums (about 1e-6 on a loss in [0, 1]); without axis_name the value is another one.
    np.testing.assert_allclose(with_axis(logits, labels), single, atol=1e-5)
    """
  ),
  md(r"""
  A data-parallel training step: parameters replicated (`P()`), batch split (`P('data')`), loss
  with `axis_name`, gradient used as it comes. It matches the one-device gradient of the whole
  batch.
  """),
  code(
    """
    def sharded_grad(params, images, labels):
        def objective(p):
            return loss_fn(forward(p, images), labels, axis_name="data")

        return jax.value_and_grad(objective)(params)  # no pmean: already the global gradient


    sharded = jax.jit(jax.shard_map(sharded_grad, mesh=mesh,
                                    in_specs=(P(), P("data"), P("data")), out_specs=(P(), P())))
    loss_s, grads_s = sharded(params, images, labels)
    loss_1, grads_1 = jax.jit(jax.value_and_grad(lambda p: loss_fn(forward(p, images), labels)))(params)
    print(f"loss: sharded {float(loss_s):.6f}, one device {float(loss_1):.6f}")
    diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(grads_s), jax.tree.leaves(grads_1)))
    scale = max(float(jnp.abs(b).max()) for b in jax.tree.leaves(grads_1))
    print(f"largest gradient difference {diff:.2e} (largest gradient {scale:.2e})")
    np.testing.assert_allclose(loss_s, loss_1, rtol=1e-5)
    assert diff <= 1e-4 * scale
    """
  ),
  md(r"""
  ## Bad input fails early and says why

  Shapes are checked when the function is traced, and nothing broadcasts silently:
  """),
  code(
    """
    try:
        losses.dice_loss(logits, labels[:, :16])  # labels cropped by mistake
    except ValueError as err:
        print("ValueError:", err)
    """
  ),
  md(r"""
  Next: `choosing_a_loss.ipynb` for which loss to pick, and the docstrings
  (`help(losses.dice_loss)`) for every option and convention.
  """),
]


for name, cells in [("choosing_a_loss", choosing), ("losses_in_your_code", in_your_code)]:
  for i, cell in enumerate(cells):
    cell.id = f"cell-{i:02d}"  # stable ids: rebuilding gives no diff noise
  nb = notebook(cells)
  nbformat.validate(nb)
  path = os.path.join(ROOT, "notebooks", f"{name}.ipynb")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    nbformat.write(nb, f)
  print("wrote", path)
