"""Reader for Mulan multilabel files: ARFF (dense or sparse, via liac-arff) + XML label spec.

Caveats handled (see PROVENANCE.md): labels are matched **by name** from the XML, not by
position (the XML order differs from the column order for yeast and enron); label names may
be quoted and contain spaces and escaped quotes (birds' ``'Swainson\\'s Thrush'``); sparse
files (``{index value, ...}`` rows) are read as COO, where an absent cell is code 0 (the
value 0, or the first declared nominal value); label values are the strings '0'/'1'.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.features import Attribute, encode_features, nominal_codes, unescape_name
from tasks.names import closest


@dataclass(frozen=True)
class MultilabelTable:
    x: np.ndarray  # float64 (n, d) encoded features
    y: np.ndarray  # int8 (n, k), columns in ``label_names`` order
    feature_names: list[str]
    label_names: list[str]
    source_features: list[str]  # feature attribute names before encoding (PROVENANCE counts these)


def read_label_names(xml_path: Path) -> list[str]:
    """Label names of a Mulan XML spec, in document order (nested hierarchical labels included)."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    except ElementTree.ParseError as error:
        raise ValueError(f"{xml_path}: not a readable Mulan label XML ({error})") from None
    names = [element.get("name") for element in root.iter() if element.tag.rsplit("}", 1)[-1] == "label"]
    if not names or any(name is None for name in names):
        raise ValueError(f"{xml_path}: expected <label name=...> elements")
    return [unescape_name(name) for name in names if name is not None]


def _is_sparse(path: Path) -> bool:
    """True when the first data row is ``{...}`` (sparse ARFF)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        in_data = False
        for line in handle:
            stripped = line.strip()
            if not stripped or stripped.startswith("%"):
                continue
            if in_data:
                return stripped.startswith("{")
            in_data = stripped.lower().startswith("@data")
    return False


@functools.lru_cache(maxsize=32)
def _read_arff_codes(path_str: str, mtime: float) -> tuple[np.ndarray, tuple[Attribute, ...]]:
    """Parse an ARFF file into codes (n, A) and attributes; cached in-process per (path, mtime)."""
    import arff

    path = Path(path_str)
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes); not an ARFF file")
    sparse = _is_sparse(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            parsed = arff.load(handle, return_type=arff.COO if sparse else arff.DENSE)
    except arff.ArffException as error:
        raise ValueError(f"{path}: cannot parse ARFF ({type(error).__name__}: {error})") from None
    attributes = tuple(
        Attribute(unescape_name(name),
                  tuple(kind) if isinstance(kind, list) else (() if kind.upper() == "STRING" else None))
        for name, kind in parsed["attributes"]
    )
    if sparse:
        values, rows, cols = parsed["data"]
        n = (max(rows) + 1) if rows else 0
        codes = np.zeros((n, len(attributes)))
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        for col in np.unique(cols):
            mask = cols == col
            cells = [values[i] for i in np.flatnonzero(mask)]
            codes[rows[mask], col] = nominal_codes(cells, attributes[col], where=str(path))
    else:
        data = parsed["data"]
        codes = np.empty((len(data), len(attributes)))
        for col, attribute in enumerate(attributes):
            codes[:, col] = nominal_codes([row[col] for row in data], attribute, where=str(path))
    if len(codes) == 0:
        raise ValueError(f"{path}: no data rows (the file holds only an ARFF header)")
    codes.setflags(write=False)
    return codes, attributes


def read_arff_codes(path: Path) -> tuple[np.ndarray, tuple[Attribute, ...]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ARFF file not found: {path}")
    return _read_arff_codes(str(path.resolve()), path.stat().st_mtime)


def _label_columns(attributes: tuple[Attribute, ...], label_names: list[str], path: Path) -> list[int]:
    by_name = {attribute.name: col for col, attribute in enumerate(attributes)}
    missing = [name for name in label_names if name not in by_name]
    if missing:
        hints = [f"{name!r} (did you mean {close[0]!r}?)" if (close := closest(name, by_name)) else repr(name)
                 for name in missing[:5]]
        raise ValueError(f"{path}: {len(missing)} of {len(label_names)} labels not found among its "
                         f"attributes: {', '.join(hints)}")
    return [by_name[name] for name in label_names]


def label_matrix(codes: np.ndarray, attributes: tuple[Attribute, ...], columns: list[int], path: Path) -> np.ndarray:
    """0/1 labels from label columns: nominal values must be '0'/'1' (or numeric 0/1)."""
    y = np.empty((codes.shape[0], len(columns)), dtype=np.int8)
    for j, col in enumerate(columns):
        attribute, cells = attributes[col], codes[:, col]
        if attribute.is_nominal:
            if not set(attribute.levels) <= {"0", "1"}:
                raise ValueError(f"{path}: label {attribute.name!r} has values {list(attribute.levels)}, "
                                 "which cannot be encoded as 0/1 (expected {0,1})")
            lookup = np.array([int(value) for value in attribute.levels] + [-1])
            cells = lookup[np.where(np.isnan(cells), len(attribute.levels), cells).astype(np.int64)]
        bad = ~np.isin(cells, (0, 1))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{path}: label {attribute.name!r} row {row} is {codes[row, col]!r} "
                             "(missing or not 0/1): cannot be encoded as a multilabel target")
        y[:, j] = cells
    return y


def read_multilabel(path: Path, *, label_names: list[str] | None = None,
                    n_labels: int | None = None) -> MultilabelTable:
    """Read one Mulan ARFF file; labels by name (``label_names``) or as the last ``n_labels`` columns."""
    path = Path(path)
    codes, attributes = read_arff_codes(path)
    if label_names is None:
        if n_labels is None or not 0 < n_labels < len(attributes):
            raise ValueError(f"{path}: n_labels={n_labels} must be between 1 and {len(attributes) - 1} "
                             f"(the file has {len(attributes)} attributes)")
        label_names = [attribute.name for attribute in attributes[-n_labels:]]
    columns = _label_columns(attributes, label_names, path)
    y = label_matrix(codes, attributes, columns, path)
    feature_cols = [col for col in range(len(attributes)) if col not in set(columns)]
    feature_attributes = [attributes[col] for col in feature_cols]
    x, feature_names = encode_features(codes[:, feature_cols], feature_attributes)
    return MultilabelTable(x, y, feature_names, list(label_names), [a.name for a in feature_attributes])
