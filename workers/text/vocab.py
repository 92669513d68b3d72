"""A fixed WordPiece vocabulary (`tokenizer.vocab`): bert-base-uncased's, as the tiny-LM authors used, or any other.

The paper's models read bert-base-uncased's 30,522-entry vocabulary ([PAD] 0, [UNK] 100, [CLS] 101,
[SEP] 102, [MASK] 103), not one learned on their corpus. That matters most for token overlap: a vocabulary
learned on the corpus holds nearly every token the task uses, while a fixed one shows how much of the task's
token stream the corpus actually covers.

`tokenizer.vocab` takes a vocab.txt (one token a line, id = line number - 1), a folder holding vocab.txt or
tokenizer.json (a WordPiece tokenizer; only its vocabulary is taken), or a name such as
`bert-base-uncased`, resolved as the folder `<data root>/tokenizers/<name>/` so that configs hold no paths.
It is read offline and always tokenized with bert-base-uncased's pipeline (workers.text.tokenizer.
wordpiece_tokenizer). A name in KNOWN_VOCABS must hold that vocabulary byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from workers.errors import DataError
from workers.text.wordpiece import SPECIAL_TOKENS

TOKENIZERS_DIR = "tokenizers"  # in the data root: one folder per named vocabulary
VOCAB_FILE, TOKENIZER_FILE = "vocab.txt", "tokenizer.json"
# vocabularies known by name: sha256 of their vocab.txt (the hub's google-bert/bert-base-uncased file),
# entries and special-token ids
KNOWN_VOCABS = {
    "bert-base-uncased": {"sha256": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
                          "entries": 30522,
                          "special_ids": {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}},
}


@dataclass(frozen=True)
class FixedVocab:
    """A resolved `tokenizer.vocab`: what the config said, the file read, its tokens in id order and digest."""

    name: str
    file: Path
    tokens: tuple[str, ...]
    sha256: str

    def describe(self) -> str:
        """The report's words: 'bert-base-uncased (fixed, 30,522 entries)'."""
        return f"{self.name} (fixed, {len(self.tokens):,} entries)"


def _where(value: str, data_root: Path | None) -> list[Path]:
    """Where `value` may lie: itself (a path), then `<data root>/tokenizers/<value>`."""
    places = [Path(value)]
    if data_root is not None and "/" not in value.strip("/") and not Path(value).is_absolute():
        places.append(Path(data_root) / TOKENIZERS_DIR / value)
    return places


def _vocab_file(value: str, data_root: Path | None) -> Path:
    for place in _where(value, data_root):
        if place.is_file():
            return place
        if place.is_dir():
            for name in (VOCAB_FILE, TOKENIZER_FILE):
                if (place / name).is_file():
                    return place / name
            raise DataError(f"tokenizer.vocab {value}: the folder {place} holds neither {VOCAB_FILE} nor {TOKENIZER_FILE}")
    looked = " and ".join(str(p) for p in _where(value, data_root))
    hint = "" if data_root is not None else " (no data root to look in: set COMMITTEE_DATA or data.root)"
    raise DataError(f"tokenizer.vocab {value}: no vocab.txt, tokenizer.json or folder of one at {looked}{hint}; "
                    f"a named vocabulary lies in <data root>/{TOKENIZERS_DIR}/<name>/ (`committee data pull` "
                    f"writes bert-base-uncased's)")


def _tokens_of_vocab_txt(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"tokenizer.vocab: {path} cannot be read as UTF-8 text: {exc}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line.rstrip("\r") for line in lines]


def _tokens_of_tokenizer_json(path: Path) -> list[str]:
    try:
        model = json.loads(path.read_text(encoding="utf-8"))["model"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"tokenizer.vocab: {path} is not a readable tokenizer.json ({exc})") from None
    if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        raise DataError(f"tokenizer.vocab: {path} holds a {model.get('type')} model; a fixed vocabulary must be WordPiece")
    by_id = {i: t for t, i in model["vocab"].items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise DataError(f"tokenizer.vocab: {path}: token ids are not 0..{len(by_id) - 1} without gaps")
    return [by_id[i] for i in range(len(by_id))]


def _check_tokens(tokens: list[str], value: str, path: Path) -> None:
    missing = [t for t in SPECIAL_TOKENS if t not in tokens]
    if missing:
        raise DataError(f"tokenizer.vocab {value}: {path} lacks the special tokens {', '.join(missing)}")
    seen: dict[str, int] = {}
    for line, token in enumerate(tokens, start=1):
        if not token:
            raise DataError(f"tokenizer.vocab {value}: {path} line {line} is empty")
        if token in seen:
            raise DataError(f"tokenizer.vocab {value}: {path} lists {token!r} twice (lines {seen[token]} and {line})")
        seen[token] = line


def resolve_vocab(value: str, data_root: Path | None) -> FixedVocab:
    """`tokenizer.vocab` as a FixedVocab; a DataError names the key, the value and the file at fault."""
    path = _vocab_file(value, data_root)
    tokens = _tokens_of_tokenizer_json(path) if path.name == TOKENIZER_FILE else _tokens_of_vocab_txt(path)
    _check_tokens(tokens, value, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    known = KNOWN_VOCABS.get(value)
    if known is not None and (path.name != VOCAB_FILE or sha != known["sha256"]):
        raise DataError(f"tokenizer.vocab {value}: {path} is not {value}'s vocab.txt (sha256 {sha[:16]}..., expected "
                        f"{known['sha256'][:16]}...); copy or pull it again (`committee data pull`)")
    return FixedVocab(name=value, file=path, tokens=tuple(tokens), sha256=sha)


def fixed_tokenizer(vocab: FixedVocab):
    """The `BertTokenizerFast` of a fixed vocabulary (bert-base-uncased's pipeline)."""
    from workers.text.tokenizer import wordpiece_tokenizer

    return wordpiece_tokenizer(list(vocab.tokens))
