import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import stack as stack_module  # noqa: E402

# As in integration/: no test may depend on the machine's speed (harness/stack.py, PATIENT).
stack_module.PATIENT_BY_DEFAULT = True
