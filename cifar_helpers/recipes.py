"""Training recipes: everything a run trains with, apart from the model and the data.

A recipe is a frozen dataclass of settings (batch size, epochs, optimizer, schedules)
that builds its optimizer, its loss and the callbacks that schedule the learning rate
and DropBlock's ``keep_prob``; :func:`compile_model` applies it to a model. Two
recipes share one base, :class:`BaseRecipe`:

- :class:`OriginalRecipe` (``ORIGINAL``), the original part-7 one (Adam 5e-4, learning
  rate x0.98 an epoch, gradients clipped to a global norm of 100, batch 250, up to 75
  epochs, DropBlock's keep_prob lowered by 0.005 an epoch to 0.8, early stopping with
  patience 10) with deliberate fixes: early stopping and the choice of the best
  model watch a validation split, never the test set as the original did; the
  training data is reshuffled every epoch; augmentation is crop, flip and cutout.
  Introduced in notebook 02.
- ``FAITHFUL``, the same optimiser and schedules with everything else as the
  original trained: all 50,000 training images in one fixed order, the test set
  watched by its early stopping (ten rises in a row,
  :class:`~cifar_helpers.training.ConsecutiveRiseStopping`), the last epoch's model
  kept, and the model built with the original's sharpening, imgaug augmentation
  and DropBlock behaviour (``model_options``). Its test score is optimistic, as
  the original's was. Introduced in notebook 04.
- :class:`ModernRecipe` (``MODERN``), notebook 05's: SGD with Nesterov momentum and
  weight decay, a one-cycle learning rate (:class:`OneCycle`), label smoothing
  (:class:`SmoothedSparseCrossentropy`), batch 512, XLA and several steps per
  execution.
"""

import abc
import dataclasses
from typing import ClassVar

import keras

from cifar_helpers.dropblock import KeepProbSchedule, dropblock_layers


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaseRecipe(abc.ABC):
    """What every recipe holds and does; subclasses add their optimizer's settings.

    ``monitor`` is what the best checkpoint (and early stopping, when ``patience``
    or ``rises`` is set) watch; ``jit_compile`` and ``steps_per_execution`` go to
    ``Model.compile``. A subclass names the field that :meth:`for_replicas` scales
    (``scaled_rate``) and says how its learning rate is scheduled
    (:meth:`learning_rate_callback`) and over how many epochs ``keep_prob`` falls
    (``keep_prob_epochs``).

    How a run uses its data and what it keeps:

    - ``name``: what ``run.json`` and ``results.json`` call the recipe;
    - ``validation``: ``"split"`` (2,000 training images held out, the default)
      or ``"test"`` (no split: all training images train, and the test set is
      what early stopping and the checkpoints watch, as the original did);
    - ``reshuffle``: shuffle the training images afresh every epoch, or (False)
      once, visiting them in that one order every epoch, as the original did;
    - ``rises``: stop once ``monitor`` has risen in each of the last ``rises``
      epochs (:class:`~cifar_helpers.training.ConsecutiveRiseStopping`), the
      original's rule; None for none;
    - ``keep``: the model a run keeps, ``"best"`` (the best ``monitor``) or
      ``"last"`` (the last epoch's, as the original saved it);
    - ``model_options``: keyword arguments (as pairs) for the model's builder.
    """

    batch_size: int
    epochs: int
    keep_prob_final: float
    patience: int | None
    jit_compile: bool | str
    steps_per_execution: int
    monitor: str = "val_loss"
    name: str = "original"
    validation: str = "split"
    reshuffle: bool = True
    rises: int | None = None
    keep: str = "best"
    model_options: tuple = ()

    scaled_rate: ClassVar[str]

    def __post_init__(self):
        rules = {
            "batch_size": (_whole(self.batch_size), "a whole number >= 1"),
            "epochs": (_whole(self.epochs), "a whole number >= 1"),
            "keep_prob_final": (0 < self.keep_prob_final <= 1, "a value in (0, 1]"),
            "patience": (
                self.patience is None or _whole(self.patience),
                "a whole number >= 1, or None for no early stopping",
            ),
            "steps_per_execution": (
                _whole(self.steps_per_execution),
                "a whole number >= 1",
            ),
            "validation": (self.validation in ("split", "test"), "'split' or 'test'"),
            "reshuffle": (isinstance(self.reshuffle, bool), "True or False"),
            "rises": (
                self.rises is None or _whole(self.rises),
                "a whole number >= 1, or None",
            ),
            "keep": (self.keep in ("best", "last"), "'best' or 'last'"),
            "model_options": (
                isinstance(self.model_options, tuple)
                and all(
                    isinstance(pair, tuple) and len(pair) == 2
                    for pair in self.model_options
                ),
                "a tuple of (name, value) pairs",
            ),
            **self.rules(),
        }
        for name, (ok, what) in rules.items():
            if not ok:
                raise ValueError(
                    f"{type(self).__name__} {name}={getattr(self, name)!r}: use {what}."
                )

    def rules(self) -> dict:
        """``{field: (whether its value is allowed, what to use instead)}``."""
        return {}

    @property
    def watches_test(self) -> bool:
        """Whether the test set steers the run (early stopping, checkpoints): its
        test score is then optimistic."""
        return self.validation == "test"

    def for_replicas(self, replicas: int):
        """The recipe for ``replicas`` devices training together: each keeps the
        batch size, so the global batch and the learning rate grow ``replicas``
        times (Goyal et al.'s linear scaling rule; for Adam a rule of thumb)."""
        return dataclasses.replace(
            self,
            batch_size=self.batch_size * replicas,
            **{self.scaled_rate: getattr(self, self.scaled_rate) * replicas},
        )

    def compile_options(self) -> dict:
        return {
            "jit_compile": self.jit_compile,
            "steps_per_execution": self.steps_per_execution,
        }

    @abc.abstractmethod
    def make_optimizer(self, steps_per_epoch=None):
        """The optimizer, with its learning rate (or schedule) and clipping."""

    def make_loss(self):
        return keras.losses.SparseCategoricalCrossentropy()

    @abc.abstractmethod
    def learning_rate_callback(self) -> keras.callbacks.Callback:
        """The callback that schedules the learning rate, or logs it."""

    @property
    @abc.abstractmethod
    def keep_prob_epochs(self) -> int:
        """Epochs over which keep_prob falls from 1 to ``keep_prob_final``."""

    def schedule_callbacks(self, model) -> list:
        """The learning-rate callback, logged as ``learning_rate``, and, when the
        model has DropBlock layers, a :class:`~cifar_helpers.dropblock.
        KeepProbSchedule` that lowers keep_prob from 1 to ``keep_prob_final`` over
        ``keep_prob_epochs`` epochs (logged as ``keep_prob``)."""
        chosen = [self.learning_rate_callback()]
        if dropblock_layers(model):
            chosen.append(
                KeepProbSchedule(self.keep_prob_final, duration=self.keep_prob_epochs)
            )
        return chosen


@dataclasses.dataclass(frozen=True, kw_only=True)
class OriginalRecipe(BaseRecipe):
    """Every setting of the original part-7 run; ``OriginalRecipe()`` holds them.

    Adam at ``learning_rate`` (with ``adam_epsilon``, TF1's default, which the
    original used), multiplied by ``decay_per_epoch`` after every epoch, gradients
    clipped to a global norm of ``clip_global_norm``; keep_prob
    lowered by ``keep_prob_per_epoch`` an epoch down to ``keep_prob_final``; early
    stopping after ``patience`` epochs without a better validation loss.
    """

    learning_rate: float = 5e-4
    adam_epsilon: float = 1e-8  # TF1's AdamOptimizer default (Keras': 1e-7)
    decay_per_epoch: float = 0.98  # learning rate x this after every epoch
    clip_global_norm: float = 100.0
    batch_size: int = 250
    epochs: int = 75
    keep_prob_final: float = 0.8
    keep_prob_per_epoch: float = 0.005  # lowered by this after every epoch
    patience: int | None = 10  # epochs without a better validation loss
    jit_compile: bool | str = "auto"  # Keras' default: XLA on accelerators only
    steps_per_execution: int = 1

    scaled_rate: ClassVar[str] = "learning_rate"

    def rules(self) -> dict:
        return {
            "learning_rate": (self.learning_rate > 0, "a value > 0"),
            "adam_epsilon": (self.adam_epsilon > 0, "a value > 0"),
            "clip_global_norm": (self.clip_global_norm > 0, "a value > 0"),
            "keep_prob_per_epoch": (self.keep_prob_per_epoch > 0, "a value > 0"),
            "decay_per_epoch": (0 < self.decay_per_epoch <= 1, "a factor in (0, 1]"),
        }

    @property
    def keep_prob_epochs(self) -> int:
        """Epochs until keep_prob reaches its final value (40 in the original)."""
        return max(1, round((1 - self.keep_prob_final) / self.keep_prob_per_epoch))

    def learning_rate_at(self, epoch: int) -> float:
        """The learning rate during ``epoch`` (counted from 0)."""
        return self.learning_rate * self.decay_per_epoch**epoch

    def learning_rate_callback(self):
        return keras.callbacks.LearningRateScheduler(self.learning_rate_at)

    def make_optimizer(self, steps_per_epoch=None):
        """Adam with the recipe's learning rate, the original's epsilon and
        global-norm clipping."""
        return keras.optimizers.Adam(
            self.learning_rate,
            epsilon=self.adam_epsilon,
            global_clipnorm=self.clip_global_norm,
        )


ORIGINAL = OriginalRecipe()

# The original part-7 run as it was: see the module's doc and notebook 04.
FAITHFUL = OriginalRecipe(
    name="faithful",
    validation="test",
    reshuffle=False,
    patience=None,
    rises=10,
    keep="last",
    model_options=(
        ("sharpen", True),
        ("augment", "original"),
        ("dropblock_gamma", "paper"),
        ("dropblock_oversize", "identity"),
    ),
)

TEST_WATCHED = (
    "early stopping watched the test set, as the original did: this test accuracy "
    "is optimistic"
)


@keras.saving.register_keras_serializable(package="cifar_helpers")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle learning rate: a linear warm-up from 0 to ``peak`` over the first
    ``warmup_steps`` steps, then a linear decay that reaches 0 after
    ``total_steps`` steps (and stays 0 after). Step ``s`` (from 0) trains at the
    rate of the end of its interval: ``peak * (s + 1) / warmup_steps`` while
    warming up, ``peak * (total_steps - s) / (total_steps - warmup_steps)`` after.

    Smith & Topin (2017) showed that one large cycle trains residual networks in far
    fewer epochs; Page's DAWNBench ResNet-9 used this piecewise-linear form (without
    Smith's momentum cycle).
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int):
        if not 0 < warmup_steps < total_steps:
            raise ValueError(
                f"OneCycle: warmup_steps={warmup_steps}, total_steps={total_steps}; "
                "the warm-up must be at least one step and shorter than the run."
            )
        self.peak = peak
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        # Step s trains at the rate reached at its end, so the first step does not
        # waste itself at rate 0 and the last one trains at a small rate > 0.
        up = (step + 1) / self.warmup_steps
        down = (self.total_steps - step) / (self.total_steps - self.warmup_steps)
        return self.peak * keras.ops.maximum(0.0, keras.ops.minimum(up, down))

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }


@keras.saving.register_keras_serializable(package="cifar_helpers")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against probabilities, with label smoothing.

    Keras' sparse cross-entropy has no ``label_smoothing``; this one turns each
    label into a one-hot row first. The target puts ``1 - label_smoothing +
    label_smoothing / classes`` on the true class and ``label_smoothing / classes``
    on every other (Szegedy et al., 2016).
    """

    def __init__(self, label_smoothing=0.1, name="smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0 <= label_smoothing < 1:
            raise ValueError(
                f"label_smoothing={label_smoothing!r}: use a value in [0, 1)."
            )
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, [-1]), "int32")
        one_hot = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(
            keras.ops.cast(one_hot, y_pred.dtype),
            y_pred,
            label_smoothing=self.label_smoothing,
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


class LearningRateLogger(keras.callbacks.Callback):
    """Log the optimizer's learning rate at the end of each epoch (``learning_rate``),
    for schedules that live in the optimizer rather than in a callback."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModernRecipe(BaseRecipe):
    """Notebook 05's recipe for the modern residual networks; ``ModernRecipe()``
    holds its values (chosen from public ResNet-9/ResNet-18 recipes, not tuned here).

    - SGD, Nesterov momentum ``momentum``, decoupled ``weight_decay`` on kernels
      only (not on batch norm or biases). Keras subtracts ``learning_rate x
      weight_decay x w`` each step; PyTorch's coupled 5e-4 with momentum 0.9 decays
      about 1 / (1 - 0.9) = 10 times harder, hence 5e-3 here;
    - :class:`OneCycle` with ``peak_learning_rate`` after ``warmup_fraction`` of the
      run, for ``epochs`` epochs of ``batch_size`` images;
    - :class:`SmoothedSparseCrossentropy` with ``label_smoothing``;
    - DropBlock keep_prob lowered linearly from 1 to ``keep_prob_final`` over the
      whole run (Ghiasi et al.'s schedule);
    - XLA (``jit_compile``) and ``steps_per_execution`` steps per call into the
      compiled graph; no early stopping (the schedule fixes the budget), the best
      validation model is still checkpointed.
    """

    peak_learning_rate: float = 0.4
    warmup_fraction: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-3
    label_smoothing: float = 0.1
    batch_size: int = 512
    epochs: int = 40
    keep_prob_final: float = 0.9
    patience: None = None
    jit_compile: bool = True
    steps_per_execution: int = 8

    scaled_rate: ClassVar[str] = "peak_learning_rate"

    def rules(self) -> dict:
        return {
            "peak_learning_rate": (self.peak_learning_rate > 0, "a value > 0"),
            "warmup_fraction": (0 < self.warmup_fraction < 1, "a value in (0, 1)"),
            "momentum": (0 <= self.momentum < 1, "a value in [0, 1)"),
            "weight_decay": (self.weight_decay >= 0, "a value >= 0"),
            "label_smoothing": (0 <= self.label_smoothing < 1, "a value in [0, 1)"),
        }

    @property
    def keep_prob_epochs(self) -> int:
        """Epoch 0 trains at keep_prob 1, the last epoch at ``keep_prob_final``."""
        return max(1, self.epochs - 1)

    def learning_rate_schedule(self, steps_per_epoch: int) -> OneCycle:
        total = self.epochs * steps_per_epoch
        warmup = min(total - 1, max(1, round(self.warmup_fraction * total)))
        return OneCycle(self.peak_learning_rate, total, warmup)

    def learning_rate_callback(self):
        return LearningRateLogger()  # the optimizer schedules it, step by step

    def make_optimizer(self, steps_per_epoch=None):
        """Nesterov SGD on the one-cycle schedule; needs ``steps_per_epoch``."""
        if not steps_per_epoch or steps_per_epoch < 1:
            raise ValueError(
                f"steps_per_epoch={steps_per_epoch!r}: the one-cycle schedule needs "
                "the number of batches in an epoch (len(train_ds)); pass it to "
                "compile_model."
            )
        optimizer = keras.optimizers.SGD(
            self.learning_rate_schedule(steps_per_epoch),
            momentum=self.momentum,
            nesterov=True,
            weight_decay=self.weight_decay or None,
        )
        # Decay the convolution and dense kernels only.
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        return optimizer

    def make_loss(self):
        return SmoothedSparseCrossentropy(self.label_smoothing)


MODERN = ModernRecipe(name="modern")

# The recipes a run can name (``cifar-helpers train --recipe``).
RECIPES = {recipe.name: recipe for recipe in (ORIGINAL, FAITHFUL, MODERN)}


def compile_model(model, recipe: BaseRecipe = ORIGINAL, *, steps_per_epoch=None):
    """Compile ``model`` (probabilities out) with the recipe's optimizer, loss and
    compile options (XLA, steps per execution); returns the model.

    Metrics: top-1 ``accuracy`` and ``top5`` accuracy. ``steps_per_epoch`` (batches
    in an epoch) is needed by recipes whose schedule counts steps
    (:class:`ModernRecipe`). Under a ``tf.distribute`` strategy, call it inside
    ``strategy.scope()``, where the model was built.
    """
    model.compile(
        optimizer=recipe.make_optimizer(steps_per_epoch),
        loss=recipe.make_loss(),
        metrics=[
            "accuracy",
            keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5"),
        ],
        **recipe.compile_options(),
    )
    return model
