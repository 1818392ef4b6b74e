"""Attribute table -> numeric feature matrix, shared by the ARFF and XARFF readers.

Cells arrive as *codes*: a float for numeric attributes, the index into the declared values
for nominal ones, NaN for missing (``?``). Encoding rules:

* numeric: as is;
* nominal with two values: one 0/1 column, 1 = the second declared value (for ``{0,1}``, the value 1);
* nominal with three or more values: one-hot, one column ``name=value`` per declared value;
  a missing cell makes the whole group NaN (rejected later as a non-finite feature);
* identifier-like columns are dropped: ARFF ``string`` attributes, and numeric attributes named
  ``id``, ``*_id``, ``identifier``, ``instance(_id)`` or ``row(_id)`` (case-insensitive) whose
  values are all distinct — they index rows and carry no signal. The distinctness test matters:
  delicious has bag-of-words features ``form_id``/``video_id`` and bibtex one called ``instance``,
  all binary, which are kept (none of the bundled benchmark files has a real identifier column).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_IDENTIFIER_NAME = re.compile(r"^(id|.*[_\- ]id|identifier|instance(_?id)?|row(_?id)?)$", re.IGNORECASE)


@dataclass(frozen=True)
class Attribute:
    """An ARFF attribute: ``values`` is None for numeric, the declared list for nominal, () for string."""

    name: str
    values: tuple[str, ...] | None

    @property
    def levels(self) -> tuple[str, ...]:
        """The declared nominal values (empty for numeric and string attributes)."""
        return self.values or ()

    @property
    def is_nominal(self) -> bool:
        return self.values is not None and len(self.values) > 0

    @property
    def is_string(self) -> bool:
        return self.values is not None and len(self.values) == 0


def unescape_name(name: str) -> str:
    """Drop ARFF backslash escapes (``'Swainson\\'s Thrush'`` -> ``Swainson's Thrush``) and outer whitespace."""
    return re.sub(r"\\(.)", r"\1", name).strip()


def is_identifier(attribute: Attribute, codes: np.ndarray) -> bool:
    """String attributes, and numeric id-named columns whose values are all distinct (see module doc)."""
    if attribute.is_string:
        return True
    named_like_id = attribute.values is None and bool(_IDENTIFIER_NAME.match(attribute.name))
    return named_like_id and len(codes) > 1 and len(np.unique(codes)) == len(codes)


def encode_features(codes: np.ndarray, attributes: list[Attribute]) -> tuple[np.ndarray, list[str]]:
    """Encode the columns of ``codes`` (n, len(attributes)) as described in the module docstring."""
    columns: list[np.ndarray] = []
    names: list[str] = []
    for col, attribute in enumerate(attributes):
        values = codes[:, col]
        if is_identifier(attribute, values):
            continue
        if not attribute.is_nominal:
            columns.append(values)
            names.append(attribute.name)
        elif len(attribute.levels) == 2:
            columns.append(values)
            names.append(attribute.name)
        else:
            missing = np.isnan(values)
            onehot = (values[:, None] == np.arange(len(attribute.levels))[None, :]).astype(np.float64)
            onehot[missing] = np.nan
            columns.extend(onehot.T)
            names.extend(f"{attribute.name}={value}" for value in attribute.levels)
    n = codes.shape[0]
    x = np.stack(columns, axis=1) if columns else np.zeros((n, 0))
    return x, names


def nominal_codes(raw: list, attribute: Attribute, *, where: str) -> np.ndarray:
    """Map a column of raw cells (str / float / None) to codes; unknown nominal values raise ValueError."""
    if attribute.is_nominal:
        index = {value: i for i, value in enumerate(attribute.levels)}
        out = np.empty(len(raw))
        for row, cell in enumerate(raw):
            if cell is None:
                out[row] = np.nan
            elif cell in index:
                out[row] = index[cell]
            else:
                raise ValueError(f"{where}: value {cell!r} of attribute {attribute.name!r} (row {row}) "
                                 f"is not one of its declared values {list(attribute.levels)[:10]}")
        return out
    if attribute.is_string:
        return np.zeros(len(raw))
    try:
        return np.array([np.nan if cell is None else float(cell) for cell in raw], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: numeric attribute {attribute.name!r} has a value that is not a number "
                         f"({error})") from None
