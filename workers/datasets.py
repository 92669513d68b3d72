"""Where a dataset lives and how its columns are read: the Hugging Face `datasets` ways of naming data.

A dataset is one of
  - local data files per split (`data_files: {train: a.csv, test: b.csv}`): csv, json (JSON Lines or one
    array of objects), jsonl or parquet, as `datasets.load_dataset("csv", data_files=...)` takes them;
  - a folder of split files (`train.csv`, `test-00000-of-00002.parquet`, ...: the split is the file
    name up to its first '-' or '.'), the way `datasets.load_dataset(folder)` infers splits;
  - a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (`datasets.load_from_disk`);
  - a Hugging Face hub id (`datasets.load_dataset(id, config)`), read from the local cache when
    HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1;
  - for a pre-training corpus also a folder of `.txt` files, one document per file (in file-name order).

`resolve_source` turns the config's words into a `Source`; `Source.parts(split)` lists the readable
pieces of a split (one per data file, or the whole split of a hub / save_to_disk dataset) and
`read_columns(part, ...)` reads the named columns of one piece as Python lists, checking what it reads:
a missing column names the columns that exist, a text that is not a string or not UTF-8 names its row
and column, a truncated or corrupt file names the file. `Source.identity()` is what a cache key needs
to notice changed data (file sizes and times, or the hub id and its cache files).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from workers.errors import DataError

DATA_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}
FILE_HINT = "fix the file or export it again"
HUB_FETCH_HINT = ("fetch it once on a machine with internet (`python -c \"import datasets; "
                  "datasets.load_dataset('{hub_id}'{config_arg})\"`, which fills the cache in $HF_HOME, "
                  "~/.cache/huggingface by default), or unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE to download it")


@dataclass(frozen=True)
class Part:
    """One readable piece of a split: a data file, a `.txt` document, or a whole split of a hub or
    save_to_disk dataset (`fmt` "arrow"). `where` names it in messages; `hint` says how to fix it."""

    where: str
    fmt: str  # parquet | csv | json | text | arrow
    path: Path | None = None  # the local file (all but arrow)
    dataset_key: tuple | None = None  # ("hub", id, config) or ("disk", path): see `_loaded`
    split: str = ""
    hint: str = FILE_HINT

    def identity(self) -> tuple:
        """What a parsed-file cache keys on: (path, mtime ns, size), or the dataset's cache files."""
        if self.path is not None:
            return file_identity(self.path, self.hint)
        return (self.dataset_key, self.split, *_cache_files_identity(_split_dataset(self)))


@dataclass(frozen=True)
class Source:
    """A dataset's location. `kind`: files (data files per split), disk (save_to_disk), hub, text_folder."""

    kind: str
    name: str  # as the config names it (a path or a hub id): messages and reports use it
    split_files: tuple[tuple[str, tuple[Path, ...]], ...] = ()  # kind files: (split, files) pairs
    path: Path | None = None  # kind disk / text_folder
    config: str | None = None  # kind hub: the configuration name
    hint: str = FILE_HINT
    documents: tuple[Path, ...] = field(default=(), compare=False)  # kind text_folder: the .txt files

    def describe(self) -> str:
        """A few words for reports: what the data is and where it lies."""
        if self.kind == "hub":
            return f"hub dataset {self.name}" + (f" ({self.config})" if self.config else "")
        if self.kind == "disk":
            return f"save_to_disk dataset {self.name}"
        if self.kind == "text_folder":
            return f"folder {self.name} ({len(self.documents)} .txt files)"
        return f"local files {self.name}"

    def splits(self) -> list[str]:
        if self.kind == "files":
            return [split for split, _ in self.split_files]
        if self.kind == "text_folder":
            return ["train"]
        return list(_loaded(self._dataset_key()).keys())

    def _dataset_key(self) -> tuple:
        return ("hub", self.name, self.config) if self.kind == "hub" else ("disk", str(self.path))

    def parts(self, split: str, key: str) -> list[Part]:
        """The readable pieces of `split`; `key` is the config key that named the split (for the error)."""
        if split not in self.splits():
            raise DataError(f"{key} is {split!r}, but {self.describe()} has no such split (it has: "
                            f"{', '.join(self.splits()) or 'none'}); set {key} to one of them")
        if self.kind == "files":
            files = dict(self.split_files)[split]
            return [Part(str(p), DATA_SUFFIXES[p.suffix.lower()], path=p, hint=self.hint) for p in files]
        if self.kind == "text_folder":
            return [Part(str(p), "text", path=p, hint=self.hint) for p in self.documents]
        where = f"{self.describe()} split {split!r}"
        return [Part(where, "arrow", dataset_key=self._dataset_key(), split=split, hint=self.hint)]

    def identity(self) -> list:
        """File fingerprints (or hub id + cache files): a cache key built on it notices changed data."""
        if self.kind == "files":
            return [[split, [list(file_identity(p, self.hint)) for p in files]] for split, files in self.split_files]
        if self.kind == "text_folder":
            return [str(self.path), [list(file_identity(p, self.hint)) for p in self.documents]]
        dataset = _loaded(self._dataset_key())
        return [self.kind, self.name, self.config,
                {split: list(_cache_files_identity(dataset[split])) for split in dataset.keys()}]

    def class_names(self, split: str, column: str) -> tuple[str, ...] | None:
        """The names of a hub or save_to_disk dataset's ClassLabel column, else None."""
        if self.kind not in ("hub", "disk"):
            return None
        feature = _loaded(self._dataset_key())[split].features.get(column)
        names = getattr(feature, "names", None)
        return tuple(names) if names else None


def file_identity(path: Path, hint: str = FILE_HINT) -> tuple[str, int, int]:
    """(resolved path, mtime in ns, size in bytes): a file rewritten in place gets a new identity."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise DataError(f"{path} cannot be read: {exc}; {hint}") from None
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


# ----------------------------------------------------------------------------------------------
# Resolving the config's words


def files_source(split_files: dict[str, list[Path]], name: str, hint: str = FILE_HINT) -> Source:
    """Local data files per split (paths already checked to exist)."""
    return Source("files", name, tuple((split, tuple(files)) for split, files in split_files.items()), hint=hint)


def _data_file(path_text: str, key: str) -> Path:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise DataError(f"{key}: {path_text} is not a file (relative paths start at the working directory "
                        f"{Path.cwd()})")
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise DataError(f"{key}: {path_text} is not a data file this reads (it reads "
                        f"{', '.join(DATA_SUFFIXES)} files)")
    return path.resolve()


def data_files_source(data_files: dict[str, str | list[str]], key: str) -> Source:
    """`{split: file or [files]}` as `datasets.load_dataset(fmt, data_files=...)` takes it."""
    split_files = {}
    for split, files in data_files.items():
        listed = [files] if isinstance(files, str) else list(files)
        if not listed:
            raise DataError(f"{key}.{split} lists no files")
        split_files[split] = [_data_file(f, f"{key}.{split}") for f in listed]
    folders = sorted({str(Path(f).parent) for fs in data_files.values() for f in ([fs] if isinstance(fs, str) else fs)})
    return files_source(split_files, ", ".join(folders))


def _split_of(path: Path) -> str:
    """`train.csv` -> train, `test-00000-of-00002.parquet` -> test: the name up to its first '-' or '.'."""
    return path.name.split(".", 1)[0].split("-", 1)[0]


def _split_files_in(folder: Path) -> dict[str, list[Path]]:
    """Data files of a folder (or of its `data/` subfolder, as hub repositories keep them) by split."""
    for where in (folder, folder / "data"):
        files = sorted(p for p in where.glob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
        if files:
            by_split: dict[str, list[Path]] = {}
            for path in files:
                by_split.setdefault(_split_of(path), []).append(path.resolve())
            return by_split
    return {}


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _looks_like_path(text: str) -> bool:
    return (text.startswith(("/", "./", "../", "~")) or text.count("/") > 1
            or Path(text).suffix.lower() in (*DATA_SUFFIXES, ".txt"))


def resolve_source(dataset: str, config: str | None, key: str, text_folder: bool = False) -> Source:
    """A `dataset` string as a Source: an existing local path (file, save_to_disk folder, folder of split
    files, or with `text_folder` a folder of .txt files), else a hub id. `key` names the config key."""
    path = Path(dataset).expanduser()
    if path.is_file():
        if path.suffix.lower() not in DATA_SUFFIXES:
            raise DataError(f"{key}: {dataset} is not a data file this reads ({', '.join(DATA_SUFFIXES)})")
        return files_source({"train": [path.resolve()]}, dataset)
    if path.is_dir():
        if _is_saved_dataset(path):
            return Source("disk", dataset, path=path.resolve())
        if text_folder:
            documents = tuple(sorted(path.resolve().rglob("*.txt")))
            if documents:
                return Source("text_folder", dataset, path=path.resolve(), documents=documents)
        by_split = _split_files_in(path)
        if not by_split:
            holds = "no .txt files (one document per file) and no" if text_folder else "no"
            raise DataError(f"{key}: the folder {dataset} holds {holds} data files ({', '.join(DATA_SUFFIXES)} "
                            f"named by split, e.g. train.csv) and is not a save_to_disk dataset; put your data "
                            f"there or point {key} at the right folder")
        return files_source(by_split, dataset)
    if _looks_like_path(dataset):
        raise DataError(f"{key}: {dataset} does not exist (relative paths start at the working directory "
                        f"{Path.cwd()}); a hub id looks like owner/name")
    return Source("hub", dataset, config=config)


# ----------------------------------------------------------------------------------------------
# hub and save_to_disk datasets: loaded once per process

_datasets: dict[tuple, object] = {}


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _load_hub(hub_id: str, config: str | None):
    import datasets

    config_arg = f", '{config}'" if config else ""
    try:
        loaded = datasets.load_dataset(hub_id, config)
    except Exception as exc:  # the hub, the cache and the builders raise many types; each means "not loadable"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if _offline():
            raise DataError(f"hub dataset {hub_id}{' (' + config + ')' if config else ''} is not in the local "
                            f"cache and HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set ({reason}); "
                            + HUB_FETCH_HINT.format(hub_id=hub_id, config_arg=config_arg)) from None
        raise DataError(f"could not load hub dataset {hub_id}{' (' + config + ')' if config else ''}: {reason}; "
                        f"check the id (and the configuration name), or the network") from None
    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})


def _load_disk(path: str):
    import datasets

    try:
        loaded = datasets.load_from_disk(path)
    except Exception as exc:  # a damaged save_to_disk folder: say which
        raise DataError(f"{path} is not a readable save_to_disk dataset: {exc}; save it again") from None
    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})


def _loaded(dataset_key: tuple):
    """The DatasetDict of a hub id or a save_to_disk folder (a single Dataset is its split 'train')."""
    if dataset_key not in _datasets:
        kind = dataset_key[0]
        _datasets[dataset_key] = _load_hub(*dataset_key[1:]) if kind == "hub" else _load_disk(dataset_key[1])
    return _datasets[dataset_key]


def _split_dataset(part: Part):
    return _loaded(part.dataset_key)[part.split]


def _cache_files_identity(dataset) -> tuple:
    return tuple(tuple(file_identity(Path(f["filename"]))) for f in dataset.cache_files)


def forget_loaded() -> None:
    """Drop the hub and save_to_disk datasets loaded in this process."""
    _datasets.clear()


# ----------------------------------------------------------------------------------------------
# Reading columns


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


def _read_csv(path: Path, columns: tuple[str, ...], text_columns: tuple[str, ...], hint: str):
    """The named columns of a CSV file (header row first); text columns are read as strings."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    try:
        table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(newlines_in_values=True),
                              convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in text_columns}))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path} is not a readable CSV file: {str(exc).rstrip('.')}; {hint}") from None
    _check_columns(path, columns, table.column_names)
    return table


def _check_columns(where, columns: tuple[str, ...], names: list[str]) -> None:
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{where} is missing column(s) {', '.join(missing)} (has: {', '.join(names) or 'none'})")


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
    dataset = _split_dataset(part)
    _check_columns(part.where, columns, list(dataset.column_names))
    return dataset.select_columns(list(columns)).with_format("arrow")[:]


def read_columns(part: Part, text_columns: tuple[str, ...], other_columns: tuple[str, ...] = ()) -> dict[str, list]:
    """The named columns of one part as Python lists (texts checked to be strings or None, UTF-8 decoded).

    A `.txt` part is one document: {"text": [its text]}. Other values are left as found (the caller checks
    labels: integers or strings)."""
    columns = tuple(dict.fromkeys((*text_columns, *other_columns)))
    if part.fmt == "text":
        try:
            raw = part.path.read_bytes()
        except OSError as exc:
            raise DataError(f"{part.path} cannot be read: {exc}") from None
        return {"text": [_decode(part.path, raw, part.hint)]}
    if part.fmt == "json":
        return _read_json(part.path, columns, text_columns, part.hint)
    if part.fmt == "parquet":
        table = read_parquet(part.path, columns, part.hint)
    elif part.fmt == "csv":
        table = _read_csv(part.path, columns, text_columns, part.hint)
    else:
        table = _arrow_split(part, columns)
    out = {c: text_cells(part.where, table, c, part.hint) for c in text_columns}
    for column in other_columns:
        if column not in out:
            out[column] = table.column(column).to_pylist()
    return out


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
    if part.fmt == "csv":
        return list(_read_csv(part.path, (), (), part.hint).column_names)
    return list(_split_dataset(part).column_names)
