"""The CAS-IQA agent: assessment command line, and (later) the LangGraph flow."""

import casiqa  # noqa: F401  (first: sets the CPU allocator's huge pages before torch loads)
