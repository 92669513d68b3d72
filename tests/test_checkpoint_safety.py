"""Checkpoints are read without pickle, refuse files they should not hold, and report a full disk.

- the state (optimizer, scheduler, counters) round-trips through optimizer.safetensors + state.json;
- a planted pickle (a `state.pt` whose unpickling would run code) makes `check_checkpoints` and a
  resuming `pretrain()` refuse the checkpoint, and its code never runs;
- malformed state.json or safetensors headers are refused, naming the file;
- `load_pretrained` reads safetensors only, never a planted `pytorch_model.bin`;
- a write that runs out of space (a real tiny tmpfs) raises a CommitteeError that says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import torch

from workers.errors import CheckpointError, CommitteeError
from workers.model.bert import bert_config, build_mlm
from workers.storage import checkpoint
from workers.storage import files as storage
from workers.text.corpus import encode, pack_blocks
from workers.train.pretrain import RESUME_KEYS, PretrainSettings, SpecialIds, batch_at, pretrain, train_step
from workers.train.schedule import make_optimizer

EXPECTED_FILES = ["config.json", "model.safetensors", "optimizer.safetensors", "state.json"]


class Stop(Exception):
    pass


class CodeOnUnpickle:
    """Unpickling this creates the directory `marker`: what a malicious state.pt would do, harmlessly."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def plant_pickle(path, marker) -> None:
    torch.save({"optimizer": CodeOnUnpickle(marker)}, path)


@pytest.fixture(scope="module")
def corpus(data_root):
    from workers.data.loading import pretraining_articles
    from workers.text.tokenizer import train_wordpiece

    articles = pretraining_articles(data_root, 40, order_seed=0)
    tokenizer = train_wordpiece(articles, 600)
    special = SpecialIds.of(tokenizer)
    blocks = pack_blocks(encode(tokenizer, articles, special=False), 64, special.cls, special.sep, special.pad)
    return {"special": special, "blocks": blocks}  # blocks [n, 64]


def tiny_mlm(special: SpecialIds, seed: int = 0):
    torch.manual_seed(seed)
    return build_mlm(bert_config(special.vocab_size, 32, 2, 1, max_position=64))


def settings(**kw) -> PretrainSettings:
    base = dict(seed=3, max_steps=4, batch_size=8, lr=1e-3, weight_decay=0.01, warmup_steps=1, mask_prob=0.15,
                precision="fp32", checkpoint_every=2, log_every=1)
    return PretrainSettings(**{**base, **kw})


def stop_at_three(record):
    if record["step"] == 3:
        raise Stop


@pytest.fixture(scope="module")
def interrupted(corpus, tmp_path_factory):
    """The checkpoints/ dir of a pre-training cut after step 3: it holds step-0000002."""
    root = tmp_path_factory.mktemp("interrupted") / "checkpoints"
    with pytest.raises(Stop):
        pretrain(tiny_mlm(corpus["special"]), corpus["blocks"], corpus["special"], settings(),
                 checkpoint_dir=root, on_log=stop_at_three)
    return root


@pytest.fixture
def checkpoints(interrupted, tmp_path):
    """A fresh copy of the interrupted run's checkpoints/ dir, to tamper with."""
    return shutil.copytree(interrupted, tmp_path / "checkpoints")


def test_checkpoint_files_are_safetensors_and_json(interrupted):
    step_dir = interrupted / "step-0000002"
    assert sorted(os.listdir(interrupted)) == ["step-0000002"]
    assert sorted(os.listdir(step_dir)) == EXPECTED_FILES
    record = json.loads((step_dir / "state.json").read_text())
    assert record["format"] == checkpoint.STATE_FORMAT and record["step"] == 2
    assert set(RESUME_KEYS) <= set(record)
    for name in os.listdir(step_dir):
        assert not (step_dir / name).read_bytes().startswith(b"\x80"), f"{name} looks like a pickle"


def test_state_round_trips_and_resumes_exactly(corpus, tmp_path):
    special, blocks, s = corpus["special"], corpus["blocks"], settings()

    def trained(steps: range, model, optimizer, scheduler):
        for step in steps:
            batch = torch.from_numpy(batch_at(blocks, step, s.batch_size, s.seed)).long()
            train_step(model, optimizer, scheduler, batch, special, s, step)

    model = tiny_mlm(special).train()
    optimizer, scheduler = make_optimizer(model, s.lr, s.weight_decay, s.warmup_steps, s.max_steps)
    trained(range(2), model, optimizer, scheduler)
    saved = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": 2,
             "tokens": 1024, "train_s": 0.125, "loss": float("nan")}
    step_dir = checkpoint.save(tmp_path, 2, model, saved)

    back = checkpoint.load_state(step_dir, RESUME_KEYS)
    assert back["scheduler"] == saved["scheduler"]
    assert (back["step"], back["tokens"], back["train_s"]) == (2, 1024, 0.125) and back["loss"] != back["loss"]
    assert back["optimizer"]["param_groups"] == saved["optimizer"]["param_groups"]  # betas a tuple again
    assert back["optimizer"]["state"].keys() == saved["optimizer"]["state"].keys()
    for index, entries in saved["optimizer"]["state"].items():
        assert back["optimizer"]["state"][index].keys() == entries.keys()
        for name, tensor in entries.items():
            torch.testing.assert_close(back["optimizer"]["state"][index][name], tensor, rtol=0, atol=0)

    resumed = tiny_mlm(special, seed=1).train()  # other initial weights: everything must come from the files
    resumed.load_state_dict(checkpoint.load_weights(step_dir), strict=False)
    resumed.tie_weights()
    optimizer2, scheduler2 = make_optimizer(resumed, s.lr, s.weight_decay, s.warmup_steps, s.max_steps)
    optimizer2.load_state_dict(back["optimizer"])
    scheduler2.load_state_dict(back["scheduler"])
    trained(range(2, 4), model, optimizer, scheduler)
    trained(range(2, 4), resumed, optimizer2, scheduler2)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_planted_pickle_is_refused_and_never_run(corpus, checkpoints, tmp_path):
    control = tmp_path / "control-marker"
    plant_pickle(tmp_path / "control.pt", control)
    torch.load(tmp_path / "control.pt", weights_only=False)  # what the old loader did: the payload runs
    assert control.is_dir()

    marker = tmp_path / "marker"
    plant_pickle(checkpoints / "step-0000002" / "state.pt", marker)
    with pytest.raises(CheckpointError) as refused:
        checkpoint.check_checkpoints(checkpoints)
    message = str(refused.value)
    assert "state.pt" in message and "nothing was loaded" in message and f"delete {checkpoints}" in message
    with pytest.raises(CheckpointError, match="state.pt"):
        pretrain(tiny_mlm(corpus["special"]), corpus["blocks"], corpus["special"], settings(),
                 checkpoint_dir=checkpoints)
    with pytest.raises(CheckpointError, match="state.pt"):
        checkpoint.load_state(checkpoints / "step-0000002")
    assert not marker.exists()
    assert (checkpoints / "step-0000002" / "state.pt").is_file()  # refused, left for the user to see


def test_unplanted_copy_resumes_to_the_end(corpus, checkpoints):
    """The same copy without a plant passes the checks and resumes: the refusal above is the plant's."""
    checkpoint.check_checkpoints(checkpoints, RESUME_KEYS)
    stats = pretrain(tiny_mlm(corpus["special"]), corpus["blocks"], corpus["special"], settings(),
                     checkpoint_dir=checkpoints)
    assert stats["steps"] == 4 and sorted(os.listdir(checkpoints)) == ["step-0000004"]


@pytest.mark.parametrize("planted", ["pytorch_model.bin", "rng.pkl", "extra.pt", "notes.txt"])
def test_any_unexpected_file_in_an_older_step_is_refused(checkpoints, tmp_path, planted):
    older = shutil.copytree(checkpoints / "step-0000002", checkpoints / "step-0000001")
    json_path = older / "state.json"
    json_path.write_text(json.dumps({**json.loads(json_path.read_text()), "step": 1}))
    checkpoint.check_checkpoints(checkpoints)  # two sound checkpoints
    marker = tmp_path / "marker"
    plant_pickle(older / planted, marker)
    with pytest.raises(CheckpointError, match=f"step-0000001.*{planted}"):
        checkpoint.check_checkpoints(checkpoints)
    with pytest.raises(CheckpointError, match=planted):
        checkpoint.latest(checkpoints)  # the newest is sound, but the member refuses the whole dir too
    assert not marker.exists()


def _rewrite_state(step_dir, change):
    path = step_dir / "state.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


@pytest.mark.parametrize("tamper, complaint", [
    (lambda d: (d / "state.json").write_text("not json {"), "state.json is not valid JSON"),
    (lambda d: (d / "state.json").write_text("[1, 2]"), "state.json is not a JSON object"),
    (lambda d: _rewrite_state(d, lambda r: {**r, "format": 99}), "format 99"),
    (lambda d: _rewrite_state(d, lambda r: {**r, "step": 7}), "says step 7"),
    (lambda d: _rewrite_state(d, lambda r: {k: v for k, v in r.items() if k != "tokens"}), "lacks 'tokens'"),
    (lambda d: (d / "state.json").unlink(), "state.json missing"),
    (lambda d: (d / "optimizer.safetensors").write_bytes(b"\xff" * 64), "optimizer.safetensors is not a safetensors"),
    (lambda d: (d / "model.safetensors").write_bytes(b"{}"), "model.safetensors is too short"),
    (lambda d: (d / "sub").mkdir(), "'sub', which is not a regular file"),
])
def test_malformed_checkpoints_are_refused_naming_the_file(checkpoints, tamper, complaint):
    tamper(checkpoints / "step-0000002")
    with pytest.raises(CheckpointError, match=complaint):
        checkpoint.check_checkpoints(checkpoints, RESUME_KEYS)


def test_uri_checkpoints_are_checked_too(checkpoints, tmp_path):
    root = f"file://{checkpoints}"
    (checkpoints / "step-0000002" / checkpoint.COMPLETE).write_bytes(b"")
    unfinished = checkpoints / "step-0000004"
    unfinished.mkdir()  # an upload cut short, never read: its contents do not matter
    plant_pickle(unfinished / "state.pt", tmp_path / "never")
    checkpoint.check_checkpoints(root, RESUME_KEYS)
    assert checkpoint.load_state(checkpoint.latest(root))["step"] == 2
    plant_pickle(checkpoints / "step-0000002" / "state.pt", tmp_path / "marker")
    with pytest.raises(CheckpointError, match="state.pt"):
        checkpoint.check_checkpoints(root)
    with pytest.raises(CheckpointError, match="state.pt"):
        checkpoint.latest(root)
    checkpoint.clear_local_cache()
    assert not (tmp_path / "marker").exists() and not (tmp_path / "never").exists()


def test_load_pretrained_reads_safetensors_only(corpus, tmp_path):
    from transformers import BertForMaskedLM

    model = tiny_mlm(corpus["special"])
    final = checkpoint.save_final(tmp_path / "mlm", model)
    marker = tmp_path / "marker"
    plant_pickle(final / "pytorch_model.bin", marker)
    loaded = checkpoint.load_pretrained(BertForMaskedLM, final)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    (final / "model.safetensors").unlink()  # only the pickle is left
    with pytest.raises(CheckpointError, match="model.safetensors"):
        checkpoint.load_pretrained(BertForMaskedLM, final)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# a full disk, for real: a tmpfs of a few hundred KiB


@pytest.fixture
def tiny_disk(tmp_path):
    """Mounts a tmpfs of `size_kib` KiB on a fresh directory (unmounted after the test)."""
    mounted = []

    def mount(size_kib: int):
        target = tmp_path / f"disk-{len(mounted)}"
        target.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command here to make a small disk")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(target)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:  # lazily if a failed writer still holds a file open
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], check=False)


def assert_disk_full_error(error: CommitteeError, path) -> None:
    message = str(error)
    assert message.startswith(f"no space left on device while writing {path}: "), message
    assert "--run-dir" in message and "storage.uri" in message


def test_checkpoint_on_a_full_disk_says_so(corpus, tiny_disk):
    from safetensors import SafetensorError

    disk = tiny_disk(256)  # the weights (about 150 KiB) fit, the optimizer's two moments do not
    special, s = corpus["special"], settings()
    model = tiny_mlm(special)
    optimizer, scheduler = make_optimizer(model, s.lr, s.weight_decay, s.warmup_steps, s.max_steps)
    batch = torch.from_numpy(batch_at(corpus["blocks"], 0, s.batch_size, s.seed)).long()
    train_step(model, optimizer, scheduler, batch, special, s, 0)
    root = disk / "checkpoints"
    with pytest.raises(CommitteeError) as full:
        checkpoint.save(root, 1, model, {"optimizer": optimizer.state_dict(), "step": 1})
    assert_disk_full_error(full.value, root / "step-0000001")
    assert isinstance(full.value.__cause__, SafetensorError)  # safetensors' own error, recognised
    assert os.listdir(root) == [] and checkpoint.latest(root) is None  # the partial write is gone
    checkpoint.save(root, 1, model, {"step": 1})  # without the optimizer it fits: the space was freed


def test_final_weights_and_files_on_a_full_disk_say_so(corpus, tiny_disk):
    disk = tiny_disk(64)
    model = tiny_mlm(corpus["special"])
    with pytest.raises(CommitteeError) as full:
        checkpoint.save_final(disk / "mlm", model)
    assert_disk_full_error(full.value, disk / "mlm")
    with pytest.raises(CommitteeError) as full:
        checkpoint.write_bytes(disk / "result.npz", b"\0" * 100_000)
    assert_disk_full_error(full.value, disk / "result.npz")
    assert os.listdir(disk) == []
    uri = f"file://{disk}/members/step-0000001"
    with pytest.raises(CommitteeError) as full:
        checkpoint.save(f"file://{disk}/members", 1, model, {"step": 1})
    assert_disk_full_error(full.value, uri)


def test_a_write_error_without_errno_counts_as_disk_full_only_on_a_full_disk(tiny_disk, tmp_path):
    disk = tiny_disk(64)
    failed = None
    try:
        torch.save(torch.zeros(100_000), disk / "big.pt")
    except RuntimeError as exc:  # torch's writer loses the errno
        failed = exc.with_traceback(None)  # its frames would keep the file open
    assert failed is not None and not isinstance(failed, OSError) and "space" not in str(failed)
    assert storage.is_disk_full(failed, disk / "big.pt")
    assert not storage.is_disk_full(failed, tmp_path / "elsewhere.pt")
