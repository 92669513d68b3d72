"""How a text file of a pre-training corpus divides into documents.

Text comes in the forms it is distributed in:
  - WikiExtractor output (the usual way to get Wikipedia text for BERT pre-training): files of `<doc id=...
    url=... title=...>` ... `</doc>` blocks, one article each, the article's title repeated as its first line;
    or, with `--json`, one JSON object a line (`{"id", "url", "title", "text"}`). Recognised by their first
    line (JSON lines only in files without an extension, as WikiExtractor names them: a `.txt` document may
    well open with a line of JSON), whatever `pretrain.corpus.documents` says. A document is the article's text without its title line
    (as the JSON form and the hub's Wikipedia `text` column have it); an article with no text (WikiExtractor
    writes some, e.g. for pages made only of templates) is skipped.
  - plain text, divided as `pretrain.corpus.documents` says: `per_file` (the whole file is one document),
    `per_line` (each non-empty line; one document a line, as in many line-per-document corpora) or `per_block`
    (blocks between blank lines).

`split_documents(where, text, per, text_column)` returns a file's documents in file order; a malformed
WikiExtractor file (a `<doc>` never closed, text outside the blocks, a JSON line that is not an object with
the text) raises `DataError` naming the file and line.
"""

from __future__ import annotations

import html
import json
import re

from workers.errors import DataError

DOCUMENTS = ("per_file", "per_line", "per_block")
_DOC_OPEN = re.compile(r"<doc(\s[^>]*)?>\s*$")
_DOC_TITLE = re.compile(r'\btitle="(.*)"\s*>\s*$')  # greedy: WikiExtractor writes titles unescaped ("a" b)
_DOC_CLOSE = "</doc>"
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


def text_form(text: str, json_lines: bool = True) -> str:
    """"wikiextractor" (<doc> blocks), "wikiextractor_json" (one JSON object a line; only with `json_lines`) or
    "plain"."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    if _DOC_OPEN.match(first.strip()):
        return "wikiextractor"
    if json_lines and first.lstrip().startswith("{"):
        try:
            return "wikiextractor_json" if isinstance(json.loads(first), dict) else "plain"
        except json.JSONDecodeError:
            return "plain"
    return "plain"


def split_documents(where: str, text: str, per: str, text_column: str = "text",
                    json_lines: bool = True) -> tuple[str, ...]:
    """The documents of one text file, in file order (see the module docstring); `json_lines`: whether the file
    may be WikiExtractor's --json output (a file without an extension)."""
    form = text_form(text, json_lines)
    if form == "wikiextractor":
        return doc_blocks(where, text)
    if form == "wikiextractor_json":
        return json_line_texts(where, text, text_column)
    if per == "per_file":
        return (text,)  # an empty file is an empty document: the caller names it
    if per == "per_line":
        return tuple(line for line in text.splitlines() if line.strip())
    if per == "per_block":
        return tuple(block.strip("\n") for block in _BLANK_LINES.split(text.replace("\r\n", "\n")) if block.strip())
    raise ValueError(f"documents={per!r} is not one of {', '.join(DOCUMENTS)}")


def doc_blocks(where: str, text: str) -> tuple[str, ...]:
    """The articles of a WikiExtractor file: the text of each <doc> block, its title line dropped; empty ones
    skipped."""
    documents = []
    body: list[str] | None = None  # the lines of the block being read
    title, opened_at = "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if body is None:
            if _DOC_OPEN.match(stripped):
                match = _DOC_TITLE.search(stripped)
                title, opened_at, body = html.unescape(match.group(1)) if match else "", number, []
            elif stripped:
                raise DataError(f"{where} line {number}: text outside a <doc ...> ... </doc> block of a "
                                f"WikiExtractor file ({_shown(stripped)}); fix the file or extract it again")
            continue
        if stripped == _DOC_CLOSE:
            document = _article(body, title)
            if document:
                documents.append(document)
            body = None
        elif _DOC_OPEN.match(stripped):
            raise DataError(f"{where} line {number}: a <doc> opens inside the <doc> of line {opened_at}, which is "
                            f"never closed by {_DOC_CLOSE}; the file is cut or damaged: extract it again")
        else:
            body.append(line)
    if body is not None:
        raise DataError(f"{where} line {opened_at}: <doc> is never closed by {_DOC_CLOSE} (the file ends first: cut "
                        f"short?); extract it again")
    return tuple(documents)


def _article(lines: list[str], title: str) -> str:
    """A <doc> block's text: its lines without the title line WikiExtractor repeats first, stripped of blank
    lines at either end."""
    while lines and not lines[0].strip():
        lines = lines[1:]
    if lines and title and html.unescape(lines[0].strip()) == title.strip():
        lines = lines[1:]
    return "\n".join(lines).strip("\n") if any(line.strip() for line in lines) else ""


def json_line_texts(where: str, text: str, text_column: str) -> tuple[str, ...]:
    """The texts of WikiExtractor's --json output: one JSON object a line, the text under `text_column`; empty
    texts skipped."""
    documents = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where} line {number} is not a JSON object ({exc.msg} at column {exc.colno}); a "
                            f"WikiExtractor --json file holds one object a line: fix the file or extract it again") from None
        if not isinstance(record, dict) or text_column not in record:
            has = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise DataError(f"{where} line {number}: no {text_column!r} field (has: {has}); set "
                            f"pretrain.corpus.text_column to the field holding the text")
        value = record[text_column]
        if value is not None and not isinstance(value, str):
            raise DataError(f"{where} line {number} field {text_column!r}: texts must be strings, found "
                            f"{type(value).__name__}")
        if value and value.strip():
            documents.append(value)
    return tuple(documents)


def _shown(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit - 3] + "...")
