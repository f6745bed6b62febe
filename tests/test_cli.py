"""The command line starts without importing torch or the benchmark modules."""

import subprocess
import sys

import pytest

from mola_ts.cli import build_parser, main


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["bench", "--help"],
                                  ["demo", "--help"], ["datasets", "list", "--help"]])
def test_help_and_version_import_neither_torch_nor_the_benchmarks(argv):
    code = ("import sys\nfrom mola_ts.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in sys.modules if m == 'torch' or m.startswith('mola_ts.bench.')]\n"
            "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_the_selected_command_gets_its_arguments():
    args = build_parser(["bench", "monitor", "--out", "x"]).parse_args(
        ["bench", "monitor", "--out", "x", "--repeats", "2"])
    assert args.repeats == 2 and callable(args.func)


def test_every_command_is_built_for_the_docs():
    parser = build_parser()  # argv None: every runner's arguments
    assert parser.parse_args(["demo", "tep", "--out", "x", "--quick"]).quick


def test_unknown_command_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "nothing"])
    assert "invalid choice" in capsys.readouterr().err
