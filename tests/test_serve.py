"""`committee serve`: a real Ray Serve application on the loopback interface, talked to over HTTP.

The smoke config's run is trained once for this module; one Serve instance holds three applications
of it: the committee at `/`, the committee with the confidence cascade at `/cascade`, and the deep
model at `/tight` with a queue of one (for the 503 and the replica that dies). The CLI test starts
`committee serve` as a user does and stops it with Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import REPO, SMOKE, run_cli

from workers.text.tokenizer import load_tokenizer

pytest.importorskip("ray.serve")

TIGHT_QUEUE = {"max_ongoing_requests": 1, "max_queued_requests": 1, "retry_after_s": 2.0}


def http(method: str, url: str, body: bytes | None = None, timeout: float = 60) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of one request; a 4xx/5xx is returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {"raw": raw.decode(errors="replace")}
        return exc.code, dict(exc.headers), payload


def predict(url: str, texts, **extra) -> tuple[int, dict]:
    status, _, payload = http("POST", f"{url}/predict", json.dumps({"texts": texts, **extra}).encode())
    return status, payload


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("serve") / "smoke"
    proc = run_cli("run", SMOKE, "--run-dir", run_dir, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def smoke_task(smoke_run):
    from orchestrator.run.prepare import load_cfg_task
    from orchestrator.run.rundir import read_finished

    return load_cfg_task(read_finished(smoke_run).config)


@pytest.fixture(scope="module")
def served(smoke_run):
    """Serve on a free loopback port with the three applications; shut down (Serve and Ray) at the end."""
    import ray

    from orchestrator.serve.driver import AppSpec, calibrate_cascade, cpus_for, deploy, free_port, serve_session
    from orchestrator.serve.settings import app_args, deployment_settings

    calibration = calibrate_cascade(smoke_run, max_loss_points=0.3)
    run_dir = str(smoke_run)
    apps = [AppSpec("committee", "/", app_args(run_dir=run_dir), deployment_settings()),
            AppSpec("cascade", "/cascade", app_args(run_dir=run_dir, cascade_threshold=calibration.threshold,
                                                    calibration=calibration.as_dict()), deployment_settings()),
            AppSpec("tight", "/tight", app_args(run_dir=run_dir, model="deep", max_texts_per_request=64),
                    deployment_settings(**TIGHT_QUEUE))]
    host, port = "127.0.0.1", free_port()
    with serve_session(host, port, num_cpus=cpus_for(apps)) as deployed:
        urls = deploy(deployed, apps, host, port)
        yield {**urls, "run_dir": smoke_run, "calibration": calibration, "port": port}
    assert not ray.is_initialized(), "the session shut Ray down"


def test_predictions_equal_committee_predict(served, smoke_task, tmp_path):
    texts = smoke_task.test_texts[:60]
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    proc = run_cli("predict", served["run_dir"], path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    expected = [json.loads(line) for line in proc.stdout.splitlines()]
    answers = []
    for start in range(0, len(texts), 25):  # several requests, each its own batch or part of one
        status, payload = predict(served["committee"], texts[start:start + 25])
        assert status == 200, payload
        assert payload["model"] == "committee" and payload["rule"] == "soft"
        answers += payload["predictions"]
    assert len(answers) == len(expected) == len(texts)
    for got, want in zip(answers, expected):
        assert (got["label"], got["label_name"], got["agreement"]) == (want["label"], want["label_name"],
                                                                        want["agreement"])
        np.testing.assert_allclose(got["soft_labels"], want["soft_labels"], atol=2e-6)
    tokenizer = load_tokenizer(served["run_dir"] / "tokenizer")
    longer = [len(ids) > 64 for ids in tokenizer(texts)["input_ids"]]  # the smoke run's task.max_length
    assert [a["truncated"] for a in answers] == longer and 0 < sum(longer) < len(texts)


def test_concurrent_requests_are_batched_and_answered_alike(served, smoke_task):
    from bench.serve.http_load import closed_loop

    url = served["committee"]
    texts = smoke_task.test_texts[:32]
    alone = [predict(url, [t])[1]["predictions"][0]["label"] for t in texts]
    before = http("GET", f"{url}/metadata")[2]["counters"]

    async def together():
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async def one(text):
                async with session.post(f"{url}/predict", json={"texts": [text]}) as response:
                    return response.status, await response.json()
            return await asyncio.gather(*(one(t) for t in texts))

    results = asyncio.run(together())
    assert all(status == 200 for status, _ in results)
    assert [payload["predictions"][0]["label"] for _, payload in results] == alone
    after = http("GET", f"{url}/metadata")[2]["counters"]
    requests, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert requests == 32 and batches < requests, f"{requests} concurrent requests in {batches} batches"
    # the load generator: a closed loop of 4 clients, every answer 200
    bodies = [json.dumps({"texts": [t]}).encode() for t in texts]
    load = asyncio.run(closed_loop(f"{url}/predict", bodies, concurrency=4, duration_s=1.5, warmup_s=0.3))
    assert load.ok > 0 and load.failed == 0 and load.rejected == 0
    assert load.summary()["p50_ms"] <= load.summary()["p99_ms"]


BAD_REQUESTS = [
    (b'{"texts": ["an unfinished', 400, "not valid JSON"),
    (b'{"words": ["a text"]}', 422, 'a "texts" list'),
    (b'{"texts": []}', 422, "non-empty list of strings"),
    (b'{"texts": ["fine", ""]}', 422, "texts[1] is empty"),
    (b'{"texts": ["fine", 42]}', 422, "texts[1] is not a string"),
    (json.dumps({"texts": ["one text"] * 65}).encode(), 413, "65 texts in one request; at most 64"),
    (json.dumps({"texts": ["x" * 20_001]}).encode(), 413, "texts[0] has 20,001 characters; at most 20,000"),
    (b'{"texts": ["fine"], "rule": "hard"}', 422, "unknown key 'rule'"),
]


@pytest.mark.parametrize("body, status, message", BAD_REQUESTS)
def test_bad_input_gets_a_4xx_with_a_message_and_the_next_request_is_served(served, body, status, message):
    got, _, payload = http("POST", f"{served['committee']}/predict", body)
    assert got == status and message in payload["error"], payload
    good, answer = predict(served["committee"], ["Shares rose after the company reported strong profits"])
    assert good == 200 and len(answer["predictions"]) == 1


def test_over_long_text_is_truncated_and_flagged_as_predict_cuts_it(served):
    from orchestrator.run.finished import load_committee

    long_text = " ".join(["the government announced new trade talks with its neighbours"] * 40)
    status, payload = predict(served["committee"], [long_text, "a short text about football"])
    assert status == 200
    cut, short = payload["predictions"]
    assert cut["truncated"] is True and short["truncated"] is False
    offline = load_committee(served["run_dir"]).predict([long_text])
    assert cut["label"] == int(offline.labels[0])
    np.testing.assert_allclose(cut["soft_labels"], offline.soft_labels[0], atol=2e-6)


def test_member_probabilities_on_request(served):
    status, payload = predict(served["committee"], ["Oil prices climbed to a record"], member_probabilities=True)
    assert status == 200
    answer = payload["predictions"][0]
    members = answer["member_probabilities"]
    assert sorted(members) == ["member-00", "member-01"]
    np.testing.assert_allclose(np.mean(list(members.values()), axis=0), answer["soft_labels"], atol=2e-6)
    status, payload = predict(served["committee"], ["Oil prices climbed to a record"])
    assert "member_probabilities" not in payload["predictions"][0]


def test_healthz_and_metadata_describe_the_run(served):
    import yaml

    from workers.train.member import load_result

    status, _, health = http("GET", f"{served['committee']}/healthz")
    assert status == 200 and health["status"] == "ok" and health["model"] == "committee"
    status, _, meta = http("GET", f"{served['committee']}/metadata")
    assert status == 200
    run_dir = served["run_dir"]
    report = json.loads((run_dir / "report.json").read_text())
    assert meta["task"] == {"name": "ag_news", "max_length": 64, "num_classes": 4}
    assert meta["classes"] == report["corpus"]["label_names"] == ["World", "Sports", "Business", "Sci/Tech"]
    for member in meta["members"]:
        saved = load_result(run_dir / "members" / member["name"])
        assert (member["val_accuracy"], member["test_accuracy"]) == (saved.val_accuracy, saved.test_accuracy)
        assert member["layers"] == 1
    assert [m["name"] for m in meta["members"]] == ["member-00", "member-01"]
    assert meta["tokenizer"]["vocab_size"] == 2000
    assert meta["config"] == yaml.safe_load((run_dir / "config.yaml").read_text())
    assert meta["cascade"] is None and meta["rule"] == "soft"
    assert meta["counters"]["requests"] >= 0 and meta["serving"]["max_texts_per_request"] == 64


def test_cascade_answers_as_its_math_and_counts_early_exits(served, smoke_task):
    from orchestrator.run.finished import load_committee
    from workers.committee.cascade import decide, member_order
    from workers.text.corpus import encode

    calibration = served["calibration"]
    url = served["cascade"]
    texts = smoke_task.test_texts
    answers = []
    for start in range(0, len(texts), 50):
        status, payload = predict(url, texts[start:start + 50])
        assert status == 200
        answers += payload["predictions"]
    committee = load_committee(served["run_dir"])
    logits = committee.logits(encode(committee.tokenizer, texts, max_length=committee.max_length))
    expected = decide(logits, member_order(committee.val_accuracy), calibration.threshold)
    assert [a["label"] for a in answers] == expected.labels.tolist()
    assert [a["members_used"] for a in answers] == expected.members_used.tolist()
    status, _, meta = http("GET", f"{url}/metadata")
    cascade = meta["cascade"]
    assert cascade["threshold"] == calibration.threshold and cascade["calibration"]["val_examples"] == 40
    assert cascade["order"] == [committee.names[k] for k in member_order(committee.val_accuracy)]
    counters = meta["counters"]
    early = int((expected.members_used < len(committee)).sum())
    assert counters["texts"] == len(texts) and sum(counters["members_used"][:-1]) == early
    assert counters["early_exit_share"] == pytest.approx(early / len(texts))


def test_deep_model_is_served_the_same_way(served, smoke_task):
    from orchestrator.serve.runs import load_served

    texts = smoke_task.test_texts[:20]
    status, payload = predict(served["tight"], texts)
    assert status == 200 and payload["model"] == "deep"
    expected = load_served(served["run_dir"], "deep").predict(texts)
    assert [a["label"] for a in payload["predictions"]] == expected.labels.tolist()
    assert all(a["agreement"] == 1.0 for a in payload["predictions"])  # a committee of one


def test_a_full_queue_answers_503_with_retry_after_and_recovers(served, smoke_task):
    url = served["tight"]
    body = json.dumps({"texts": smoke_task.test_texts[:64]}).encode()

    async def burst():
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async def one():
                async with session.post(f"{url}/predict", data=body,
                                        headers={"Content-Type": "application/json"}) as response:
                    await response.read()
                    return response.status, response.headers.get("Retry-After")
            return await asyncio.gather(*(one() for _ in range(24)))

    results = asyncio.run(burst())
    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) > 0 and statuses.count(200) > 0, statuses
    assert all(retry == "2" for status, retry in results if status == 503)
    status, payload = predict(url, ["after the burst"])
    assert status == 200 and len(payload["predictions"]) == 1


def test_a_replica_that_dies_is_restarted_and_the_application_answers_again(served):
    url = served["tight"]
    status, _, health = http("GET", f"{url}/healthz")
    assert status == 200
    os.kill(health["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        try:
            status, _, health_after = http("GET", f"{url}/healthz", timeout=10)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            status = None
        if status == 200 and health_after["pid"] != health["pid"]:
            break
        assert time.monotonic() < deadline, "no new replica answered within 120 s"
        time.sleep(0.5)
    status, payload = predict(url, ["the replica came back"])
    assert status == 200 and payload["model"] == "deep"
    status, _ = predict(served["committee"], ["the other applications kept answering"])
    assert status == 200


@pytest.mark.slow  # once, its Ctrl-C shutdown outlasted 120 s on this 2-core machine (passed in 47 s the run before): make test-all
def test_cli_serves_until_ctrl_c_and_writes_a_serve_config(served, tmp_path):
    """`committee serve RUN_DIR --port P` as a user runs it: the README's curl line, then Ctrl-C."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from orchestrator.serve.app import build_app
    from orchestrator.serve.driver import free_port, port_is_free
    from orchestrator.serve.settings import AppArgs

    run_dir, port = served["run_dir"], free_port()
    env = {**os.environ, "RAY_TMPDIR": os.environ.get("RAY_TMPDIR", "/tmp/ray-ct")}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", str(run_dir), "--port", str(port),
                             "--rule", "weighted"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            try:
                if http("GET", f"{url}/healthz", timeout=5)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "committee serve did not answer within 240 s"
            time.sleep(0.5)
        curl = subprocess.run(["curl", "-s", f"{url}/predict", "-H", "Content-Type: application/json", "-d",
                               '{"texts": ["Stocks rallied as oil prices fell"]}'], capture_output=True, text=True)
        answer = json.loads(curl.stdout)
        assert answer["rule"] == "weighted" and answer["predictions"][0]["label_name"] in (
            "World", "Sports", "Business", "Sci/Tech")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "serving the committee" in out and "stopped" in out and "Traceback" not in err
    assert port_is_free("127.0.0.1", port), "the proxy let go of the port"
    config = yaml.safe_load((run_dir / "serve.yaml").read_text())
    ServeDeploySchema.model_validate(config)  # what `serve run` / `serve deploy` read
    application = config["applications"][0]
    assert application["import_path"] == "orchestrator.serve.app:build_app"
    assert application["args"]["rule"] == "weighted" and config["http_options"]["port"] == port
    assert application["deployments"][0]["max_queued_requests"] == 256
    assert build_app(AppArgs.model_validate(application["args"])) is not None


@pytest.mark.parametrize("values, message", [
    ({"rule": "hard", "cascade_threshold": 0.9}, "cannot serve the hard rule"),
    ({"max_texts_per_request": 128},
     "max_texts_per_request (--max-texts) 128 exceeds max_batch_texts (--max-batch) 64"),
    ({"model": "large"}, "committee serve --model = 'large'"),
    ({"batch_wait_ms": -1.0}, "committee serve --batch-wait-ms = -1.0"),
    ({"model": "deep", "cascade_threshold": 0.9}, "the cascade needs a committee"),
])
def test_bad_application_options_name_the_option(values, message):
    from orchestrator.serve.settings import app_args
    from workers.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        app_args(run_dir="runs/x", **values)
    assert message in str(caught.value)


@pytest.mark.parametrize("values, message", [
    ({"autoscale": (3, 1)}, "needs 0 <= MIN <= MAX"),
    ({"max_queued_requests": 0}, "committee serve --max-queued = 0"),
    ({"cpus_per_replica": 0.0}, "committee serve --cpus-per-replica = 0.0"),
])
def test_bad_deployment_options_name_the_option(values, message):
    from orchestrator.serve.settings import deployment_settings
    from workers.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        deployment_settings(**values)
    assert message in str(caught.value)


@pytest.mark.parametrize("args, message", [
    (["--rule", "hard", "--cascade"], "cannot serve the hard rule"),
    (["--autoscale", "4"], "--autoscale '4': give MIN:MAX replicas"),
    (["--cascade-threshold", "0.9"], "add --cascade"),
])
def test_cli_refuses_bad_options_with_exit_2(served, args, message):
    proc = run_cli("serve", served["run_dir"], "--port", str(served["port"] + 1), *args, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_refuses_a_missing_run_a_missing_deep_model_and_a_port_in_use(served, tmp_path):
    import shutil

    import yaml

    proc = run_cli("serve", tmp_path / "nowhere", timeout=120)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    no_deep = tmp_path / "no_deep"
    shutil.copytree(served["run_dir"], no_deep)
    config = yaml.safe_load((no_deep / "config.yaml").read_text())
    config["deep"]["enabled"] = False
    (no_deep / "config.yaml").write_text(yaml.safe_dump(config))
    proc = run_cli("serve", no_deep, "--model", "deep", timeout=120)
    assert proc.returncode == 2 and "has no deep model (its config has deep.enabled: false)" in proc.stderr
    proc = run_cli("serve", served["run_dir"], "--port", str(served["port"]), timeout=120)
    assert proc.returncode == 2 and f"--port {served['port']}: the port is in use" in proc.stderr, proc.stderr
