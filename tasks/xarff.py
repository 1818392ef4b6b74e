"""Reader for label-ranking XARFF files (Cheng, Hühn & Hüllermeier 2009) and their headerless CSV form.

Format: ARFF header whose last attribute is ``@attribute L RANKING {L1,...,Lk}``; data rows are
comma(+tab)-separated features followed by an order string, best label first: ``L2>L1>L3``
means L2 is ranked first. Standard ARFF readers reject the RANKING type, hence this reader.
The order string is turned into positions: ``ranks[i, j]`` = position of label j (0 = best).
Ties (``|``), partial rankings and missing rankings (``?``) cannot be encoded and raise.
Nominal features (sushi's ``26:Osaka`` values) are encoded by ``tasks.features``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.features import Attribute, encode_features, nominal_codes, unescape_name

_ATTRIBUTE = re.compile(r"^@attribute\s+('(?:[^'\\]|\\.)*'|\"[^\"]*\"|\S+)\s+(.+?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class RankingTable:
    x: np.ndarray  # float64 (n, d) encoded features
    ranks: np.ndarray  # int64 (n, k) positions, 0 = best
    feature_names: list[str]
    label_names: list[str]
    source_features: list[str]


def _braced(spec: str, where: str) -> tuple[str, ...]:
    if not (spec.startswith("{") and spec.endswith("}")):
        raise ValueError(f"{where}: expected a {{...}} value list, got {spec!r}")
    return tuple(unescape_name(value.strip().strip("'\"")) for value in spec[1:-1].split(","))


def parse_header(lines: list[str], where: str) -> tuple[list[Attribute], tuple[str, ...]]:
    """Feature attributes and the ranking's label set from XARFF header lines."""
    attributes: list[Attribute] = []
    labels: tuple[str, ...] | None = None
    for line in lines:
        match = _ATTRIBUTE.match(line.strip())
        if not match:
            continue
        name, spec = unescape_name(match.group(1).strip("'\"")), match.group(2).strip()
        head = spec.split(None, 1)[0].upper()
        if head == "RANKING":
            labels = _braced(spec.split(None, 1)[1].strip(), where)
        elif head in ("NUMERIC", "REAL", "INTEGER"):
            attributes.append(Attribute(name, None))
        elif head == "STRING":
            attributes.append(Attribute(name, ()))
        else:
            attributes.append(Attribute(name, _braced(spec, where)))
    if labels is None:
        raise ValueError(f"{where}: no '@attribute <name> RANKING {{...}}' line; not a label-ranking XARFF file")
    return attributes, labels


def order_to_ranks(order: str, label_index: dict[str, int], *, where: str) -> np.ndarray:
    """``'L2>L1>L3'`` -> positions ``[1, 0, 2]`` (label j's place in the order, 0 = best)."""
    if "|" in order or order.strip() == "?":
        raise ValueError(f"{where}: ranking {order!r} has ties or is missing; only total orders can be encoded")
    names = [name.strip() for name in order.split(">")]
    unknown = [name for name in names if name not in label_index]
    if unknown or len(names) != len(label_index) or len(set(names)) != len(names):
        raise ValueError(f"{where}: ranking {order!r} is not an order of all labels {list(label_index)}"
                         + (f" (unknown: {unknown})" if unknown else ""))
    ranks = np.empty(len(names), dtype=np.int64)
    ranks[[label_index[name] for name in names]] = np.arange(len(names))
    return ranks


def parse_rows(lines: list[str], attributes: list[Attribute], labels: tuple[str, ...], where: str) -> RankingTable:
    """Data rows -> features (encoded) and ranks."""
    rows = [line for line in (raw.strip() for raw in lines) if line and not line.startswith("%")]
    label_index = {name: j for j, name in enumerate(labels)}
    cells: list[list[str | None]] = []
    ranks = np.empty((len(rows), len(labels)), dtype=np.int64)
    for i, row in enumerate(rows):
        fields = [field.strip().strip("'\"") for field in row.split(",")]
        if len(fields) != len(attributes) + 1:
            raise ValueError(f"{where}: data row {i} has {len(fields)} fields, expected "
                             f"{len(attributes)} features + 1 ranking")
        cells.append([None if field == "?" else field for field in fields[:-1]])
        ranks[i] = order_to_ranks(fields[-1], label_index, where=f"{where} data row {i}")
    codes = np.empty((len(rows), len(attributes)))
    for col, attribute in enumerate(attributes):
        codes[:, col] = nominal_codes([row[col] for row in cells], attribute, where=where)
    x, names = encode_features(codes, attributes)
    return RankingTable(x, ranks, names, list(labels), [a.name for a in attributes])


@functools.lru_cache(maxsize=32)
def _read_xarff(path_str: str, mtime: float) -> RankingTable:
    lines = Path(path_str).read_text(encoding="utf-8", errors="replace").splitlines()
    if not any(line.strip() for line in lines):
        raise ValueError(f"{path_str}: empty file; not an XARFF file")
    data_at = next((i for i, line in enumerate(lines) if line.strip().lower().startswith("@data")), None)
    if data_at is None:
        raise ValueError(f"{path_str}: no @data line; not an XARFF file")
    attributes, labels = parse_header(lines[:data_at], path_str)
    return _non_empty(parse_rows(lines[data_at + 1:], attributes, labels, path_str), path_str, "an XARFF header")


def _non_empty(table: RankingTable, path_str: str, what: str) -> RankingTable:
    if len(table.ranks) == 0:
        raise ValueError(f"{path_str}: no data rows (the file holds only {what})")
    return table


@functools.lru_cache(maxsize=8)
def _read_headerless(path_str: str, mtime: float, n_features: int, labels: tuple[str, ...]) -> RankingTable:
    attributes = [Attribute(f"A{i + 1}", None) for i in range(n_features)]
    lines = Path(path_str).read_text(encoding="utf-8", errors="replace").splitlines()
    return _non_empty(parse_rows(lines, attributes, labels, path_str), path_str, "blank lines")


def _existing(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label-ranking file not found: {path}")
    return path


def read_xarff(path: Path) -> RankingTable:
    """Read an XARFF file (cached in-process per path and modification time)."""
    path = _existing(path)
    return _read_xarff(str(path.resolve()), path.stat().st_mtime)


def read_headerless_ranking(path: Path, n_features: int, labels: tuple[str, ...]) -> RankingTable:
    """Read the data section of an XARFF file saved without header (``fried_dense_noheader.csv``):
    ``n_features`` numeric columns A1..An, then an order string over ``labels``."""
    path = _existing(path)
    return _read_headerless(str(path.resolve()), path.stat().st_mtime, n_features, tuple(labels))
