"""Entry points and the dataclass-config parser."""

import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest

from casiqa.cli import parse_config


@dataclass
class A:
    n: int = 3
    name: str = "x"
    mode: Literal["hf", "folder"] = "hf"


@dataclass
class B:
    rate: float = field(default=0.5, metadata={"help": "a rate"})
    on: bool = False

    def __post_init__(self):
        if self.rate < 0:
            raise ValueError("rate must be >= 0")


def test_yaml_recipe_then_cli_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("n: 7\nrate: 0.25\nmode: folder\n")
    a, b = parse_config((A, B), ["--config", str(recipe), "--n", "9", "--on", "true"])
    assert (a.n, a.name, a.mode, b.rate, b.on) == (9, "x", "folder", 0.25, True)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--mode", "csv"], "invalid choice"), (["--rate", "-1"], "rate must be"), (["--n", "two"], "invalid int")],
)
def test_bad_values_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config((A, B), argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_unknown_recipe_key_is_refused(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("n: 1\nbogus: 2\n")
    with pytest.raises(SystemExit):
        parse_config((A, B), ["--config", str(recipe)])
    assert "unknown field(s) bogus" in capsys.readouterr().err


def _run(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)


def test_phantom_command_builds_a_folder(tmp_path):
    from casiqa.data.folder import read_folder

    r = _run("casiqa.phantom", "--n", "4", "--size", "128", "--out", str(tmp_path), "--format", "folder", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert "wrote 4 cases" in r.stderr
    assert len(read_folder(tmp_path)) == 4


def test_phantom_command_rejects_bad_config(tmp_path):
    r = _run("casiqa.phantom", "--n", "4", "--size", "32", "--out", str(tmp_path))
    assert r.returncode == 2 and "size must be in 64..4096" in r.stderr


def test_calibrate_prints_the_table(tmp_path, real_dir):
    r = _run("casiqa.phantom.calibrate", "--real", str(real_dir), "--n", "3", "--size", "256", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "| vessel_contrast" in r.stdout and "phantom medians inside" in r.stdout
    assert (tmp_path / "gallery.png").stat().st_size > 10_000 and (tmp_path / "calibration.json").is_file()


def test_calibrate_names_a_missing_folder(tmp_path):
    r = _run("casiqa.phantom.calibrate", "--real", str(tmp_path / "nope"), "--n", "1", "--out", str(tmp_path))
    assert r.returncode == 2 and "not found" in r.stderr
