"""Member storage on a pyarrow.fs URI (file:// here: the same code path as s3:// or gs://, without a bucket).

Checkpoints on a URI are complete only with their COMPLETE marker, are read through a node-local
download, and an interrupted pre-training resumes from them to exactly the uninterrupted weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.model.bert import bert_config, build_mlm
from workers.storage import checkpoint
from workers.train.member import MemberResult, load_result, save_result
from workers.train.pretrain import PretrainSettings, SpecialIds, pretrain

SPECIAL = SpecialIds(pad=0, cls=1, sep=2, mask=3, unk=4, vocab_size=200)


@pytest.fixture(autouse=True)
def no_leftover_downloads():
    yield
    checkpoint.clear_local_cache()


def tiny_mlm(seed: int = 0):
    torch.manual_seed(seed)
    return build_mlm(bert_config(SPECIAL.vocab_size, 16, 2, 1, max_position=32))


def blocks() -> np.ndarray:
    return np.random.default_rng(0).integers(5, SPECIAL.vocab_size, (64, 32)).astype(np.int32)  # [n, seq]


def settings(**kw) -> PretrainSettings:
    base = dict(seed=5, max_steps=6, batch_size=8, lr=1e-3, weight_decay=0.01, warmup_steps=0, mask_prob=0.15,
                precision="fp32", checkpoint_every=2, log_every=1)
    return PretrainSettings(**{**base, **kw})


def test_join_keeps_paths_and_uri_queries():
    assert checkpoint.join("/a/b", "c", "d") == checkpoint.Path("/a/b/c/d")
    assert checkpoint.join("s3://bucket/pre/", "run", "x") == "s3://bucket/pre/run/x"
    assert (checkpoint.join("s3://bucket/pre?endpoint_override=127.0.0.1:9000", "run")
            == "s3://bucket/pre/run?endpoint_override=127.0.0.1:9000")


def test_uri_checkpoints_need_their_marker_and_load_locally(tmp_path):
    root = f"file://{tmp_path}/ckpts"
    model = tiny_mlm()
    checkpoint.save(root, 2, model, {"step": 2})
    checkpoint.save(root, 4, model, {"step": 4})
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["step-0000004"]  # older one pruned
    (tmp_path / "ckpts" / "step-0000006").mkdir()  # an upload cut short: files but no marker
    (tmp_path / "ckpts" / "step-0000006" / "model.safetensors").write_bytes(b"partial")
    newest = checkpoint.latest(root)
    assert newest.is_dir() and not str(newest).startswith(str(tmp_path))  # a local download
    assert checkpoint.load_state(newest)["step"] == 4

    final = checkpoint.join(f"file://{tmp_path}", "member", "mlm")
    checkpoint.save_final(final, model, {"pretrain_stats.json": "{}"})
    assert checkpoint.read_bytes(checkpoint.join(final, "pretrain_stats.json")) == b"{}"
    assert (checkpoint.local_dir(final) / "model.safetensors").is_file()
    checkpoint.remove(checkpoint.join(f"file://{tmp_path}", "member"))
    assert not checkpoint.exists(final)


def test_member_result_round_trips_through_a_uri(tmp_path):
    out = f"file://{tmp_path}/members/member-00"
    assert load_result(out) is None
    logits = np.arange(12, dtype=np.float32).reshape(3, 4)  # [n, classes]
    result = MemberResult("member-00", "pretrained", 0, 7, 1, 123, 0.5, 0.25, logits, logits + 1,
                          pretrain_stats={"steps": 6}, classifier_dir=f"{out}/classifier")
    save_result(result, out)
    back = load_result(out)
    assert (back.name, back.seed, back.pretrain_stats) == ("member-00", 7, {"steps": 6})
    np.testing.assert_array_equal(back.test_logits, logits + 1)


def test_pretraining_interrupted_on_a_uri_resumes_exactly(tmp_path):
    data = blocks()
    whole = tiny_mlm()
    pretrain(whole, data, SPECIAL, settings(), checkpoint_dir=f"file://{tmp_path}/whole")

    class Stop(Exception):
        pass

    def stop_after_checkpoint(record):
        if record["step"] == 5:  # the checkpoint of step 4 is on storage, step 5 is lost
            raise Stop

    cut = f"file://{tmp_path}/cut"
    with pytest.raises(Stop):
        pretrain(tiny_mlm(), data, SPECIAL, settings(), checkpoint_dir=cut, on_log=stop_after_checkpoint)
    assert checkpoint.load_state(checkpoint.latest(cut))["step"] == 4
    resumed = tiny_mlm()  # a fresh process would start like this, possibly on another node
    pretrain(resumed, data, SPECIAL, settings(), checkpoint_dir=cut)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
