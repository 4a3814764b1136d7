import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import stack as stack_module  # noqa: E402
from harness.stack import running  # noqa: E402

# No test may depend on the machine's speed: callouts get generous timeouts unless a test sets
# its own (harness/stack.py, PATIENT).
stack_module.PATIENT_BY_DEFAULT = True


def token_counter(config):
    # The token counter alone: its tests send no virtual keys (the budget tests run both).
    yield from running(configs={"sluice.token_counter": config}, modules=["sluice.token_counter"])


@pytest.fixture(scope="module")
def stack():
    """Envoy with the token counter (default config), the mock provider, Redis and webdis."""
    yield from token_counter({})


@pytest.fixture(scope="module")
def stack_with_headers():
    """The same with count headers and trailers on."""
    yield from token_counter({"response_headers": True})


def pytest_report_header():
    return f"wasm dir: {os.environ.get('SLUICE_WASM_DIR', 'target/wasm32-wasip1/release')}"
