"""The BIDS-App command line (bidsreg.cli.parser): flags, recipes and exit codes."""
from __future__ import annotations

from pathlib import Path

import pytest

from bidsreg import __version__
from bidsreg import exit_codes
from bidsreg.cli.parser import parse_args
from bidsreg.config import MAX_DEFAULT_THREADS, Config, usable_cpus
from bidsreg.methods.demons import DemonsConfig
from bidsreg.methods.table import method_names


@pytest.fixture()
def dirs(tmp_path) -> list[str]:
    (tmp_path / "bids").mkdir()
    return [str(tmp_path / "bids"), str(tmp_path / "out")]


def exit_code(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    return info.value.code, capsys.readouterr().err


def test_defaults_and_labels(dirs, tmp_path):
    config = parse_args(dirs + ["participant", "--participant_label", "sub-01", "02", "--session-label", "ses-a"])
    assert isinstance(config, Config) and config.analysis_level == "participant"
    assert config.bids_dir == tmp_path / "bids" and config.output_dir.is_absolute()
    assert config.participant_label == ("01", "02") and config.session_label == ("a",)
    assert config.methods == ("cnnio",) and config.plugin == "MultiProc"
    assert config.plugin_args == {} and config.device == "auto" and not config.skip_bids_validation
    assert config.nprocs == usable_cpus() and config.context.threads == min(usable_cpus(), MAX_DEFAULT_THREADS)
    assert config.work == config.output_dir / "work"
    assert config.method_configs["cnnio"].model is None
    assert config.output_resolution == "compact"
    assert parse_args(dirs + ["participant", "--output-resolution", "full"]).output_resolution == "full"


def test_method_options_make_each_method_configuration(dirs, tmp_path):
    config = parse_args(dirs + ["participant", "--methods", "demons,antssyn,cnn", "--demons-iterations", "9", "8", "7",
                                "--ants-affine-iterations", "10", "5", "--model", str(tmp_path / "m.pt")])
    assert config.method_configs["demons"] == DemonsConfig(iterations=(9, 8, 7), affine_iterations=(10, 5))
    assert config.method_configs["antssyn"].affine_iterations == (10, 5)
    assert config.method_configs["cnn"].model == tmp_path / "m.pt"
    assert set(config.method_configs) == {"demons", "antssyn", "cnn"}


@pytest.mark.parametrize(
    "value, expected",
    [("cnn", ("cnn",)), ("antssyn,cnn", ("antssyn", "cnn")), ("CNN, cnn", ("cnn",)), ("antssynfull", ("antssynfull",)),
     ("all", tuple(m for m in method_names() if m != "antssynfull"))],  # the 40-minute one runs only when named
)
def test_methods(dirs, value, expected):
    assert parse_args(dirs + ["participant", "--methods", value]).methods == expected


@pytest.mark.parametrize(
    "extra, code, words",
    [
        (["particpant"], exit_codes.UNKNOWN_LEVEL, "analysis_level"),
        (["participant", "--methods", "cnn,elastix"], exit_codes.USAGE, "elastix"),
        (["participant", "--participant-label", "sub-"], exit_codes.USAGE, "subject label"),
        (["participant", "--session-label", "ses-a_b"], exit_codes.USAGE, "session label"),
        (["participant", "--plugin-args", "{bad"], exit_codes.USAGE, "JSON"),
        (["participant", "--plugin-args", "[1]"], exit_codes.USAGE, "JSON object"),
        (["participant", "--nprocs", "0"], exit_codes.USAGE, ">= 1"),
        (["participant", "--plugin", "Slurm"], exit_codes.USAGE, "SLURMGraph"),
        (["participant", "--no-such-flag"], exit_codes.USAGE, "unrecognized"),
        (["participant", "--output-resolution", "half"], exit_codes.USAGE, "compact"),
        (["participant", "--fixed-labels", "l.nii.gz", "--fixed", "sub-01"], exit_codes.USAGE, "--labels"),
        ([], exit_codes.USAGE, "required"),
    ],
)
def test_usage_errors_exit_with_bids_app_codes(dirs, capsys, extra, code, words):
    got, err = exit_code(dirs + extra, capsys)
    assert got == code and words in err, err


def test_output_or_work_dir_inside_the_bids_dir_is_refused_but_in_its_derivatives(tmp_path, capsys):
    bids = tmp_path / "bids"
    for argv in (
        [str(bids), str(bids), "participant"],
        [str(bids), str(bids / "derivatives"), "participant"],
        [str(bids), str(bids / "derivatives" / "bidsreg" / "deeper"), "participant"],
        [str(bids), str(bids / "sub-01"), "participant"],
        [str(bids), str(tmp_path / "out"), "participant", "-w", str(bids / "work")],
    ):
        code, err = exit_code(argv, capsys)
        assert code == exit_codes.USAGE and "inside it" in err and "derivatives/bidsreg" in err, err
    bids.mkdir()
    config = parse_args([str(bids), str(bids / "derivatives" / "bidsreg"), "participant",
                         "-w", str(bids / "derivatives" / "bidsreg" / "work")])
    assert config.output_dir == bids / "derivatives" / "bidsreg"


def test_a_bids_dir_that_does_not_exist_says_so(tmp_path, capsys):
    code, err = exit_code([str(tmp_path / "nowhere"), str(tmp_path / "out"), "participant"], capsys)
    assert code == exit_codes.INPUT_MISSING and "does not exist" in err and len(err.strip().splitlines()) == 1, err


def test_a_method_typo_gets_one_line_and_a_suggestion(dirs, capsys):
    code, err = exit_code(dirs + ["participant", "--methods", "cnn,antsyn"], capsys)
    assert code == exit_codes.USAGE and "did you mean antssyn?" in err and len(err.strip().splitlines()) == 1, err


def test_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(f"{code} {meaning}" in text for code, meaning in exit_codes.MEANINGS.items())


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out


def write_recipe(folder: Path, text: str) -> str:
    path = folder / "recipe.toml"
    path.write_text(text)
    return str(path)


def test_recipe_values_and_command_line_override(dirs, tmp_path):
    recipe = write_recipe(
        tmp_path,
        'methods = ["cnn", "antssyn"]\nnprocs = 4\nplugin = "SLURM"\nskip-bids-validation = true\n'
        '[plugin-args]\nsbatch_args = "--time=01:00:00"\n',
    )
    config = parse_args(dirs + ["participant", "--recipe", recipe])
    assert config.methods == ("cnn", "antssyn") and config.nprocs == 4 and config.plugin == "SLURM"
    assert config.skip_bids_validation and config.plugin_args == {"sbatch_args": "--time=01:00:00"}
    config = parse_args(dirs + ["participant", "--recipe", recipe, "--nprocs", "2", "--methods", "antsaffine"])
    assert config.nprocs == 2 and config.methods == ("antsaffine",) and config.plugin == "SLURM"


@pytest.mark.parametrize(
    "text, code, words",
    [
        ("nprocs = \n", exit_codes.USAGE, "not a valid TOML"),
        ("nproc = 2\n", exit_codes.USAGE, "unknown option 'nproc'"),
        ('methods = "cnn,elastic"\n', exit_codes.USAGE, "elastic"),
        ('plugin = "Local"\n', exit_codes.USAGE, "invalid choice"),
    ],
)
def test_bad_recipes_name_the_file(dirs, tmp_path, capsys, text, code, words):
    recipe = write_recipe(tmp_path, text)
    got, err = exit_code(dirs + ["participant", "--recipe", recipe], capsys)
    assert got == code and words in err and recipe in err, err


def test_missing_recipe_is_missing_input(dirs, tmp_path, capsys):
    code, err = exit_code(dirs + ["participant", "--recipe", str(tmp_path / "none.toml")], capsys)
    assert code == exit_codes.INPUT_MISSING and "none.toml" in err
