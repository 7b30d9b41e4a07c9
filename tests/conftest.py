"""Shared test set-up: Hypothesis profiles and the TensorFlow switch.

Profiles: ``ci`` (deterministic, bounded, used by ``.ci/run`` and by default) and ``dev`` (random,
more examples). Choose with ``HYPOTHESIS_PROFILE=dev pytest``.

TensorFlow cross-checks skip when TensorFlow is missing, unless ``TINYGRAD_CNN_REQUIRE_TF=1``
(set by ``.ci/run``), where a missing TensorFlow fails the run instead.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, max_examples=25, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _load_tf():
    try:
        import tensorflow as tf
    except ImportError as e:
        if os.environ.get("TINYGRAD_CNN_REQUIRE_TF") == "1":
            raise RuntimeError("TINYGRAD_CNN_REQUIRE_TF=1 but TensorFlow is not installed") from e
        return None
    return tf


@pytest.fixture(scope="session")
def tf():
    """The TensorFlow module, for cross-checks; skips the test when TensorFlow is not installed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    module = _load_tf()
    if module is None:
        pytest.skip("TensorFlow is not installed (set TINYGRAD_CNN_REQUIRE_TF=1 to make this a failure)")
    module.config.experimental.enable_op_determinism()
    return module
