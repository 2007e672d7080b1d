"""Prompt templates (Jinja, StrictUndefined), resolved relative to this file.

    from prompts import render
    render("assess.j2", aux=["live"], head=...)
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parent


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def render(name: str, **variables) -> str:
    """Render one template; a missing variable raises instead of rendering empty."""
    return _env().get_template(name).render(**variables).strip()


def names() -> list[str]:
    return sorted(p.name for p in TEMPLATES.glob("*.j2"))
