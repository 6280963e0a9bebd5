"""DropBlock (Ghiasi, Lin & Le, NeurIPS 2018): drop whole blocks of a feature map.

Introduced in notebook 03. For each feature map (one per sample and channel, or one
per sample with ``shared_channels=True``) of size ``H x W``, in training:

1. draw seeds ~ Bernoulli(gamma), only where a whole ``b x b`` block fits: top-left
   corners in ``[0, H-b] x [0, W-b]`` (the *valid region*);
2. turn each seed into a ``b x b`` square of zeros (a max-pool of the seed map);
3. multiply the input by the mask and rescale by ``count(mask) / count_ones(mask)``
   over the whole tensor, so the expected sum is unchanged.

The block size is clipped to ``min(b, H, W)`` (``oversize="clip"``, the default);
``oversize="identity"`` leaves a map smaller than the block untouched instead, as the
original series' layer (DHZS/tf-dropblock) did: it drew its seeds over an empty
valid region. ``gamma="paper"`` uses the paper's
formula, which ignores overlapping blocks and so drops 4-13 % less than asked at
CIFAR sizes; ``gamma="exact"`` (the default) solves for the gamma whose expected drop
fraction is exactly ``1 - keep_prob``. With row coverage ``n_H(r)`` (how many valid
seed rows cover row ``r``), the expected dropped fraction is

    D(gamma) = 1 - 1/(H W) * sum_r sum_c (1 - gamma) ** (n_H(r) * n_W(c)),

a sum over at most ``b x b`` distinct coverage pairs; Newton's method from the
paper's gamma solves ``D(gamma) = 1 - keep_prob`` from below, in the graph, so
``keep_prob`` can be a variable that a schedule changes without retracing.
"""

import keras
import numpy as np
import tensorflow as tf

from cifar_helpers.augment import per_replica_seed

_NEWTON_STEPS = 8  # three reach float32 precision at CIFAR sizes; eight leave margin


def _as(value, dtype):
    """``value`` as a ``dtype`` tensor; Python floats go straight to ``dtype``."""
    if isinstance(value, int | float):
        return tf.constant(value, dtype)
    return tf.cast(value, dtype)


def _block(block_size, height, width):
    return tf.minimum(tf.minimum(tf.cast(block_size, tf.int32), height), width)


def _coverage_histogram(length, block, max_block: int, dtype):
    """How many rows (or columns) are covered by ``s`` valid seed rows, s=1..max_block.

    Coverage takes each value ``1 .. m-1`` exactly twice (near the two edges) and the
    value ``m = min(b, L - b + 1)`` for the ``L - 2 (m - 1)`` rows in between.
    """
    m = tf.minimum(block, length - block + 1)
    s = tf.range(1, max_block + 1)
    counts = tf.where(s < m, 2, tf.where(s == m, length - 2 * (m - 1), 0))
    return tf.cast(s, dtype), tf.cast(counts, dtype)


def _paper_gamma(height, width, block, keep_prob, dtype):
    h, w, b = (_as(v, dtype) for v in (height, width, block))
    valid = (h - b + 1) * (w - b + 1)
    return (1 - _as(keep_prob, dtype)) / (b * b) * (h * w) / valid


def _exact_gamma(height, width, block, keep_prob, max_block: int, dtype):
    """Solve ``D(gamma) = 1 - keep_prob`` by Newton's method (see the module doc)."""
    rows, row_counts = _coverage_histogram(height, block, max_block, dtype)
    cols, col_counts = _coverage_histogram(width, block, max_block, dtype)
    exponent = rows[:, None] * cols[None, :]  # coverage of a unit: n_H(r) * n_W(c)
    weight = row_counts[:, None] * col_counts[None, :] / _as(height * width, dtype)
    target = _as(keep_prob, dtype)  # the kept fraction, 1 - D(gamma)
    gamma = tf.clip_by_value(_paper_gamma(height, width, block, keep_prob, dtype), 0, 1)
    for _ in range(_NEWTON_STEPS):
        kept = tf.reduce_sum(weight * (1 - gamma) ** exponent)
        slope = -tf.reduce_sum(weight * exponent * (1 - gamma) ** (exponent - 1))
        gamma = tf.clip_by_value(
            gamma - tf.math.divide_no_nan(kept - target, slope), 0, 1
        )
    return gamma


def _gamma(method, height, width, block_size: int, keep_prob, dtype):
    """Seed probability of an ``H x W`` map; sizes may be tensors, ``b`` is clipped."""
    block = _block(block_size, height, width)
    if method == "paper":
        gamma = _paper_gamma(height, width, block, keep_prob, dtype)
    else:
        gamma = _exact_gamma(height, width, block, keep_prob, block_size, dtype)
    return tf.clip_by_value(gamma, 0.0, 1.0)


def _check_size(name, value):
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}: use a whole number of at least 1.")


def _check_keep_prob(keep_prob):
    if not 0 < float(keep_prob) <= 1:
        raise ValueError(
            f"keep_prob={keep_prob!r}: use a fraction in (0, 1]; 1 keeps everything, "
            "0.9 drops 10 % of the units."
        )


def _checked_gamma(method, height, width, block_size, keep_prob) -> float:
    """:func:`_gamma` in float64 for Python arguments, after checking them."""
    for name, value in (
        ("height", height),
        ("width", width),
        ("block_size", block_size),
    ):
        _check_size(name, value)
    _check_keep_prob(keep_prob)
    return float(_gamma(method, height, width, block_size, keep_prob, tf.float64))


def exact_gamma(height: int, width: int, block_size: int, keep_prob: float) -> float:
    """Seed probability whose expected drop fraction is exactly ``1 - keep_prob``.

    Computed in float64 with the same code the layer runs in the graph. Reference
    values: ``exact_gamma(16, 16, 7, 0.8) = 0.012320``, ``exact_gamma(32, 32, 3,
    0.9) = 0.013282``.
    """
    return _checked_gamma("exact", height, width, block_size, keep_prob)


def paper_gamma(height: int, width: int, block_size: int, keep_prob: float) -> float:
    """The paper's seed probability ``(1 - kp) / b^2 * H W / ((H-b+1)(W-b+1))``.

    ``b`` is clipped to the map, as in :func:`exact_gamma`. It ignores that blocks
    overlap, so the realised drop fraction falls short of ``1 - keep_prob``.
    """
    return _checked_gamma("paper", height, width, block_size, keep_prob)


def _row_coverage(length: int, block: int) -> np.ndarray:
    rows = np.arange(length)
    return np.minimum(rows, length - block) - np.maximum(0, rows - block + 1) + 1


def drop_probability_map(
    height: int, width: int, block_size: int, keep_prob: float, *, gamma: str = "exact"
) -> np.ndarray:
    """float64 ``H x W`` array: the probability that DropBlock drops each position.

    ``1 - (1 - gamma) ** (n_H(r) n_W(c))``: the centre is dropped far more often than
    the corners, so DropBlock preserves the expected value over the whole tensor, not
    per position. Its mean is the expected drop fraction.
    """
    solve = exact_gamma if gamma == "exact" else paper_gamma
    g = solve(height, width, block_size, keep_prob)
    block = min(block_size, height, width)
    coverage = np.outer(_row_coverage(height, block), _row_coverage(width, block))
    return 1 - (1 - g) ** coverage


def block_mask(seeds, block_size):
    """Expand a seed map into dropped blocks: 1 where dropped, 0 elsewhere.

    ``seeds`` is ``N x (H-b+1) x (W-b+1) x C`` (1 at a block's top-left corner, float);
    the result is ``N x H x W x C``. A seed at ``(i, j)`` marks the square of rows
    ``i .. i+b-1`` and columns ``j .. j+b-1``. This is the readable form of what
    :class:`DropBlock` computes (which pools the complement, see there).
    """
    return _max_pool_same(_place_seeds(seeds, block_size), block_size)


def _place_seeds(seeds, block_size):
    """Pad a valid-region seed map to ``H x W`` where :func:`_max_pool_same` needs it.

    A ``SAME`` pool pads ``before = (b-1) // 2`` rows above its input and ``after =
    b-1-before`` below; a seed at valid position ``i`` goes to row ``i + after``.
    Padding is 0 (or False): never a seed.
    """
    before = (block_size - 1) // 2
    after = block_size - 1 - before
    return tf.pad(seeds, [[0, 0], [after, before], [after, before], [0, 0]])


def _max_pool_same(values, block_size):
    """``b x b`` stride-1 ``SAME`` max-pool, separable: rows, then columns.

    Unit ``(r, c)`` of the output is the maximum over input rows ``r - before ..
    r + after`` (and likewise columns), so a value placed by :func:`_place_seeds`
    spreads over rows ``i .. i+b-1`` and columns ``j .. j+b-1``. Separable
    pooling costs ``2b`` comparisons a unit instead of ``b^2``.
    """
    rows = tf.raw_ops.MaxPoolV2(
        input=values, ksize=[1, block_size, 1, 1], strides=[1, 1, 1, 1], padding="SAME"
    )
    return tf.raw_ops.MaxPoolV2(
        input=rows, ksize=[1, 1, block_size, 1], strides=[1, 1, 1, 1], padding="SAME"
    )


@keras.saving.register_keras_serializable(package="cifar_helpers")
class DropBlock(keras.layers.Layer):
    """Drop ``b x b`` blocks of NHWC feature maps in training; the identity otherwise.

    Args:
        keep_prob: the fraction of units to keep, in (0, 1]. Held in a non-trainable
            variable (``layer.keep_prob``) that :class:`KeepProbSchedule` assigns
            inside a compiled ``fit`` without retracing.
        block_size: the side ``b`` of a dropped square (odd or even); clipped to the
            map, so ``b >= H, W`` drops whole maps and ``b = 1`` is dropout.
        shared_channels: one mask for all channels of a sample, instead of one per
            channel (the paper found per-channel masks better).
        gamma: ``"exact"`` (drop exactly ``1 - keep_prob`` in expectation) or
            ``"paper"`` (the paper's formula, which drops less).
        oversize: what a map smaller than the block gets: ``"clip"`` (the block is
            clipped to the map, so whole maps are dropped) or ``"identity"`` (the
            map is left untouched, as the original series' layer did; with
            ``gamma="paper"`` this is that layer's behaviour on every map size).
        seed: an int for reproducible masks.

    Noise, masks and counts are float32 under any precision policy; the output keeps
    the input's dtype. Works with unknown batch and spatial sizes, in ``tf.function``
    and under XLA.
    """

    def __init__(
        self,
        keep_prob,
        block_size,
        *,
        shared_channels=False,
        gamma="exact",
        oversize="clip",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_keep_prob(keep_prob)
        _check_size("block_size", block_size)
        if gamma not in ("exact", "paper"):
            raise ValueError(f"gamma={gamma!r}: use 'exact' or 'paper'.")
        if oversize not in ("clip", "identity"):
            raise ValueError(f"oversize={oversize!r}: use 'clip' or 'identity'.")
        self.oversize = oversize
        if not isinstance(shared_channels, bool):
            raise ValueError(f"shared_channels={shared_channels!r}: use True or False.")
        self.block_size = int(block_size)
        self.shared_channels = shared_channels
        self.gamma = gamma
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.keep_prob = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(float(keep_prob)),
            trainable=False,
            autocast=False,  # float32 even under mixed precision
            name="keep_prob",
        )
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        shape = tf.shape(inputs)
        height, width = shape[1], shape[2]
        block = _block(self.block_size, height, width)
        keep_prob = tf.convert_to_tensor(self.keep_prob)
        gamma = _gamma(
            self.gamma, height, width, self.block_size, keep_prob, tf.float32
        )
        channels = 1 if self.shared_channels else shape[3]
        valid = [shape[0], height - block + 1, width - block + 1, channels]
        seed = per_replica_seed(
            keras.random.randint([2], 0, 2**31 - 1, seed=self.seed_generator)
        )
        noise = tf.random.stateless_uniform(valid, seed, dtype=tf.float32)
        seeds = _place_seeds(noise < gamma, block)
        # Pool the complement of the seeds (0 at a seed, -1 elsewhere): the result
        # is -1 where a unit is kept and 0 where it is dropped, one pass over the
        # tensor fewer than pooling the seeds and subtracting them from 1.
        negative_keep = _max_pool_same(tf.where(seeds, 0.0, -1.0), block)
        # Rescale by the kept fraction of the whole tensor, counted in float32.
        # The scale is -total / kept, so -1 (kept) becomes total / kept.
        total = tf.cast(tf.size(negative_keep), tf.float32)
        scale = tf.math.divide_no_nan(total, tf.reduce_sum(negative_keep))
        mask = tf.stop_gradient(negative_keep * scale)
        dropped = inputs * tf.cast(mask, inputs.dtype)
        if self.oversize == "identity":
            smaller = tf.less(tf.minimum(height, width), self.block_size)
            return tf.where(smaller, inputs, dropped)
        return dropped

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "keep_prob": float(keras.ops.convert_to_numpy(self.keep_prob)),
            "block_size": self.block_size,
            "shared_channels": self.shared_channels,
            "gamma": self.gamma,
            "oversize": self.oversize,
            "seed": self.seed,
        }


def dropblock_layers(model) -> list[DropBlock]:
    """Every DropBlock in ``model``, nested models and layers included."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, DropBlock)
    ]


class KeepProbSchedule(keras.callbacks.Callback):
    """Lower every DropBlock's keep_prob linearly from ``start`` to ``final``.

    ``keep_prob = start + (final - start) * min(t / duration, 1)``, where ``t`` counts
    epochs (``unit="epoch"``, set at the start of each epoch) or optimizer steps
    (``unit="step"``, set before each batch). The original series lowered it by 0.005
    an epoch from 1.0 to 0.8: ``KeepProbSchedule(0.8, duration=40)``. The value is
    logged as ``keep_prob`` in each epoch's logs (and so in ``fit``'s history). Both
    units follow ``fit(initial_epoch=...)`` and the optimizer's step count, so a
    resumed run continues the schedule where it stopped.
    """

    def __init__(self, final, duration, *, unit="epoch", start=1.0):
        super().__init__()
        _check_keep_prob(final)
        _check_keep_prob(start)
        _check_size("duration", duration)
        if unit not in ("epoch", "step"):
            raise ValueError(f"unit={unit!r}: use 'epoch' or 'step'.")
        self.final = final
        self.duration = duration
        self.unit = unit
        self.start = start
        self.value = start

    def keep_prob_at(self, t: int) -> float:
        """The scheduled keep_prob after ``t`` epochs or steps."""
        return self.start + (self.final - self.start) * min(t / self.duration, 1.0)

    def _apply(self, t):
        self.value = self.keep_prob_at(t)
        for layer in self._layers:
            layer.keep_prob.assign(self.value)

    def on_train_begin(self, logs=None):
        self._layers = dropblock_layers(self.model)
        if not self._layers:
            raise ValueError(
                "KeepProbSchedule: the model has no DropBlock layer to schedule; "
                "remove the callback or add DropBlock layers."
            )

    def on_epoch_begin(self, epoch, logs=None):
        if self.unit == "epoch":
            self._apply(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.unit == "step":
            step = keras.ops.convert_to_numpy(self.model.optimizer.iterations)
            self._apply(int(step))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["keep_prob"] = self.value
