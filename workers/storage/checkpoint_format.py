"""The checkpoint format, and the checks that refuse anything else before a byte of it is loaded.

A checkpoint is a directory `step-NNNNNNN/` holding exactly these files, and nothing else:
- `model.safetensors`, `config.json` (and `generation_config.json` if transformers writes one):
  `save_pretrained` output;
- `optimizer.safetensors`: the optimizer's per-parameter tensors, named `state.<param index>.<name>`
  (e.g. `state.3.exp_avg`); only when the saved state has an optimizer;
- `state.json`: everything else: `format`, `step`, the caller's counters, the optimizer's
  `param_groups` (and any non-tensor per-parameter value) and the scheduler's state dict;
- `COMPLETE`: on a URI only, the marker of a finished upload.
Nothing is ever unpickled. `check_step_dir` holds a directory to this format reading nothing but JSON and
safetensors headers: a file it does not expect (a `state.pt` of an older version, a planted `*.bin` or
`*.pkl`), a header that does not parse or whose offsets do not fit the file, or a malformed state.json is
refused with a `CheckpointError` that says what to delete to start over.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from workers.errors import CheckpointError
from workers.storage.files import entries, file_size, join, parent, read_bytes, read_range

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
COMPLETE = "COMPLETE"  # marker of a finished upload (URIs only)
CHECKPOINT_FILES = frozenset({MODEL_FILE, "config.json", "generation_config.json", OPTIMIZER_FILE, STATE_FILE,
                              COMPLETE})
REQUIRED_FILES = (MODEL_FILE, "config.json", STATE_FILE)
STATE_FORMAT = 1  # version of the state.json + optimizer.safetensors layout
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")

OPTIMIZER_TENSOR = re.compile(r"state\.(\d+)\.(.+)")  # optimizer.safetensors' tensor names
_STEP_DIR = re.compile(r"step-(\d+)")
_MAX_SAFETENSORS_HEADER_BYTES = 100 * 2**20  # the limit safetensors itself puts on a header


def refusal(step_dir, problem: str) -> CheckpointError:
    """The error refusing checkpoint `step_dir` for `problem`, saying what a checkpoint may hold and what
    to delete to start over."""
    return CheckpointError(
        f"refusing checkpoint {step_dir}: {problem}; nothing was loaded from it. A checkpoint holds only "
        f"{', '.join(sorted(CHECKPOINT_FILES))}, read with safetensors and json (pickled files such as "
        f"state.pt, *.bin or *.pkl are never loaded: unpickling can run code). To restart this member's "
        f"pre-training from scratch, delete {parent(step_dir)}")


def _unexpected_file_problem(name: str) -> str:
    if name.lower().endswith(PICKLE_SUFFIXES):
        return f"it holds {name!r}, a pickle file (an older checkpoint format, or planted)"
    return f"it holds an unexpected file {name!r}"


def _safetensors_names(path, step_dir) -> list[str]:
    """The tensor names in the header of the safetensors file `path`, after checking that the header
    parses and its offsets fit the file; reads the header only."""
    name = Path(str(path).partition("?")[0]).name
    size = file_size(path)
    if size < 8:
        raise refusal(step_dir, f"{name} is too short for a safetensors file ({size} bytes)")
    header_bytes = int.from_bytes(read_range(path, 0, 8), "little")
    if header_bytes > min(size - 8, _MAX_SAFETENSORS_HEADER_BYTES):
        raise refusal(step_dir, f"{name} is not a safetensors file (header length {header_bytes} in "
                                f"{size} bytes)")
    try:
        header = json.loads(read_range(path, 8, header_bytes))
    except ValueError as exc:
        raise refusal(step_dir, f"{name} has a safetensors header that is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise refusal(step_dir, f"{name} has a safetensors header that is not a JSON object")
    data_bytes = size - 8 - header_bytes
    names = []
    for tensor, entry in header.items():
        if tensor == "__metadata__":
            continue
        if not _is_tensor_entry(entry, data_bytes):
            raise refusal(step_dir, f"{name} has a malformed header entry for tensor {tensor!r}")
        names.append(tensor)
    return names


def _is_tensor_entry(entry, data_bytes: int) -> bool:
    """A safetensors header entry: {"dtype": str, "shape": [int...], "data_offsets": [begin, end]}."""
    if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
        return False
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return False
    return (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_bytes)


def _parse_state(raw: bytes, step_dir, has_optimizer_file: bool, required_keys) -> dict:
    """state.json's object, checked: format, step (matching the directory's name), optimizer section."""
    try:
        record = json.loads(raw)
    except ValueError as exc:
        raise refusal(step_dir, f"{STATE_FILE} is not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise refusal(step_dir, f"{STATE_FILE} is not a JSON object")
    if record.get("format") != STATE_FORMAT:
        raise refusal(step_dir, f"{STATE_FILE} has format {record.get('format')!r}, expected {STATE_FORMAT}")
    step = record.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise refusal(step_dir, f"{STATE_FILE} has no step (a whole number >= 0)")
    named = _STEP_DIR.fullmatch(Path(str(step_dir).partition("?")[0]).name)
    if named and int(named.group(1)) != step:
        raise refusal(step_dir, f"{STATE_FILE} says step {step}, the directory's name another")
    missing = [key for key in required_keys if key not in record]
    if missing:
        raise refusal(step_dir, f"{STATE_FILE} lacks {', '.join(map(repr, missing))}")
    if ("optimizer" in record) != has_optimizer_file:
        raise refusal(step_dir, f"{STATE_FILE} and {OPTIMIZER_FILE} disagree on whether there is an "
                                f"optimizer state")
    if "optimizer" in record:
        _check_optimizer_section(record["optimizer"], step_dir)
    return record


def _check_optimizer_section(section, step_dir) -> None:
    groups = section.get("param_groups") if isinstance(section, dict) else None
    if (not isinstance(groups, list) or not isinstance(section.get("scalars"), dict)
            or not all(isinstance(g, dict) and isinstance(g.get("params"), list)
                       and all(isinstance(p, int) for p in g["params"]) for g in groups)):
        raise refusal(step_dir, f"{STATE_FILE}'s optimizer section is malformed (param_groups with "
                                f"params, and scalars, expected)")


def _check_optimizer_tensors(names: list[str], record: dict, step_dir) -> None:
    """Every tensor of optimizer.safetensors is `state.<index>.<name>` for a parameter index in a group."""
    indices = {p for group in record["optimizer"]["param_groups"] for p in group["params"]}
    for name in names:
        match = OPTIMIZER_TENSOR.fullmatch(name)
        if match is None or int(match.group(1)) not in indices:
            raise refusal(step_dir, f"{OPTIMIZER_FILE} holds tensor {name!r}, not state.<parameter index>."
                                    f"<name> of a parameter in the optimizer's groups")


def check_step_dir(step_dir, required_keys=()) -> dict:
    """Check one checkpoint directory (file names, safetensors headers, state.json) and return its
    parsed state.json; raises CheckpointError, having read nothing but JSON and headers."""
    files, others = entries(step_dir)
    if others:
        raise refusal(step_dir, f"it holds {others[0]!r}, which is not a regular file")
    unexpected = [name for name in files if name not in CHECKPOINT_FILES]
    if unexpected:
        raise refusal(step_dir, _unexpected_file_problem(unexpected[0]))
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise refusal(step_dir, f"{', '.join(missing)} missing")
    _safetensors_names(join(step_dir, MODEL_FILE), step_dir)
    has_optimizer = OPTIMIZER_FILE in files
    optimizer_names = _safetensors_names(join(step_dir, OPTIMIZER_FILE), step_dir) if has_optimizer else []
    record = _parse_state(read_bytes(join(step_dir, STATE_FILE)), step_dir, has_optimizer, required_keys)
    if has_optimizer:
        _check_optimizer_tensors(optimizer_names, record, step_dir)
    return record
