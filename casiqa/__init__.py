"""CAS-IQA core: metric definitions, the angiography phantom, data formats."""

import os as _os

__version__ = "0.1.0"

# Large CPU tensors on transparent huge pages (PyTorch's allocator reads this once, at its first
# allocation, so it is set here, before any of the project's modules imports torch). Training on
# CPU frees and allocates batch-sized tensors all the time, and with 4 KiB pages each one costs
# tens of thousands of page faults: a stage-1 epoch took 36.4 s with it unset and 27.0 s with it
# set, the same losses to the last digit (docs/training-log.md). A value the user set is kept.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
