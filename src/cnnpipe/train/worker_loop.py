"""Training under ``multi_worker``: the project's own step under ``strategy.run``.

Keras' ``fit`` fails under MultiWorkerMirroredStrategy in Keras 3 (keras-team/keras issue
20585: its data adapter cannot take the per-replica values). ``default`` and ``mirrored``
keep ``fit``: this step reduces the loss and the metrics in another order, so moving them
here would change every committed model's weights. What ``fit`` gives is kept:

- the optimizer and its learning-rate schedule, built as ``compile_model`` builds them, one
  per phase (head, then fine-tuning), over the same number of steps;
- the loss with its label smoothing, class weights as per-image weights, averaged over the
  global batch (``tf.nn.compute_average_loss``), as ``fit``'s "sum over batch size" does;
- early stopping on the validation loss, with the best weights restored: Keras' own
  ``EarlyStopping``, fed a validation loss summed over every worker's share;
- the per-epoch history behind the curves (loss, accuracy, val_loss, val_accuracy).

Input is sharded per worker (``input_pipeline_id``): whole record shards when there are at
least as many as workers, else every n-th record (``Dataset.shard``). Each worker's stream
repeats, so every worker has a full batch at every step and the steps stay in lockstep; an
epoch is as many steps as ``fit`` takes on one process. The validation share of a worker is
padded with weightless records to the longest share, for the same reason.
"""

from __future__ import annotations

import math
import time
from functools import partial

import numpy as np

from cnnpipe.core.errors import DataError
from cnnpipe.core.shard_stream import SUBSET_FILTER_BLOCK
from cnnpipe.core.shards import LABEL_BYTES, PREFETCH_BATCHES, ShardSet


def worker_share(shards: ShardSet, subset, workers: int, worker: int):
    """``(shard numbers, by_shard, kept, count)``: the shards worker ``worker`` of ``workers``
    reads, whether they are its own (else it takes every ``workers``-th record of them), the
    mask of the records ``subset`` keeps (all when None), and how many records are its.

    Whole shards go to workers when there are at least as many and each worker's shards
    hold some of the subset; otherwise records are dealt out one by one."""
    kept = np.zeros(len(shards), dtype=bool)
    kept[np.arange(len(shards)) if subset is None else subset] = True
    per_shard, total = shards.records_per_shard, len(shards.shard_paths)
    in_shard = [int(kept[k * per_shard:(k + 1) * per_shard].sum()) for k in range(total)]
    by_shard = total >= workers and all(sum(in_shard[w::workers]) for w in range(workers))
    if by_shard:
        numbers = list(range(worker, total, workers))
        return numbers, True, kept, sum(in_shard[k] for k in numbers)
    return list(range(total)), False, kept, len(np.flatnonzero(kept)[worker::workers])


def worker_records(tf, shards: ShardSet, subset, workers: int, worker: int,
                   shuffle_seed: int | None = None):
    """``(records, count)``: the serialized records worker ``worker`` of ``workers`` reads
    (of ``subset``, or all), and how many there are; in record order, or with
    ``shuffle_seed`` from its own shards in a new order each pass (as ShardSet.dataset mixes
    them; dealt-out records keep record order here and are shuffled after)."""
    numbers, by_shard, kept, count = worker_share(shards, subset, workers, worker)
    per_shard = shards.records_per_shard
    files = tf.constant([str(shards.shard_paths[k]) for k in numbers], tf.string)
    starts = tf.constant([k * per_shard for k in numbers], tf.int64)

    def shard_records(position):
        records = tf.data.FixedLengthRecordDataset(files[position], shards.record_bytes)
        return records.enumerate(start=starts[position])

    positions = tf.data.Dataset.range(len(numbers))
    if shuffle_seed is not None and by_shard and len(numbers) > 1:
        positions = positions.shuffle(len(numbers), seed=shuffle_seed,
                                      reshuffle_each_iteration=True)
        records = positions.interleave(shard_records, cycle_length=min(len(numbers), 8),
                                       block_length=1)
    else:
        records = positions.flat_map(shard_records)
    records = keep_masked_records(tf, records, tf.constant(kept))
    if not by_shard:
        records = records.shard(workers, worker)
    return records.map(lambda index, record: record), count


def keep_masked_records(tf, records, mask_tensor):
    """The (index, record) pairs whose index ``mask_tensor`` marks, filtered a block at a
    time (a per-record `filter` call costs more than reading the record)."""

    def kept_records(indices, records):
        keep = tf.gather(mask_tensor, indices)
        return tf.boolean_mask(indices, keep), tf.boolean_mask(records, keep)

    return records.batch(SUBSET_FILTER_BLOCK).map(kept_records).unbatch()


def batch_decoder(tf, shape: tuple[int, int, int], one_hot: int | None = None):
    """A batch of serialized records -> (uint8 images, labels), as the shard format lays
    them out: a little-endian uint16 label, then the pixels."""

    def decode(record):
        raw = tf.io.decode_raw(record, tf.uint8)  # (B, record_bytes)
        labels = tf.cast(raw[:, 0], tf.int32) + 256 * tf.cast(raw[:, 1], tf.int32)
        images = tf.reshape(raw[:, LABEL_BYTES:], (-1, *shape))
        return images, (labels if one_hot is None else tf.one_hot(labels, one_hot))

    return decode


def _finish(tf, batches):
    """Prefetched, without tf.data's autotuning thread (as ShardSet.dataset, for its reasons)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return batches.prefetch(PREFETCH_BATCHES).with_options(options)


def training_stream(context, *, shards, subset, global_batch, seed, buffer_mb, one_hot):
    """One worker's training batches (per replica), shuffled, repeated without end."""
    import tensorflow as tf

    records, count = worker_records(tf, shards, subset, context.num_input_pipelines,
                                    context.input_pipeline_id, shuffle_seed=seed)
    buffer = max(1, min(count, buffer_mb * 2**20 // shards.record_bytes))
    records = records.shuffle(buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    batches = records.batch(context.get_per_replica_batch_size(global_batch), drop_remainder=True)
    return _finish(tf, batches.map(batch_decoder(tf, shards.image_shape, one_hot)))


def validation_stream(context, *, shards, global_batch, steps, one_hot):
    """One worker's validation batches (per replica) and a 1/0 weight per record: its share,
    then empty records of weight 0 up to ``steps`` full batches."""
    import tensorflow as tf

    records, _ = worker_records(tf, shards, None, context.num_input_pipelines,
                                context.input_pipeline_id)
    per_replica = context.get_per_replica_batch_size(global_batch)
    per_worker = per_replica * context.num_replicas_in_sync // context.num_input_pipelines
    empty = tf.data.Dataset.from_tensors((tf.constant(b"\0" * shards.record_bytes), 0.0))
    weighted = records.map(lambda record: (record, 1.0)).concatenate(empty.repeat())
    decode = batch_decoder(tf, shards.image_shape, one_hot)
    batches = weighted.take(steps * per_worker).batch(per_replica)
    return _finish(tf, batches.map(lambda records, weights: (*decode(records), weights)))


def validation_steps(shards: ShardSet, workers: int, global_batch: int) -> int:
    """Steps that cover the longest worker's share of the validation split."""
    per_worker = global_batch // workers
    longest = max(worker_share(shards, None, workers, w)[3] for w in range(workers))
    return max(1, math.ceil(longest / per_worker))


def per_example_loss(num_classes: int, label_smoothing: float, one_hot: bool):
    """``compile_model``'s loss, unreduced: one value per image."""
    import keras

    from cnnpipe.train.training import make_loss

    loss = make_loss(num_classes, label_smoothing, one_hot=one_hot)
    if isinstance(loss, str):
        loss = keras.losses.get({"class_name": loss, "config": {}})
    return type(loss).from_config({**loss.get_config(), "reduction": None})


def correct_predictions(tf, labels, outputs):
    """1.0 where the top class is the label: ``accuracy`` as ``compile`` resolves it (a sigmoid
    unit at 0.5, else the top softmax output, for integer or one-hot labels)."""
    if outputs.shape[-1] == 1:
        predicted = tf.cast(outputs[:, 0] > 0.5, tf.int32)
        truth = tf.cast(tf.cast(tf.reshape(labels, [-1]), tf.float32) > 0.5, tf.int32)
    else:
        predicted = tf.argmax(outputs, axis=-1, output_type=tf.int32)
        truth = (tf.argmax(labels, axis=-1, output_type=tf.int32)
                 if labels.shape.rank == 2 else tf.cast(labels, tf.int32))
    return tf.cast(tf.equal(predicted, truth), tf.float32)


def train_across_workers(plan, callbacks=()):
    """Train ``plan``'s model (built in its MultiWorkerMirroredStrategy's scope) on every
    worker at once; each worker calls this and ends with the same weights."""
    from cnnpipe.train.training import TrainingResult, kept_epoch

    loop = WorkerLoop(plan, callbacks)
    settings = plan.settings
    start = time.perf_counter()
    loop.run("head", settings["learning_rate"], settings["epochs"], "training")
    if settings.get("fine_tune_epochs", 0) > 0:
        from cnnpipe.models.finetune import set_base_trainable

        set_base_trainable(plan.model, settings["fine_tune_layers"], plan.architecture.fine_tune,
                           settings.get("fine_tune_batchnorm", "frozen"))
        loop.run("fine_tune", settings["learning_rate"] * settings["fine_tune_lr_factor"],
                 settings["fine_tune_epochs"], "fine-tuning")
    return TrainingResult(
        history=loop.history,
        epochs_run=len(loop.phases),
        best_epoch=kept_epoch(loop.history, loop.phases, settings["early_stopping_patience"]),
        train_seconds=time.perf_counter() - start,
        images_seen=len(loop.phases) * loop.steps * loop.global_batch,
        phases=loop.phases,
    )


class WorkerLoop:
    """Consecutive training phases of one model on every worker, their histories appended."""

    def __init__(self, plan, callbacks=()):
        import tensorflow as tf

        from cnnpipe.train.build import label_depth

        workers = plan.distribution.workers
        if len(plan.labelled) < workers:
            raise DataError(f"{len(plan.labelled)} labelled training images for {workers} "
                            "workers: every worker needs at least one")
        self.strategy = plan.distribution.strategy
        self.model = plan.model
        self.settings = plan.settings
        self.callbacks = list(callbacks)
        self.chief = plan.distribution.is_chief
        self.global_batch = self.settings["batch_size"]
        self.steps = math.ceil(len(plan.labelled) / self.global_batch)  # fit's steps on one process
        classes, depth = plan.data.num_classes, label_depth(plan.data.num_classes, self.settings)
        self.loss = per_example_loss(classes, self.settings.get("label_smoothing", 0.0),
                                     depth is not None)
        self.class_weights = None if plan.class_weight is None else tf.constant(
            [plan.class_weight[c] for c in range(classes)], tf.float32)
        common = {"global_batch": self.global_batch, "one_hot": depth}
        self.train_batches = iter(self.strategy.distribute_datasets_from_function(partial(
            training_stream, shards=plan.data.train, subset=plan.labelled,
            seed=plan.config["seed"], buffer_mb=self.settings["shuffle_buffer_mb"], **common)))
        self.val_steps = validation_steps(plan.data.val, workers, self.global_batch)
        self.val_data = self.strategy.distribute_datasets_from_function(partial(
            validation_stream, shards=plan.data.val, steps=self.val_steps, **common))
        self.val_step = self._validation_step()
        self.history: dict[str, list[float]] = {}
        self.phases: list[str] = []

    def run(self, name: str, learning_rate: float, epochs: int, description: str) -> None:
        """One phase: a fresh optimizer and schedule (as a recompile gives ``fit``), then its
        epochs until early stopping ends them; the best weights restored at the end."""
        import keras

        from cnnpipe.train.fused_norm import fused_batch_norm
        from cnnpipe.train.training import (
            PLAIN_RECIPE, check_finite, learning_rate_schedule, make_optimizer,
        )

        recipe = {**PLAIN_RECIPE, **self.settings, "epochs_in_phase": epochs}
        with self.strategy.scope():
            rate = learning_rate_schedule(learning_rate, recipe, epochs * self.steps)
            optimizer = make_optimizer(rate, recipe)
            optimizer.build(self.model.trainable_variables)  # not inside the traced step
        train_step = self._train_step(optimizer)
        # Callbacks hear of epochs only: the step runs as one traced function per batch.
        watchers = [*self._early_stopping(keras), *self.callbacks]
        for watcher in watchers:
            watcher.set_model(self.model)
            watcher.on_train_begin()
        self.model.stop_training = False
        first = len(self.phases)
        with fused_batch_norm():
            for epoch in range(first, first + epochs):
                for watcher in watchers:
                    watcher.on_epoch_begin(epoch)
                logs = self._epoch(train_step, epoch, first + epochs)
                for key, value in logs.items():
                    self.history.setdefault(key, []).append(value)
                self.phases.append(name)
                if not math.isfinite(logs["loss"]):
                    break  # fit's TerminateOnNaN; check_finite below says what happened
                for watcher in watchers:
                    watcher.on_epoch_end(epoch, logs)
                if self.model.stop_training:
                    break
        for watcher in watchers:
            watcher.on_train_end()
        check_finite({key: values[first:] for key, values in self.history.items()},
                     description, learning_rate)

    def _early_stopping(self, keras):
        patience = self.settings["early_stopping_patience"]
        if patience <= 0:
            return []
        return [keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                              restore_best_weights=True)]

    def _epoch(self, train_step, epoch: int, epochs: int) -> dict[str, float]:
        """Train one epoch and validate; every figure summed over all workers."""
        start = time.perf_counter()
        trained = np.zeros(4)
        for _ in range(self.steps):
            trained += train_step(self.train_batches).numpy()
        checked = np.zeros(3)
        batches = iter(self.val_data)
        for _ in range(self.val_steps):
            checked += self.val_step(batches).numpy()
        loss, hits, weights, images = trained
        logs = {"accuracy": hits / weights, "loss": loss / images,
                "val_accuracy": checked[1] / checked[2], "val_loss": checked[0] / checked[2]}
        if self.chief:
            shown = " - ".join(f"{key}: {value:.4f}" for key, value in logs.items())
            print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - start:.0f}s - {shown}",
                  flush=True)
        return logs

    def _sample_weights(self, tf, labels, count):
        """Each image's class weight (fit's ``class_weight``), or 1."""
        if self.class_weights is None:
            return tf.ones([count], tf.float32)
        classes = (tf.argmax(labels, axis=-1, output_type=tf.int32)
                   if labels.shape.rank == 2 else tf.cast(labels, tf.int32))
        return tf.gather(self.class_weights, classes)

    def _train_step(self, optimizer):
        """A tf.function taking one step on every replica; returns the summed loss, correct
        images and weights, and the images, over the global batch."""
        import tensorflow as tf

        model, loss_fn, strategy = self.model, self.loss, self.strategy

        def replica_step(images, labels):
            with tf.GradientTape() as tape:
                outputs = model(images, training=True)
                weights = self._sample_weights(tf, labels, tf.shape(images)[0])
                losses = loss_fn(labels, outputs) * weights
                loss = tf.nn.compute_average_loss(losses, global_batch_size=self.global_batch)
            variables = model.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            hits = correct_predictions(tf, labels, outputs) * weights
            images_in_batch = tf.cast(tf.shape(losses)[0], tf.float32)
            return tf.stack([tf.reduce_sum(losses), tf.reduce_sum(hits),
                             tf.reduce_sum(weights), images_in_batch])

        @tf.function
        def step(batches):
            sums = strategy.run(replica_step, args=next(batches))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

        return step

    def _validation_step(self):
        """A tf.function scoring one batch per replica in inference mode; returns the summed
        loss, correct images and real (weight 1) images over every worker."""
        import tensorflow as tf

        model, loss_fn, strategy = self.model, self.loss, self.strategy

        def replica_step(images, labels, present):
            outputs = model(images, training=False)
            losses = loss_fn(labels, outputs) * present
            hits = correct_predictions(tf, labels, outputs) * present
            return tf.stack([tf.reduce_sum(losses), tf.reduce_sum(hits), tf.reduce_sum(present)])

        @tf.function
        def step(batches):
            sums = strategy.run(replica_step, args=next(batches))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

        return step
