"""The process-wide setting `import casiqa` makes before torch loads (casiqa/__init__.py)."""

import os
import subprocess
import sys


def _thp_after_import(env: dict) -> str:
    code = "import casiqa, os; print(os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_casiqa_puts_large_cpu_tensors_on_huge_pages():
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    assert _thp_after_import(env) == "1"


def test_a_users_own_huge_page_setting_is_kept():
    assert _thp_after_import({**os.environ, "THP_MEM_ALLOC_ENABLE": "0"}) == "0"


def test_the_entry_point_packages_import_casiqa_before_anything_else():
    """`python -m finetune.sft` (and evals, agent, benchmarks) import their package first: its first
    statement must load casiqa, or torch may allocate before the setting exists."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for package in ("finetune", "evals", "agent", "benchmarks"):
        lines = [line for line in (root / package / "__init__.py").read_text().splitlines()
                 if line.strip() and not line.startswith(('"""', "#")) and not line.endswith('"""')]
        assert lines and lines[0].startswith("import casiqa"), package
