"""Conformance tests: kldiv against the real tf_keras 2.x and the real Keras 3.

pytest imports this file before the test modules of this folder, so TensorFlow's C++ logging is
silenced before ``test_tf_keras_contract`` imports TensorFlow (a no-op if another test module of the
same process imported it first). The Keras 3 comparisons run in a subprocess of their own (see
``keras3_differential.py``), because ``KERAS_BACKEND`` is fixed per process.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
