"""Data formats: the annotated folder format (phantom output and user data alike)."""
