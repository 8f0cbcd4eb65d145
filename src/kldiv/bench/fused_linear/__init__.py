"""``kldiv bench fused-linear``: fused linear + divergence against the naive PyTorch path.

The naive path materialises the ``[BT, V]`` logits::

    logits = hidden @ weight.T                        # in the inputs' dtype
    loss = F.kl_div(log_softmax(logits.float()), log_softmax(teacher.float()),
                    reduction="batchmean", log_target=True)          # naive-kl
    loss = JS_0.5 of the same two log-softmaxes, mean over tokens    # naive-jsd
    loss.backward()

against :class:`kldiv.torch.FusedLinearKLDivergence` / ``FusedLinearJSDivergence``
(``reduction="token_mean"``, the same value) and, on CUDA, Liger-Kernel's ``LigerFusedLinearJSD``
(``jsd_beta=0.5``, ``temperature=1``, no labels: the same JS_0.5 divided by BT). The teacher is given
as logits ``[BT, V]`` (default on CPU) or as hidden states + weight (``--teacher hidden``; default on
CUDA, and what Liger needs).

**Memory and time** (default mode, :mod:`~kldiv.bench.fused_linear.run`). Each case (implementation ×
size × dtype) runs in a fresh process (:mod:`~kldiv.bench.fused_linear.case`): it allocates the
inputs, runs ``warmup`` steps of forward + backward (imports, Numba compilation, first-touch
allocations), frees the gradients, then records a baseline and runs ``repeats`` steps. CPU: peak
resident memory above the baseline (Linux ``VmHWM`` after resetting it with ``/proc/self/clear_refs``:
the memory the steps need at their peak, gradients included) and the median ``time.perf_counter``
step. CUDA: ``torch.cuda.max_memory_allocated`` above ``memory_allocated`` after
``reset_peak_memory_stats``, and the median CUDA-event step. Ratios are ``kldiv / naive`` (and
``kldiv / liger``) of figures measured in the same run. Before a CPU case starts, its memory and time
are estimated (:mod:`~kldiv.bench.fused_linear.estimates`); a case that would not fit, or would run
past the timeout, is skipped with the reason recorded; one that runs past it anyway is killed.

**Accuracy** (:mod:`~kldiv.bench.fused_linear.accuracy`). In-process, small sizes: the relative
error of the loss and of the gradients w.r.t. the hidden states and the weight, for each
implementation and dtype, against the float64 evaluation of the naive program on the same (rounded)
inputs: norm-wise ``‖g − g64‖ / ‖g64‖`` and elementwise ``max |g − g64| / |g64|`` over the entries
with ``|g64| > 1e-3 · max |g64|``.

The programs are in :mod:`~kldiv.bench.fused_linear.cases`, the tables in
:mod:`~kldiv.bench.fused_linear.report`.
"""
