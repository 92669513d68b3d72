"""How the columns of one readable piece of a dataset (a `workers.data.datasets.Part`) are read, per format:
parquet, csv and tsv (a header row first, or the column names the part carries), json (JSON Lines or one array
of objects), a text file (`.txt` or WikiExtractor's, bz2-compressed or not), or a split of a hub or save_to_disk
dataset (arrow).

`read_columns(part, ...)` reads the named columns of one piece as Python lists, checking what it reads:
a missing column names the columns that exist (and says when a csv's first row looks like data rather than a
header), a text that is not a string or not UTF-8 names its row and column, a truncated or corrupt file names
the file. `column_names(part)` lists the columns a piece has.
TSV is read as the IANA format defines it: fields separated by tabs, no quoting (a `"` is text), no tab or
newline inside a field.
"""

from __future__ import annotations

import bz2
import json
from pathlib import Path

from workers.data.datasets import FILE_HINT, Part, split_dataset
from workers.errors import DataError


def read_parquet(path: Path, columns: tuple[str, ...], hint: str = FILE_HINT):
    """The named columns of a parquet file; a truncated or corrupt file or a missing column is a DataError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{path} is missing column(s) {', '.join(missing)} (has: {', '.join(names)})")
        return pq.read_table(path, columns=list(columns))
    except (pa.ArrowException, OSError) as exc:  # ArrowInvalid for a lost footer, OSError for broken pages
        raise DataError(
            f"{path} is not a readable parquet file (truncated or corrupt?): {str(exc).rstrip('.')}; {hint}"
        ) from None


def _read_csv(part: Part, columns: tuple[str, ...], text_columns: tuple[str, ...]):
    """The named columns of a CSV or TSV file (a header row first, or `part.column_names` for a file without one);
    text columns are read as strings."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    path, names = part.path, part.column_names
    kind = part.fmt.upper()
    parse = (pcsv.ParseOptions(delimiter="\t", quote_char=False) if part.fmt == "tsv"
             else pcsv.ParseOptions(newlines_in_values=True))
    try:
        table = pcsv.read_csv(path, read_options=pcsv.ReadOptions(column_names=list(names) if names else None),
                              parse_options=parse,
                              convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in text_columns}))
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).rstrip(".")
        if names and "Expected" in reason and "columns, got" in reason:
            raise DataError(f"{path} is not read as task.column_names says: {reason.splitlines()[0]}; "
                            f"task.column_names lists {len(names)} ({', '.join(names)}): name every column of the "
                            f"file, in order") from None
        raise DataError(f"{path} is not a readable {kind} file: {reason}; {part.hint}") from None
    _check_columns(path, columns, table.column_names, header=None if names else kind)
    return table


def _looks_like_data(cell: str) -> bool:
    """Whether a header cell reads as a value rather than a column name: a number (a label such as "3"), or
    a sentence (longer than 40 characters, or five words or more)."""
    try:
        float(cell)
        return True
    except ValueError:
        return len(cell) > 40 or len(cell.split()) >= 5


def _check_columns(where, columns: tuple[str, ...], names: list[str], header: str | None = None) -> None:
    """Every column asked for is there; else name those that exist. `header`: "CSV" / "TSV" when the names came
    from the file's first row, which for a file distributed without a header row is its first example."""
    missing = [c for c in columns if c not in names]
    if missing:
        shown = ", ".join(n if len(n) <= 40 else n[:37] + "..." for n in names) or "none"
        message = f"{where} is missing column(s) {', '.join(missing)} (has: {shown})"
        if header and any(_looks_like_data(n) for n in names):
            message += (f"; its first row looks like data, not a header: if the {header} file has no header row, "
                        f"name its {len(names)} columns in file order with task.column_names (AG News as "
                        f"distributed: [label, title, description])")
        raise DataError(message)


def _decode(path: Path, raw: bytes, hint: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}: invalid UTF-8 at byte {exc.start} (line {line}; {exc.reason}: "
                        f"{raw[max(0, exc.start - 30):exc.start + 4]!r}); {hint}") from None


def _json_records(path: Path, hint: str) -> list:
    """The records of a JSON Lines file, or of a JSON file holding one array of objects."""
    try:
        text = _decode(path, path.read_bytes(), hint)
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc}") from None
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not readable JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
                            f"{hint}") from None
    else:
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {number} is not a JSON object: {exc.msg} at column {exc.colno}; "
                                f"{hint} (JSON Lines: one object per line)") from None
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{path} row {row}: expected a JSON object per record, found {type(record).__name__}")
    return records


def _read_json(path: Path, columns: tuple[str, ...], text_columns: tuple[str, ...], hint: str) -> dict[str, list]:
    records = _json_records(path, hint)
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    _check_columns(path, columns, list(names))
    out = {}
    for column in columns:
        values = [record.get(column) for record in records]
        if column in text_columns:
            for row, value in enumerate(values):
                if value is not None and not isinstance(value, str):
                    raise DataError(_not_text(path, row, column, value, f"JSON {type(value).__name__}", hint))
        out[column] = values
    return out


def _not_text(where, row: int, column: str, found, kind: str, hint: str) -> str:
    shown = repr(found) if len(repr(found)) <= 60 else repr(found)[:57] + "..."
    return (f"{where} row {row} column {column!r}: texts must be strings, found {type(found).__name__} "
            f"{shown} ({kind}); {hint}")


def _decode_utf8_cells(where, column: str, cells: list, hint: str) -> list[str | None]:
    """Binary cells decoded as UTF-8 (nulls stay None); the first invalid cell names its row and byte."""
    texts: list[str | None] = []
    for row, cell in enumerate(cells):
        if cell is None:
            texts.append(None)
            continue
        try:
            texts.append(cell.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{where} row {row} column {column!r}: invalid UTF-8 at byte {exc.start} of the cell "
                f"({exc.reason}: {cell[max(0, exc.start - 20):exc.start + 4]!r}); {hint}"
            ) from None
    return texts


def text_cells(where, table, column: str, hint: str = FILE_HINT) -> list[str | None]:
    """A text column's cells as Python strings, None for nulls.

    Binary columns (BYTE_ARRAY written without the UTF-8 annotation) are decoded as UTF-8; a string column
    whose bytes are not UTF-8 and a column of another type (numbers, lists) fail naming row and column.
    """
    import pyarrow as pa

    values = table.column(column)
    kind = values.type
    if str(kind) in ("string", "large_string", "string_view"):
        try:
            return values.to_pylist()
        except UnicodeDecodeError:  # the reader does not validate UTF-8: find the cell at fault
            return _decode_utf8_cells(where, column, values.cast(pa.large_binary()).to_pylist(), hint)
    if str(kind) in ("binary", "large_binary", "binary_view"):
        return _decode_utf8_cells(where, column, values.to_pylist(), hint)
    if values.null_count == len(values):
        return [None] * len(values)
    row = next(i for i, valid in enumerate(values.is_valid().to_pylist()) if valid)
    raise DataError(_not_text(where, row, column, values[row].as_py(), f"column type {kind}", hint))


def _arrow_split(part: Part, columns: tuple[str, ...]):
    dataset = split_dataset(part)
    _check_columns(part.where, columns, list(dataset.column_names))
    return dataset.select_columns(list(columns)).with_format("arrow")[:]


def read_columns(part: Part, text_columns: tuple[str, ...], other_columns: tuple[str, ...] = ()) -> dict[str, list]:
    """The named columns of one part as Python lists (texts checked to be strings or None, UTF-8 decoded).

    A `.txt` part is one document: {"text": [its text]}. Other values are left as found (the caller checks
    labels: integers or strings)."""
    columns = tuple(dict.fromkeys((*text_columns, *other_columns)))
    if part.fmt == "text":
        return {"text": [_decode(part.path, _text_bytes(part), part.hint)]}
    if part.fmt == "json":
        return _read_json(part.path, columns, text_columns, part.hint)
    if part.fmt == "parquet":
        table = read_parquet(part.path, columns, part.hint)
    elif part.fmt in ("csv", "tsv"):
        table = _read_csv(part, columns, text_columns)
    else:
        table = _arrow_split(part, columns)
    out = {c: text_cells(part.where, table, c, part.hint) for c in text_columns}
    for column in other_columns:
        if column not in out:
            out[column] = table.column(column).to_pylist()
    return out


def _text_bytes(part: Part) -> bytes:
    """A text file's bytes, decompressed when it is `.bz2` (WikiExtractor --compress)."""
    try:
        raw = part.path.read_bytes()
    except OSError as exc:
        raise DataError(f"{part.path} cannot be read: {exc}") from None
    if not part.path.name.lower().endswith(".bz2"):
        return raw
    try:
        return bz2.decompress(raw)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{part.path} is not a readable bz2 file (truncated or corrupt?): {exc}; {part.hint}") from None


def column_names(part: Part) -> list[str]:
    """The columns one part has (a .txt document has one: text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if part.fmt == "text":
        return ["text"]
    if part.fmt == "json":
        names: dict[str, None] = {}
        for record in _json_records(part.path, part.hint):
            names.update(dict.fromkeys(record))
        return list(names)
    if part.fmt == "parquet":
        try:
            return list(pq.read_schema(part.path).names)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{part.path} is not a readable parquet file (truncated or corrupt?): "
                            f"{str(exc).rstrip('.')}; {part.hint}") from None
    if part.fmt in ("csv", "tsv"):
        return list(_read_csv(part, (), ()).column_names)
    return list(split_dataset(part).column_names)
