"""User tasks declared in suite TOML: a good task loads; each bad input gives its own message."""

import tomllib
from pathlib import Path

import numpy as np
import pytest

from tasks.registry import get_task, tasks_from_toml

LABELS_XML = """<?xml version="1.0" encoding="utf-8"?>
<labels xmlns="http://mulan.sourceforge.net/labels">
<label name="red flag"></label>
<label name="blue"></label>
</labels>
"""


def arff_text(rows: list[str], *, extra_attribute: str = "") -> str:
    """A small Mulan-style ARFF: numeric f1, nominal colour (3 values), labels blue, 'red flag' (+ extra)."""
    header = ["@relation flags", "@attribute f1 numeric", "@attribute colour {green,white,black}",
              "@attribute blue {0,1}", "@attribute 'red flag' {0,1}"]
    if extra_attribute:  # appended last, with a 0 in every row
        header.append(extra_attribute)
        rows = [row + ",0" for row in rows]
    return "\n".join(header + ["@data"] + rows) + "\n"


GOOD_ROWS = [f"{i * 0.5},{('green', 'white', 'black')[i % 3]},{i % 2},{(i // 2) % 2}" for i in range(20)]

XARFF = """@relation toy
@attribute A1 NUMERIC
@attribute A2 NUMERIC
@attribute L RANKING {a,b,c}
@data
""" + "\n".join(f"{i * 0.1},\t{(i % 4) * 1.0},\t{('a>b>c', 'c>a>b', 'b>c>a')[i % 3]}" for i in range(30)) + "\n"

SUITE = """
[tasks.my-flags]
kind = "multilabel"
train = "data/flags-train.arff"
test = "data/flags-test.arff"
labels = "data/flags.xml"

[tasks.my-ranking]
kind = "ranking"
file = "data/toy.xarff"
"""


@pytest.fixture
def suite_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "flags-train.arff").write_text(arff_text(GOOD_ROWS))
    (data / "flags-test.arff").write_text(arff_text(GOOD_ROWS[:8]))
    (data / "flags.xml").write_text(LABELS_XML)
    (data / "toy.xarff").write_text(XARFF)
    return tmp_path


def declare(suite_dir: Path, text: str = SUITE):
    return tasks_from_toml(tomllib.loads(text)["tasks"], suite_dir)


def test_user_tasks_load(suite_dir):
    flags, ranking = declare(suite_dir)
    assert get_task("my-flags") is flags and flags.k == 2 and flags.available(None) is None
    data = flags.load(None, seed=0, val_fraction=0.25)
    assert data.label_names == ["red flag", "blue"]  # XML order, matched by name
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (15, 5, 8)
    assert data.feature_names == ["f1", "colour=green", "colour=white", "colour=black"]
    # row 0 of test: f1 = 0, green, blue = 0, red flag = 0; row 3: f1 = 1.5, green, blue = 1, red = 1
    np.testing.assert_array_equal(data.y_test[[0, 3]], [[0, 0], [1, 1]])
    ranking_data = ranking.load(None, seed=0, fold=1)
    assert ranking.k == 3 and ranking.n_folds == 10 and len(ranking_data.x_test) == 3
    assert set(map(tuple, ranking_data.y_test)) <= {(0, 1, 2), (1, 2, 0), (2, 0, 1)}


def test_n_labels_and_cv_without_test_file(suite_dir):
    (task,) = declare(suite_dir, '[tasks.t]\nkind = "multilabel"\ntrain = "data/flags-train.arff"\nn_labels = 2\n')
    data = task.load(None, seed=1)
    assert task.n_folds == 5 and data.label_names == ["blue", "red flag"]  # the last two columns
    assert len(data.x_test) == 4


def test_missing_file_says_where_it_looked(suite_dir):
    (task,) = declare(suite_dir, '[tasks.t]\nkind = "ranking"\nfile = "nowhere/x.xarff"\n')
    expected = str((suite_dir / "nowhere" / "x.xarff").resolve())
    assert expected in task.available(None)
    with pytest.raises(FileNotFoundError, match="x.xarff") as error:
        task.load(None, seed=0)
    assert expected in str(error.value)


def test_labels_not_found(suite_dir):
    (suite_dir / "data" / "flags.xml").write_text(LABELS_XML.replace("blue", "bleu"))
    with pytest.raises(ValueError, match=r"labels not found.*'bleu' \(did you mean 'blue'\?\)"):
        get_task_from(suite_dir).load(None, seed=0)


def get_task_from(suite_dir):
    return declare(suite_dir)[0]


def test_k_mismatch(suite_dir):
    with pytest.raises(ValueError, match="k mismatch.*declares k = 3"):
        declare(suite_dir, SUITE.replace('labels = "data/flags.xml"', 'labels = "data/flags.xml"\nk = 3'))[0].load(
            None, seed=0)
    (suite_dir / "data" / "flags-test.arff").write_text(arff_text(GOOD_ROWS[:8], extra_attribute="@attribute g {0,1}"))
    spec = SUITE.replace('labels = "data/flags.xml"', "n_labels = 2")
    with pytest.raises(ValueError, match="k mismatch between train"):
        declare(suite_dir, spec)[0].load(None, seed=0)
    with pytest.raises(ValueError, match="n_labels = 2 but k = 4"):
        declare(suite_dir, spec.replace("n_labels = 2", "n_labels = 2\nk = 4"))


@pytest.mark.parametrize("bad_row, message", [
    ("0.5,green,2,0", r"flags-train.arff: cannot parse ARFF.*value 2 not found.*line 27"),  # label not 0/1
    ("0.5,purple,1,0", r"cannot parse ARFF.*value purple not found"),  # undeclared nominal value
    ("oops,green,1,0", r"cannot parse ARFF.*Invalid numerical value"),
])
def test_unencodable_values(suite_dir, bad_row, message):
    (suite_dir / "data" / "flags-train.arff").write_text(arff_text(GOOD_ROWS + [bad_row]))
    with pytest.raises(ValueError, match=message):
        get_task_from(suite_dir).load(None, seed=0)


def test_unencodable_label_attribute(suite_dir):
    text = arff_text(GOOD_ROWS).replace("@attribute blue {0,1}", "@attribute blue {yes,no}")
    (suite_dir / "data" / "flags-train.arff").write_text(text.replace(",1,", ",yes,").replace(",0,", ",no,"))
    with pytest.raises(ValueError, match="label 'blue' has values"):
        get_task_from(suite_dir).load(None, seed=0)


@pytest.mark.parametrize("order, message", [("a>b", "not an order of all labels"), ("a>b|c", "ties"),
                                            ("a>b>z", "unknown")])
def test_unencodable_rankings(suite_dir, order, message):
    (suite_dir / "data" / "toy.xarff").write_text(XARFF + f"1.0,\t2.0,\t{order}\n")
    with pytest.raises(ValueError, match=message):
        declare(suite_dir)[1].load(None, seed=0)


@pytest.mark.parametrize("value", ["?", "inf", "nan"])
def test_nan_and_inf_features(suite_dir, value):
    (suite_dir / "data" / "flags-train.arff").write_text(arff_text(GOOD_ROWS + [f"{value},green,1,0"]))
    with pytest.raises(ValueError, match=r"NaN/inf.*'f1' \(1 rows\)"):
        get_task_from(suite_dir).load(None, seed=0)


def test_constant_training_label_warns_and_goes_on(suite_dir):
    rows = [row[:-1] + "0" for row in GOOD_ROWS]  # 'red flag' never set in train
    (suite_dir / "data" / "flags-train.arff").write_text(arff_text(rows))
    with pytest.warns(UserWarning, match="'red flag'=0"):
        data = get_task_from(suite_dir).load(None, seed=0)
    assert data.y_train[:, 0].max() == 0 and len(data.x_test) == 8


@pytest.mark.parametrize("spec, message", [
    ('kind = "multilabel"\ntrian = "x.arff"\nn_labels = 1', "unknown key 'trian'.*did you mean 'train'"),
    ('kind = "multi"\ntrain = "x.arff"', "kind must be one of"),
    ('kind = "multilabel"\ntrain = "x.arff"', "exactly one of labels"),
    ('kind = "ranking"', r"needs file"),
    ('kind = "ranking"\nfile = "x"\nn_folds = 0', "positive integer"),
])
def test_bad_declarations(suite_dir, spec, message):
    with pytest.raises(ValueError, match=message):
        declare(suite_dir, f"[tasks.t]\n{spec}\n")


def test_user_task_cannot_shadow_builtin(suite_dir):
    with pytest.raises(ValueError, match="clashes with the built-in"):
        declare(suite_dir, '[tasks.yeast]\nkind = "ranking"\nfile = "data/toy.xarff"\n')
