"""Feature tables: reading CSV / XLSX, matching by name, NaN / label / constant-feature errors."""

from __future__ import annotations

import numpy as np
import pytest

from spineai.errors import SpineAIError
from spineai.featureset import FEATURES_31, LIFEX_31
from spineai.models.tables import (
    Table, check_constant, encode_labels, feature_columns_for_training, feature_matrix, match_features, read_table,
)
from spineai.models.training import load_dataset


def write_csv(path, columns, rows):
    path.write_text("\n".join([",".join(columns)] + [",".join(str(v) for v in r) for r in rows]) + "\n")
    return path


def test_csv_and_xlsx_read_the_same(tmp_path):
    import openpyxl

    cols = ["lesion_id", "a", "b", "diagnosis"]
    rows = [["L1", 1.5, 2, "SD"], ["L2", 3.25, -1, "MET"]]
    csv_t = read_table(write_csv(tmp_path / "t.csv", cols, rows))
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(cols)
    for r in rows:
        ws.append(r)
    wb.save(tmp_path / "t.xlsx")
    x_t = read_table(tmp_path / "t.xlsx")
    assert csv_t.columns == x_t.columns == cols
    np.testing.assert_allclose(csv_t.numeric("a"), x_t.numeric("a"))
    assert x_t.column("diagnosis") == ["SD", "MET"]
    assert x_t.row_ids() == ["L1", "L2"]


def test_unknown_format_and_duplicate_columns(tmp_path):
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(SpineAIError, match="unknown table format"):
        read_table(tmp_path / "t.json")
    with pytest.raises(SpineAIError, match="duplicate column names: a"):
        read_table(write_csv(tmp_path / "d.csv", ["a", "a"], [[1, 2]]))
    with pytest.raises(SpineAIError, match="does not exist"):
        read_table(tmp_path / "missing.csv")


def test_nan_rows_and_columns_are_named(tmp_path):
    t = read_table(write_csv(tmp_path / "t.csv", ["lesion_id", "f1", "f2", "f3"],
                             [["A", 1, 2, 3], ["B", "", 2, 3], ["C", 1, 2, "x"], ["D", 1, 2, 3]]))
    with pytest.raises(SpineAIError) as e:
        feature_matrix(t, ["f1", "f2", "f3"])
    msg = str(e.value)
    assert "rows B, C" in msg and "columns f1, f3" in msg and "--impute median" in msg
    X = feature_matrix(t, ["f1", "f2", "f3"], impute={"f1": 9.0, "f2": 0.0, "f3": 7.0})
    assert X[1, 0] == 9.0 and X[2, 2] == 7.0


def test_mismatched_columns_list_missing_and_extra():
    t = Table(["id", "a", "c", "zz"], [["x", "1", "2", "3"]])
    with pytest.raises(SpineAIError) as e:
        match_features(t, ["a", "b", "c"])
    msg = str(e.value)
    assert "missing 1: b" in msg and "extra 1: zz" in msg


def test_lifex_and_engine_names_are_aliases():
    t = Table(list(FEATURES_31), [["1"] * 31])
    cols, aliased = match_features(t, list(LIFEX_31))
    assert aliased and cols == list(FEATURES_31)
    cols, aliased = match_features(Table(list(LIFEX_31), [["1"] * 31]), list(LIFEX_31))
    assert not aliased


def test_labels_single_class_and_too_few():
    with pytest.raises(SpineAIError, match="a single class"):
        encode_labels(["SD", "SD", "SD"])
    with pytest.raises(SpineAIError, match=r"too few samples of class STB \(1\)"):
        encode_labels(["SD", "SD", "MET", "MET", "STB"])
    lab = encode_labels(["MET", "SD", "STB", "SD", "MET", "STB"])
    assert lab.classes == ["SD", "MET", "STB"]  # the study's order, not alphabetical
    assert encode_labels(["1", "0", "1.0", "0"]).classes == ["0", "1"]


def test_constant_feature_and_label_leak_and_folds(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[f"L{i}", rng.normal(), 5.0, i % 2, "MET" if i % 2 else "SD"] for i in range(12)]
    path = write_csv(tmp_path / "t.csv", ["lesion_id", "f", "const", "label", "diagnosis"], rows)
    with pytest.raises(SpineAIError, match="constant feature columns carry no information: const"):
        check_constant(feature_matrix(read_table(path), ["f", "const"]), ["f", "const"], "t")
    with pytest.raises(SpineAIError, match="column 'label' encodes the label 'diagnosis' exactly"):
        load_dataset(path, "diagnosis", exclude=["const"])
    with pytest.raises(SpineAIError, match="too few samples for 10-fold cross-validation: the smallest class has 6"):
        load_dataset(path, "diagnosis", exclude=["const", "label"], folds=10)
    ds = load_dataset(path, "diagnosis", exclude=["const", "label"], folds=3)
    assert ds.feature_names == ["f"] and ds.classes == ["SD", "MET"]
    with pytest.raises(SpineAIError, match="no label column 'dx'"):
        load_dataset(path, "dx")


def test_training_columns_prefer_the_31_features():
    t = Table(["lesion_id", *LIFEX_31, "label", "diagnosis"], [["x", *["1"] * 31, "0", "SD"]])
    assert feature_columns_for_training(t, "diagnosis") == list(LIFEX_31)


def test_sdmet31_xlsx_matches_csv(shared_data):
    x = read_table(shared_data("sdmet31", "train_plus_test_x.xlsx"))
    c = read_table(shared_data("sdmet31", "train.csv"))
    assert x.columns == list(LIFEX_31) and len(x) == 80
    np.testing.assert_allclose(feature_matrix(x, LIFEX_31), feature_matrix(c, LIFEX_31), rtol=1e-9)
