"""CAS-IQA core: metric definitions, the angiography phantom, data formats."""

__version__ = "0.1.0"
