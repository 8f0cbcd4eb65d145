"""``kldiv bench``: KL(t‖p) of fp32 softmax rows, mean over rows (Keras' ``sum_over_batch_size``,
PyTorch's ``batchmean``), at several ``[rows, vocab]`` sizes, in two modes:

* ``forward``: the loss value. kldiv (``backend="numba"``, the fused kernel, and ``backend="core"``)
  on NumPy arrays and on CPU torch tensors; the NumPy formula (clipped as Keras), SciPy
  ``rel_entr``, PyTorch ``F.kl_div`` (from probabilities: ``F.kl_div(p.log(), t)``, and from given
  log-probabilities), JAX ``jit`` of the formula (plain, and clipped as Keras), optax
  ``kl_divergence`` (``jit``, log-probabilities given), tf_keras ``KLDivergence`` (in
  ``tf.function`` and eager), Keras 3 ``KLDivergence`` (eager, on the backend of this process).
* ``backward``: the value and the gradient w.r.t. ``y_pred``: kldiv on torch tensors
  (``loss.backward()``), PyTorch autograd of ``F.kl_div``, ``jax.jit(jax.value_and_grad)``, optax
  likewise, ``tf.GradientTape`` (tf_keras in ``tf.function`` and eager, Keras 3).

Memory floors, measured in the same run (:mod:`~kldiv.bench.kl.floors`): reading both inputs once;
reading both and writing one preallocated array (the floor of a forward+backward pass), and the same
into a new array each call (its page faults included, as any implementation that returns a new
gradient pays them).

Modules: :mod:`~kldiv.bench.kl.inputs` (the rows and their framework copies),
:mod:`~kldiv.bench.kl.peers` and :mod:`~kldiv.bench.kl.frameworks` (the implementations),
:mod:`~kldiv.bench.kl.floors`, :mod:`~kldiv.bench.kl.cases` (the table of every implementation),
:mod:`~kldiv.bench.kl.memory` (peak memory, one process per case), :mod:`~kldiv.bench.kl.run` (the
run and its ratios) and :mod:`~kldiv.bench.kl.report` (tables and plot).
"""
