"""What a new user types first: --version, -h, each command's help grouped in panels, one option name style."""

from __future__ import annotations

from typer.testing import CliRunner

from alpagasus.cli import app

runner = CliRunner()


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"alpagasus {version('alpagasus')}"


def test_dash_h_is_help_for_the_app_and_each_command():
    top = runner.invoke(app, ["-h"])
    assert top.exit_code == 0 and "Usage: alpagasus" in top.output
    sub = runner.invoke(app, ["select", "-h"])
    assert sub.exit_code == 0 and "--match-length" in sub.output


def test_distill_takes_output_like_every_command_and_the_old_out(tmp_path):
    for flag in ("--output", "--out", "-o"):
        res = runner.invoke(app, ["distill", str(tmp_path / "missing.jsonl"), flag, str(tmp_path / "p")])
        assert "No such option" not in res.output and "Missing option" not in res.output, (flag, res.output)
        assert res.exit_code == 2 and "missing.jsonl" in res.output


def test_rate_help_groups_its_options_in_panels():
    res = runner.invoke(app, ["rate", "--help"], terminal_width=120)
    assert res.exit_code == 0
    for panel in ("Input", "Judge", "Run", "Cost", "Cascade", "Output"):
        assert f" {panel} " in res.output, panel
