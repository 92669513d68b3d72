"""Where a dataset lives and what its readable pieces are: the Hugging Face `datasets` ways of naming data.

A dataset is one of
  - local data files per split (`data_files: {train: a.csv, test: b.csv}`): csv, tsv, json (JSON Lines or one
    array of objects), jsonl or parquet, as `datasets.load_dataset("csv", data_files=...)` takes them; csv and
    tsv files without a header row are read with the column names the config gives (`Source.column_names`);
  - a folder of split files (`train.csv`, `test-00000-of-00002.parquet`, ...: the split is the file
    name up to its first '-' or '.'), the way `datasets.load_dataset(folder)` infers splits;
  - a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (`datasets.load_from_disk`);
  - a Hugging Face hub id (`datasets.load_dataset(id, config)`), read from the local cache when
    HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1;
  - for a pre-training corpus also text: a folder of `.txt` files (in path order), a WikiExtractor output
    folder (`AA/wiki_00`, ...: files without an extension, or `.bz2`), or one text file; how each file divides
    into documents is workers/data/text_documents.py's business.

`resolve_source` turns the config's words into a `Source`; `Source.parts(split)` lists the readable
pieces of a split (one per data file, or the whole split of a hub / save_to_disk dataset), whose columns
workers/data/readers.py reads (`read_columns`, checking what it reads). `Source.identity()` is what a
cache key needs to notice changed data (file sizes and times, or the hub id and its cache files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from workers.errors import DataError

DATA_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json"}
HEADERLESS_FORMATS = ("csv", "tsv")  # the formats `column_names` applies to
COMPRESSED_SUFFIX = ".bz2"  # text files may be bz2-compressed (WikiExtractor --compress)
FILE_HINT = "fix the file or export it again"
HUB_FETCH_HINT = ("fetch it once on a machine with internet (`python -c \"import datasets; "
                  "datasets.load_dataset('{hub_id}'{config_arg})\"`, which fills the cache in $HF_HOME, "
                  "~/.cache/huggingface by default), or unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE to download it")


@dataclass(frozen=True)
class Part:
    """One readable piece of a split: a data file, a `.txt` document, or a whole split of a hub or
    save_to_disk dataset (`fmt` "arrow"). `where` names it in messages; `hint` says how to fix it."""

    where: str
    fmt: str  # parquet | csv | tsv | json | text | arrow
    path: Path | None = None  # the local file (all but arrow)
    dataset_key: tuple | None = None  # ("hub", id, config) or ("disk", path): see `_loaded`
    split: str = ""
    hint: str = FILE_HINT
    column_names: tuple[str, ...] | None = None  # csv / tsv without a header row: its columns, in file order

    def identity(self) -> tuple:
        """What a parsed-file cache keys on: (path, mtime ns, size), or the dataset's cache files."""
        if self.path is not None:
            return file_identity(self.path, self.hint)
        return (self.dataset_key, self.split, *_cache_files_identity(split_dataset(self)))


@dataclass(frozen=True)
class Source:
    """A dataset's location. `kind`: files (data files per split), disk (save_to_disk), hub, text_folder (a folder
    of text files), text_file (one text file)."""

    kind: str
    name: str  # as the config names it (a path or a hub id): messages and reports use it
    split_files: tuple[tuple[str, tuple[Path, ...]], ...] = ()  # kind files: (split, files) pairs
    path: Path | None = None  # kind disk / text_folder
    config: str | None = None  # kind hub: the configuration name
    hint: str = FILE_HINT
    documents: tuple[Path, ...] = field(default=(), compare=False)  # kind text_folder / text_file: the text files
    column_names: tuple[str, ...] | None = None  # kind files: the columns of headerless csv / tsv files

    def describe(self) -> str:
        """A few words for reports: what the data is and where it lies."""
        if self.kind == "hub":
            return f"hub dataset {self.name}" + (f" ({self.config})" if self.config else "")
        if self.kind == "disk":
            return f"save_to_disk dataset {self.name}"
        if self.kind == "text_folder":
            txt = all(text_suffix(p) == ".txt" for p in self.documents)
            return f"folder {self.name} ({len(self.documents)} {'.txt ' if txt else 'text '}files)"
        if self.kind == "text_file":
            return f"text file {self.name}"
        return f"local files {self.name}"

    def splits(self) -> list[str]:
        if self.kind == "files":
            return [split for split, _ in self.split_files]
        if self.kind in TEXT_KINDS:
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
            return [Part(str(p), DATA_SUFFIXES[p.suffix.lower()], path=p, hint=self.hint,
                         column_names=self.column_names) for p in files]
        if self.kind in TEXT_KINDS:
            return [Part(str(p), "text", path=p, hint=self.hint) for p in self.documents]
        where = f"{self.describe()} split {split!r}"
        return [Part(where, "arrow", dataset_key=self._dataset_key(), split=split, hint=self.hint)]

    def identity(self) -> list:
        """File fingerprints (or hub id + cache files): a cache key built on it notices changed data."""
        if self.kind == "files":
            return [[split, [list(file_identity(p, self.hint)) for p in files]] for split, files in self.split_files]
        if self.kind in TEXT_KINDS:
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


TEXT_KINDS = ("text_folder", "text_file")


def text_suffix(path: Path) -> str:
    """A text file's suffix under its compression: `wiki_00.bz2` -> "", `a.txt.bz2` -> ".txt", `a.txt` -> ".txt"."""
    name = path.name[:-len(COMPRESSED_SUFFIX)] if path.name.lower().endswith(COMPRESSED_SUFFIX) else path.name
    return Path(name).suffix.lower()


def is_text_file(path: Path) -> bool:
    """A file read as text: `.txt`, or no extension at all (WikiExtractor's `wiki_00`), either one possibly `.bz2`."""
    return not path.name.startswith(".") and text_suffix(path) in (".txt", "")


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
            or Path(text).suffix.lower() in (*DATA_SUFFIXES, ".txt", COMPRESSED_SUFFIX))


def _txt_files_in(folder: Path) -> tuple[Path, ...]:
    """The `.txt` files below `folder`, in path order: one document each unless pretrain.corpus.documents says."""
    return tuple(sorted(folder.rglob("*.txt")))


def _extensionless_files_in(folder: Path) -> tuple[Path, ...]:
    """The files below `folder` without an extension (or with just .bz2), in path order, as WikiExtractor writes
    them (AA/wiki_00, AA/wiki_01, ..., AB/wiki_00); hidden files and folders are left out."""
    return tuple(sorted(p for p in folder.rglob("*") if p.is_file() and is_text_file(p) and text_suffix(p) == ""
                        and not any(part.startswith(".") for part in p.relative_to(folder).parts)))


def resolve_source(dataset: str, config: str | None, key: str, text_folder: bool = False) -> Source:
    """A `dataset` string as a Source: an existing local path (file, save_to_disk folder, folder of split
    files; with `text_folder` also a text file or a folder of them), else a hub id. `key` names the config key.

    A corpus folder is read as its `.txt` files when it has any, else as its data files named by split, else as
    its files without an extension (WikiExtractor's AA/wiki_00, ...; `.bz2` too)."""
    path = Path(dataset).expanduser()
    if path.is_file():
        if path.suffix.lower() in DATA_SUFFIXES:
            return files_source({"train": [path.resolve()]}, dataset)
        if text_folder and is_text_file(path):
            return Source("text_file", dataset, path=path.resolve(), documents=(path.resolve(),))
        reads = ", ".join(DATA_SUFFIXES) + (", .txt, a file without an extension, .bz2 of either" if text_folder else "")
        raise DataError(f"{key}: {dataset} is not a data file this reads ({reads})")
    if path.is_dir():
        if _is_saved_dataset(path):
            return Source("disk", dataset, path=path.resolve())
        if text_folder:
            documents = _txt_files_in(path.resolve())
            if documents:
                return Source("text_folder", dataset, path=path.resolve(), documents=documents)
        by_split = _split_files_in(path)
        if not by_split and text_folder:
            documents = _extensionless_files_in(path.resolve())
            if documents:
                return Source("text_folder", dataset, path=path.resolve(), documents=documents)
        if not by_split:
            holds = ("no .txt files (one document per file), no WikiExtractor output (AA/wiki_00, ...: files without "
                     "an extension, .bz2 too) and no" if text_folder else "no")
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


def split_dataset(part: Part):
    """The Dataset of an arrow part: one split of a hub or save_to_disk dataset (loaded once per process)."""
    return _loaded(part.dataset_key)[part.split]


def _cache_files_identity(dataset) -> tuple:
    return tuple(tuple(file_identity(Path(f["filename"]))) for f in dataset.cache_files)


def forget_loaded() -> None:
    """Drop the hub and save_to_disk datasets loaded in this process."""
    _datasets.clear()
