"""Shared fixtures: DSPy settings reset per test, and one embedded model server per session."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


@pytest.fixture(autouse=True)
def _forget_servers_without_tokenizers():
    """Fake servers reuse one another's ports: one without /tokenize must not hide the next one's."""
    from fusion_dspy.lm.token_count import forget_unavailable

    forget_unavailable()
    yield


@pytest.fixture(autouse=True)
def _reset_dspy_settings():
    """Each test starts and ends with DSPy's default global settings (no LM, default adapter)."""
    import copy

    from dspy.dsp.utils.settings import DEFAULT_CONFIG

    dspy.configure(**copy.deepcopy(DEFAULT_CONFIG))
    yield
    dspy.configure(**copy.deepcopy(DEFAULT_CONFIG))


@pytest.fixture(scope="session")
def embedded_server():
    """The embedded SmolLM2 server, started once for all integration tests."""
    import fusion_dspy as fd

    server = fd.embedded()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_data() -> str:
    if not os.path.isdir(SHARED_DATA):
        pytest.skip("../shared/data is not beside the repository")
    return SHARED_DATA


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance per test module (127.0.0.1, 2 CPUs); the engine uses it (and leaves it running) instead of starting its own."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=256 * 1024**2, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
