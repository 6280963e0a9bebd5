"""The training loop written out: what ``Model.fit`` does for one step and one
epoch, under any ``tf.distribute`` strategy. Introduced in notebook 07.

It is the route TensorFlow documents for training across machines
(``MultiWorkerMirroredStrategy``): a step of ``tf.GradientTape`` compiled by
``tf.function`` and run on every replica by ``strategy.run``, a distributed
dataset, losses averaged over the *global* batch, and ``strategy.reduce`` for
what is logged. ``python -m cifar_helpers train --strategy multiworker`` trains
with it, because Keras 3.15's ``Model.fit`` fails under that strategy
(keras-team/keras#20585). On one machine :func:`cifar_helpers.training.fit`
stays the path.

:func:`fit` takes the same arguments as :func:`cifar_helpers.training.fit` and
drives the same callbacks (:func:`cifar_helpers.training.callbacks`) through a
``keras.callbacks.CallbackList``: the learning-rate and keep_prob schedules, the
best checkpoint, early stopping, ``history.csv``, TensorBoard and the atomic
backup. A run folder it writes is one that ``fit`` would have written, and a run
killed in either resumes from its last committed epoch.

Where it differs from ``fit``, on purpose or not:

- it iterates the training dataset once per epoch, where ``fit`` starts a
  second, unread iteration at each epoch's end
  (:func:`cifar_helpers.resume.iterations_started`), so from the second epoch on
  a reshuffled dataset visits the images in another order than under ``fit``;
- at the end of each epoch it averages the batch-norm moving statistics over the
  replicas (:func:`average_moving_statistics`), so that every worker validates
  and saves the same model; under ``fit`` each replica keeps its own and the
  saved model holds the first replica's;
- it runs one step per call of the compiled step (``steps_per_execution`` is 1);
- across workers only the chief keeps the run (its folder and backup); the others
  take its state when training starts and stop when it stops (see :func:`fit`), so
  a restarted cluster resumes from the chief's last committed epoch even when a
  worker was killed between the chief's commit and its own.

Gradient clipping (the original recipe's ``global_clipnorm``) happens inside the
Keras optimizer, as under ``fit``: Keras 3 clips each replica's share of the
gradient before the replicas' shares are summed
(``keras/src/optimizers/base_optimizer.py``, ``apply``), where clipping the sum
would be right (tensorflow/tensorflow#33929 explains the two places). With one
replica the two are the same.

If a Keras release fixes keras-team/keras#20585, ``tests/test_distribution.py``
says so (its ``fit`` test stops being an expected failure); then drop the
``check_fit_supported`` refusal in :mod:`cifar_helpers.devices` and let
:func:`cifar_helpers.runs.train` call ``training.fit`` for every strategy.
"""

import keras
import numpy as np
import tensorflow as tf

from cifar_helpers import devices, lock, recipes, resume, training
from cifar_helpers.training import StopOnNaN

# How TensorFlow reports a worker that stopped: its heartbeats missed, a collective
# aborted or a socket closed (all seen as UnavailableError in our runs).
_LOST_PEER = (
    tf.errors.UnavailableError,
    tf.errors.AbortedError,
    tf.errors.DeadlineExceededError,
)


class WorkerLost(RuntimeError):
    """A worker of the cluster stopped (killed, preempted, crashed) while this one
    trained; the message says how to carry on."""


def make_train_step(model, global_batch, jit_compile=False):
    """A compiled step on every replica of the current strategy: ``step(images,
    labels)`` returns the mean loss over the ``global_batch`` images, and the
    top-1 hits, top-5 hits and images (see :func:`hits`), summed over replicas."""
    strategy = tf.distribute.get_strategy()
    loss_fn, optimizer = model.loss, model.optimizer

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            probs = model(images, training=True)
            per_image = loss_fn.call(labels, probs)  # one loss per image
            # Over the global batch: the replicas' losses add up to its mean.
            loss = tf.nn.compute_average_loss(per_image, global_batch_size=global_batch)
            if model.losses:  # the layers' own penalties, if any
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss)  # float16: times the loss scale
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)  # clip, sum, step
        return loss, *hits(labels, probs)

    @tf.function(jit_compile=jit_compile)
    def step(images, labels):
        values = strategy.run(replica_step, args=(images, labels))
        return [strategy.reduce("SUM", value, axis=None) for value in values]

    return step


def hits(labels, probs):
    """Top-1 hits, top-5 hits and images of a batch, as float32 counts."""
    labels = tf.cast(tf.reshape(labels, [-1]), "int32")
    top1 = tf.argmax(probs, axis=-1, output_type="int32") == labels
    top5 = tf.math.in_top_k(labels, tf.cast(probs, "float32"), k=5)
    counted = (top1, top5, tf.ones_like(labels))
    return [tf.reduce_sum(tf.cast(hit, "float32")) for hit in counted]


def make_eval_step(model):
    """One evaluation step on every replica: the summed loss over the images, the
    top-1 and top-5 hits and the images, summed over the replicas (a replica may
    hold a smaller part of the last batch, or none)."""
    strategy = tf.distribute.get_strategy()

    def replica_step(images, labels):
        probs = model(images, training=False)
        return tf.reduce_sum(model.loss.call(labels, probs)), *hits(labels, probs)

    @tf.function
    def step(images, labels):
        sums = strategy.run(replica_step, args=(images, labels))
        return [strategy.reduce("SUM", value, axis=None) for value in sums]

    return step


def average_moving_statistics(model):
    """Set every float non-trainable variable (batch norm's moving mean and
    variance) to its mean over the replicas. Each replica updates its own copy
    from its share of each batch; after this, every replica and every worker holds
    the same model. With one replica it changes nothing."""
    strategy = model.distribute_strategy
    if strategy.num_replicas_in_sync == 1:
        return
    floats = keras.backend.is_float_dtype
    statistics = [v for v in model.non_trainable_variables if floats(v.dtype)]

    # Each replica's own copies, then their mean, set on every replica. Run eagerly:
    # once an epoch, where a tf.function made here would be traced each time.
    copies = strategy.run(lambda: [tf.identity(v.value) for v in statistics])
    for variable, copy in zip(statistics, copies, strict=True):
        variable.assign(strategy.reduce("MEAN", copy, axis=None))


def from_chief(strategy, values):
    """``values`` (tensors, or variables) as the first replica holds them, the
    chief's: on every worker, the same tensors. A broadcast, written as the sum
    over replicas of the first replica's values and zeros elsewhere. Run eagerly: a
    few calls a run, where a tf.function made here would be traced each time."""

    def replica_fn():
        context = tf.distribute.get_replica_context()
        first = tf.equal(context.replica_id_in_sync_group, 0)
        own = [tf.where(first, v, tf.zeros_like(v)) for v in values]
        return [context.all_reduce("SUM", value) for value in own]  # any dtype

    return strategy.experimental_local_results(strategy.run(replica_fn))[0]


def follow_the_chief(model):
    """Set every variable of ``model`` and its optimizer (weights, moving
    statistics, random generators' states, the optimizer's moments and step) to
    the chief's values. Across workers, only the chief keeps a run's state: a
    worker restarted after a failure takes it from there."""
    variables = [*model.variables, *model.optimizer.variables]
    for variable, value in zip(
        variables, from_chief(model.distribute_strategy, variables), strict=True
    ):
        variable.assign(value)


def epoch_logs(sums, steps=None):
    """``loss``, ``accuracy`` and ``top5`` from ``sums`` (summed loss, top-1 hits,
    top-5 hits, images): the loss is a mean over ``steps`` batch losses
    (training) or, without ``steps``, over the images (evaluation)."""
    loss, top1, top5, images = (float(value) for value in sums)
    return {
        "loss": loss / (steps if steps else images),
        "accuracy": top1 / images,
        "top5": top5 / images,
    }


def evaluate(model, dataset, step=None) -> dict:
    """``loss``, ``accuracy`` and ``top5`` of ``model`` over ``dataset`` (batches of
    ``(images, labels)``), under the model's strategy; ``step`` is a
    :func:`make_eval_step` of the model, made here when not given."""
    strategy = model.distribute_strategy
    if step is None:
        with strategy.scope():
            step = make_eval_step(model)
    sums = np.zeros(4)
    for images, labels in strategy.experimental_distribute_dataset(_sharded(dataset)):
        sums += [float(value) for value in step(images, labels)]
    return epoch_logs(sums)


def _sharded(dataset):
    """``dataset`` split between workers by its elements: an in-memory dataset has
    no files to split by (what ``AUTO`` tries first, with a warning)."""
    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy.DATA
    options.experimental_distribute.auto_shard_policy = policy
    return dataset.with_options(options)


def fit(model, train_ds, val_ds, run_dir, recipe=recipes.ORIGINAL, *, verbose=1):
    """Train a compiled ``model`` as :func:`cifar_helpers.training.fit` does, with
    the loop written out; returns the History.

    ``model`` is built and compiled (:func:`cifar_helpers.recipes.compile_model`)
    inside its strategy's scope; ``train_ds`` yields global batches of
    ``recipe.batch_size`` (scaled for the replicas: see
    :func:`cifar_helpers.devices.for_strategy`), ``val_ds`` validation batches.
    Called again with the same ``run_dir`` after an interruption, it resumes from
    the last committed epoch, replaying the training dataset's shuffles. The
    step is compiled with XLA when the recipe asks and the strategy allows it.

    Across workers only the chief keeps the run: its callbacks write ``run_dir``
    and its backup. The other workers run the schedules alone, take the chief's
    state when training starts (:func:`follow_the_chief`: a restarted cluster
    resumes from the chief's last committed epoch, whatever the others had
    reached), stop when the chief stops, and end with the chief's weights.
    """
    strategy = model.distribute_strategy
    workers, chief = devices.across_workers(strategy), devices.is_chief(strategy)
    with lock.holding(run_dir):
        if chief:
            chosen = training.callbacks(model, run_dir, recipe)
            backup = resume.committed_backup(run_dir)
        else:
            chosen, backup = [*recipe.schedule_callbacks(model), StopOnNaN()], None
        if workers:
            chosen.append(_StopWithTheChief())  # last: after early stopping
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)  # its variables, here
            step = make_train_step(model, recipe.batch_size, model.jit_compile)
            eval_step = make_eval_step(model)
        steps = int(train_ds.cardinality())
        history = keras.callbacks.History()
        callbacks = keras.callbacks.CallbackList(
            [*chosen, history],
            add_history=False,
            add_progbar=verbose != 0,
            model=model,
            verbose=verbose,
            epochs=recipe.epochs,
            steps=steps if steps > 0 else None,
        )
        model.stop_training = False
        callbacks.on_train_begin()  # the backup, if any, restores the model here
        first_epoch = backup["epoch"] if backup else 0
        try:
            if workers:
                follow_the_chief(model)
                epoch = tf.constant(first_epoch, "int64")
                first_epoch = int(from_chief(strategy, [epoch])[0])
            train = strategy.experimental_distribute_dataset(_sharded(train_ds))
            for _ in range(first_epoch):  # the shuffles of the epochs already run
                iter(train)
            epochs = range(first_epoch, recipe.epochs)
            logs = train_epochs(
                model, step, eval_step, train, val_ds, callbacks, epochs
            )
            callbacks.on_train_end(logs)
            if workers:  # the chief's final weights (early stopping restores some)
                follow_the_chief(model)
        except _LOST_PEER as error:  # a peer stopped responding
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            named = [line for line in lines if "unhealthy" in line or "task" in line]
            reason = (named or lines or ["no reason given"])[0][:300]
            raise WorkerLost(
                f"a worker of the cluster stopped ({reason}). Start every worker "
                "again with the same command: the run resumes from the chief's "
                "last committed epoch."
            ) from None
        return history


class _StopWithTheChief(keras.callbacks.Callback):
    """Across workers: after each epoch, every worker stops if the chief does."""

    def on_epoch_end(self, epoch, logs=None):
        flag = tf.constant(float(self.model.stop_training))
        stop = from_chief(self.model.distribute_strategy, [flag])[0]
        self.model.stop_training = bool(stop > 0)


def train_epochs(model, step, eval_step, train, val_ds, callbacks, epochs):
    """Train the epochs ``epochs`` (a range) with the compiled ``step`` on the
    distributed dataset ``train``, telling ``callbacks`` (a ``CallbackList``) what
    ``fit`` tells them; return the last epoch's logs."""
    logs = None
    for epoch in epochs:
        callbacks.on_epoch_begin(epoch)
        sums, batches = np.zeros(4), 0
        for batch, (images, labels) in enumerate(train):
            callbacks.on_train_batch_begin(batch)
            sums += [float(value) for value in step(images, labels)]
            batches += 1
            callbacks.on_train_batch_end(batch, epoch_logs(sums, batches))
        average_moving_statistics(model)
        logs = epoch_logs(sums, batches)
        if val_ds is not None:
            val = evaluate(model, val_ds, eval_step)
            logs.update({f"val_{name}": value for name, value in val.items()})
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    return logs
