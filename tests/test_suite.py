"""Suite validation: every malformed suite gives one clear line per problem."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from benchlab.suite import SuiteError, apply_overrides, load_suite

GOOD = """\
name: toy_suite
dataset: {name: toy, train_size: 100}
models:
  - name: tiny
    width: 3
train: {runs: 2, epochs: 1}
attacks:
  - name: noise
    eps: [0.1, 0.2]
explainers:
  - name: intensity
evaluate: {test_size: 64, count: 4}
"""


def _write(tmp_path, text, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _problems(tmp_path, registry, text, overrides=()):
    path = _write(tmp_path, text)
    with pytest.raises(SuiteError) as info:
        load_suite(path, registry, overrides)
    return [str(p) for p in info.value.problems], str(path)


def test_good_suite_validates_params_with_the_components_model(tmp_path, toy_registry):
    suite = load_suite(_write(tmp_path, GOOD), toy_registry)
    assert suite.models[0].params.width == 3
    assert suite.attacks[0].params.scale == 1.0
    assert suite.attacks[0].eps == [0.1, 0.2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unknown top-level key, with a suggestion
        (GOOD + "modles: []\n", ["modles: unknown key 'modles'; did you mean 'models'?"]),
        # unknown key inside a section
        (GOOD.replace("epochs: 1", "epoch: 1"), ["train.epoch: unknown key 'epoch'; did you mean 'epochs'?"]),
        # wrong type
        (GOOD.replace("runs: 2", "runs: many"), ["train.runs: expected an integer, got 'many'"]),
        # out of range value inside a list
        (GOOD.replace("[0.1, 0.2]", "[0.1, 0.2, 1.5]"),
         ["attacks.0.eps.2: expected a value <= 1 for 'noise' (L∞ ball): the largest L∞ "
          "distance between two 1x8x8 images with values in [0, 1]; got 1.5"]),
        # the index is the one written, before sorting; infinities are no radius
        (GOOD.replace("[0.1, 0.2]", "[1.5, 0.1]"), ["attacks.0.eps.0: expected a value <= 1 "
         "for 'noise' (L∞ ball): the largest L∞ distance between two 1x8x8 images with values "
         "in [0, 1]; got 1.5"]),
        (GOOD.replace("[0.1, 0.2]", "[0.1, .inf]"), ["attacks.0.eps.1: expected a finite number, got inf"]),
        # negative size
        (GOOD.replace("train_size: 100", "train_size: -5"), ["dataset.train_size: expected a value > 0, got -5"]),
        # misspelled component name
        (GOOD.replace("name: noise", "name: nosie"), ["attacks.0.name: unknown attack 'nosie'; did you mean 'noise'?"]),
        (GOOD.replace("name: toy,", "name: tyo,"), ["dataset.name: unknown dataset 'tyo'; did you mean 'toy'?"]),
        # a component parameter the component does not have
        (GOOD.replace("width: 3", "widht: 3"), ["models.0.widht: unknown key 'widht'; did you mean 'width'?"]),
        # a component parameter of the wrong type
        (GOOD.replace("width: 3", "width: wide"), ["models.0.width: expected an integer, got 'wide'"]),
        # missing required section
        ("name: x\nmodels: [{name: tiny}]\n", ["dataset: required key is missing"]),
        # empty model list
        (GOOD.replace("models:\n  - name: tiny\n    width: 3\n", "models: []\n"), ["models: expected at least 1 item(s)"]),
        # literal choice
        (GOOD.replace("epochs: 1", "epochs: 1, optimizer: rmsprop"), ["train.optimizer: expected one of 'sgd' or 'adam'"]),
        # same component twice without labels
        (GOOD.replace("explainers:", "  - name: noise\n    eps: [0.3]\nexplainers:"), ["attacks.1: 'noise' is already used by attacks.0"]),
        # a section of the wrong shape
        (GOOD.replace("evaluate: {test_size: 64, count: 4}", "evaluate: [1, 2]"), ["evaluate: expected a mapping, got a list"]),
    ],
)
def test_malformed_suites_give_one_line_per_problem(tmp_path, toy_registry, text, expected):
    problems, path = _problems(tmp_path, toy_registry, text)
    assert len(problems) == len(expected), problems
    for line, want in zip(problems, expected):
        assert line.startswith(path + ":"), line
        assert want in line, line
        assert "\n" not in line


def test_problem_lines_carry_the_yaml_line_number(tmp_path, toy_registry):
    problems, path = _problems(tmp_path, toy_registry, GOOD.replace("[0.1, 0.2]", "[0.1, 7]"))
    assert problems[0].startswith(f"{path}:9: attacks.0.eps.1:")


def test_several_problems_are_all_reported_in_file_order(tmp_path, toy_registry):
    text = (GOOD.replace("runs: 2", "runs: 0").replace("name: noise", "name: nope")
            .replace("width: 3", "widht: 3"))
    problems, _ = _problems(tmp_path, toy_registry, text)
    assert [p.split(": ")[1] for p in problems] == [
        "models.0.widht", "train.runs", "attacks.0.name"]
    text = GOOD.replace("name: noise", "name: nope").replace("name: intensity", "name: nada")
    problems, _ = _problems(tmp_path, toy_registry, text)
    assert len(problems) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("name: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "expected a mapping at the top level, got a list"),
        ("name: a: b\n", "invalid YAML: mapping values are not allowed"),
    ],
)
def test_unreadable_files(tmp_path, toy_registry, text, expected):
    problems, path = _problems(tmp_path, toy_registry, text)
    assert len(problems) == 1 and expected in problems[0] and problems[0].startswith(path)


def test_missing_file(tmp_path, toy_registry):
    with pytest.raises(SuiteError, match="no such file"):
        load_suite(tmp_path / "nope.yaml", toy_registry)


def test_overrides_set_nested_keys_and_list_items(tmp_path, toy_registry):
    path = _write(tmp_path, GOOD)
    suite = load_suite(path, toy_registry, ["train.runs=5", "attacks.0.eps=[0.3]",
                                            "attacks.0.scale=0.5", "report.alpha=0.01"])
    assert suite.train.runs == 5
    assert suite.attacks[0].eps == [0.3]
    assert suite.attacks[0].params.scale == 0.5
    assert suite.report.alpha == 0.01


def test_overrides_are_validated_like_the_file(tmp_path, toy_registry):
    problems, _ = _problems(tmp_path, toy_registry, GOOD, ["attacks.0.eps=[2]"])
    assert "--set attacks.0.eps.0: expected a value <= 1 for 'noise'" in problems[0]
    assert problems[0].endswith("; got 2")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("attacks.3.eps=[0.1]", "attacks.3: index 3 out of range (the list has 1 items)"),
        ("train.runs", "expected PATH=VALUE"),
        ("name.x=1", "name.x: cannot set a key inside a string"),
        ("attacks.first.eps=1", "attacks.first: expected a list index, got 'first'"),
    ],
)
def test_bad_overrides(override, expected):
    data = {"name": "x", "attacks": [{"name": "noise", "eps": [0.1]}], "train": {}}
    with pytest.raises(SuiteError) as info:
        apply_overrides(data, [override])
    assert expected in str(info.value)


def test_grid_needs_as_many_explained_images_as_columns(tmp_path, toy_registry):
    problems, _ = _problems(tmp_path, toy_registry, GOOD, ["evaluate.explain_size=3"])
    assert "evaluate.explain_size: must be at least evaluate.count (4)" in problems[0]
    problems, _ = _problems(tmp_path, toy_registry, GOOD, ["attacks.0.test_size=2"])
    assert "attacks.0.test_size: must be at least evaluate.count (4)" in problems[0]


HOSTILE = Path(__file__).parent / "data" / "hostile"


def _one_problem(path, registry, overrides=()):
    with pytest.raises(SuiteError) as info:
        load_suite(path, registry, overrides)
    assert len(info.value.problems) == 1
    return str(info.value.problems[0])


def test_an_alias_bomb_is_refused_before_it_expands(toy_registry):
    path = HOSTILE / "alias_bomb.yaml"
    assert path.stat().st_size < 700
    started = time.perf_counter()
    line = _one_problem(path, toy_registry)
    assert time.perf_counter() - started < 1.0
    assert "aliases expand to more than 100,000 values" in line and f"{path}:" in line


def test_a_few_aliases_are_still_fine(tmp_path, toy_registry):
    text = GOOD.replace("models:\n  - name: tiny\n    width: 3",
                        "models:\n  - &m {name: tiny, width: 3}\n  - {<<: *m, label: again}")
    suite = load_suite(_write(tmp_path, text), toy_registry)
    assert [m.key for m in suite.models] == ["tiny", "again"]


def test_deep_nesting_is_one_line(toy_registry):
    line = _one_problem(HOSTILE / "deep_nesting.yaml", toy_registry)
    assert line.endswith("nested deeper than 32 levels; expected a suite")
    assert ":4: description" in line


def test_duplicate_keys_are_refused_not_last_wins(toy_registry):
    path = HOSTILE / "duplicate_keys.yaml"
    assert _one_problem(path, toy_registry) == (
        f"{path}:7: train.epochs: duplicate key 'epochs' (also on line 5); expected each key once")


@pytest.mark.parametrize("source", ["/dev/zero", "big"])
def test_endless_or_huge_files_are_read_in_bounded_memory_and_time(tmp_path, toy_registry, source):
    if source == "big":
        source = tmp_path / "big.yaml"
        with open(source, "w") as fh:
            fh.write("name: big\ndescription: |\n")
            fh.writelines("  " + "x" * 98 + "\n" for _ in range(500_000))  # 50 MB
    started = time.perf_counter()
    line = _one_problem(source, toy_registry)
    assert time.perf_counter() - started < 1.0
    assert line == f"{source}: larger than 1024 KiB; expected a YAML suite file"


def test_an_alias_bomb_in_an_override_is_refused(tmp_path, toy_registry):
    bomb = (HOSTILE / "alias_bomb.yaml").read_text().splitlines()
    value = "{" + ", ".join(line for line in bomb[3:-1]) + ", d: *a9}"
    line = _one_problem(_write(tmp_path, GOOD), toy_registry, [f"description={value}"])
    assert "aliases expand" in line and line.startswith("--set")


@pytest.mark.parametrize(("name", "line", "expected"), [
    ("alias_bomb", 9, "aliases expand to more than 100,000 values"),
    ("deep_nesting", 4, "nested deeper than 32 levels"),
    ("duplicate_keys", 7, "train.epochs: duplicate key 'epochs' (also on line 5)"),
    ("unknown_layer", 11, "explainers.0.layer: with model 'cnn': unknown layer 'conv9'; did you mean 'conv2'? (known: conv1, relu1, conv2, relu2)"),
    ("klass_out_of_range", 11, "explainers.0.klass: with model 'cnn': expected a class below 10"),
    ("seed_overflow", 5, "train.seed: expected a value <= 4294967295, got 18446744073709551616"),
    ("lr_inf", 5, "train.lr: expected a finite number, got inf"),
    ("steps_huge", 8, "attacks.0.steps: expected a value <= 10000, got 1000000000"),
    ("long_name", 1, "name: expected at most 64 characters"),
    ("lone_surrogate", 2, ""),
])
def test_hostile_suites_fail_validation_with_one_line_and_status_2(capsys, name, line, expected):
    from benchlab.cli import main

    path = HOSTILE / f"{name}.yaml"
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{path}:{line}: ") and expected in err[0], err


def test_a_lone_surrogate_is_refused_by_the_pure_python_loader_too(tmp_path, toy_registry,
                                                                  monkeypatch):
    import yaml

    import benchlab.suite.reading as suite_module

    monkeypatch.setattr(suite_module, "_LOADER", yaml.SafeLoader)
    text = GOOD + 'description: "caf\\ud800"\n'
    problems, path = _problems(tmp_path, toy_registry, text)
    assert problems == [f"{path}:13: description: holds '\\ud800' at character 3, a lone "
                        "surrogate that cannot be written to a file; expected text"]


def test_target_class_is_checked_against_the_dataset(capsys):
    from benchlab.cli import main

    assert main(["validate", "suites/fgsm_gradcam.yaml", "--set", "attacks.0.targeted=true",
                 "--set", "attacks.0.target_class=12"]) == 2
    err = capsys.readouterr().err
    assert "attacks.0.target_class: with model 'cnn': expected a class below 10" in err


def test_a_nan_component_parameter_is_refused(tmp_path, toy_registry):
    problems, _ = _problems(tmp_path, toy_registry, GOOD.replace("name: noise", "name: noise\n    scale: .nan"))
    assert len(problems) == 1 and "attacks.0.scale: expected a finite number, got nan" in problems[0]


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        ("{min: 1, max: 12, step: 4}", "--set train.runs.min: expected a value >= 2, got 1"),
        ("{min: 4, max: 3, step: 1}", "--set train.runs.max: expected max >= min (4), got 3"),
        ("{min: 4, max: 12, step: 0}", "--set train.runs.step: expected a value >= 1, got 0"),
        ("{min: 4, max: 12}", "--set train.runs.step: required key is missing"),
        ("{min: 4, max: 12, step: 4, by: 1}", "--set train.runs.by: unknown key 'by'"),
        ("0", "--set train.runs: expected a value > 0, got 0"),
    ],
)
def test_a_range_of_runs_is_checked_with_one_line(tmp_path, toy_registry, runs, expected):
    problems, _ = _problems(tmp_path, toy_registry, GOOD, [f"train.runs={runs}"])
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_range_of_runs_is_read(tmp_path, toy_registry):
    path = _write(tmp_path, GOOD)
    suite = load_suite(path, toy_registry, ["train.runs={min: 4, max: 12, step: 4}"])
    assert (suite.train.first_runs, suite.train.max_runs) == (4, 12)
    assert suite.train.runs.spending == "obrien-fleming"
    assert load_suite(path, toy_registry, ["train.runs=3"]).train.runs == 3
