"""The Ray Serve application of `committee serve`: one deployment that holds every member stacked.

`CommitteeServer` loads a finished run's committee (or its deep model) once per replica and answers
HTTP through a FastAPI ingress:
- `POST /predict` `{"texts": [...], "member_probabilities": false}`: per text the label, its name, the
  soft labels, the members' agreement, whether the text was cut to `task.max_length` (and with the
  cascade, how many members answered);
- `GET /healthz`: the replica is up (and which process it is);
- `GET /metadata`: task, classes, members with their validation accuracy, tokenizer, the run's config,
  the serving settings, the cascade's calibration and this replica's counters (early exits included).

Concurrent requests are batched with `@serve.batch`, counted in texts (`batch_size_fn`): one packed
forward of all members answers every text of the batch. The forward runs in a worker thread, so
requests that arrive meanwhile are read and queued and form the next batch. A bad request gets a 4xx
with a message (workers.committee.serving.parse_request) and never reaches the batch. Serve bounds
the queue in front of the replicas (`max_queued_requests`; beyond it 503 with Retry-After) and starts
a new replica when one dies.

Multiplexing (`@serve.multiplexed`) would keep one member per model id: wrong for a committee that
needs every member on every request, so the members stay stacked in one replica.

`build_app(args)` is the application builder a Serve config file names (`serve run`, `serve deploy`).
No `from __future__ import annotations` here: FastAPI reads the routes' parameter types at run time.
"""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from orchestrator.serve.settings import DEPLOYMENT_NAME, HEALTH_CHECK_PERIOD_S, AppArgs
from workers.committee.serving import BadRequest, RequestLimits, parse_request

api = FastAPI(title="committee", description="A finished run's committee of tiny BERTs, served by Ray Serve")


def texts_in(requests: list) -> int:
    """A batch's size for `@serve.batch`: the texts of its requests, not the requests."""
    return sum(len(r.texts) for r in requests)


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=64, max_queued_requests=256,
                  backpressure_config={"status_code": 503, "retry_after_s": 1.0},
                  health_check_period_s=HEALTH_CHECK_PERIOD_S)
@serve.ingress(api)
class CommitteeServer:
    """One replica: the run's members stacked in one packed model, answering batches of texts."""

    def __init__(self, args: AppArgs | dict):
        import torch

        from orchestrator.serve.runs import load_served, run_facts
        from workers.committee.serving import ServedModel

        # a replica is a process of its own (the CLI's main() never ran here): batches of a few texts tokenize
        # faster in this thread than handed to the tokenizers' thread pool on a busy CPU
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.args = AppArgs.model_validate(args)
        threads = self.args.threads_per_replica or torch.get_num_threads()  # Ray sets the replica's CPUs
        torch.set_num_threads(threads)
        committee = load_served(self.args.run_dir, self.args.model)
        self.served = ServedModel(committee, self.args.rule, self.args.cascade_threshold)
        self.limits = RequestLimits(self.args.max_texts_per_request, self.args.max_text_chars)
        self.facts = run_facts(self.args.run_dir, committee)
        self.torch_threads = threads
        self.handle_batch.set_max_batch_size(self.args.max_batch_texts)
        self.handle_batch.set_batch_wait_timeout_s(self.args.batch_wait_ms / 1000.0)
        self._forward = ThreadPoolExecutor(max_workers=1, thread_name_prefix="committee-forward")
        self.served.answer([" ".join(["warm"] * 8)])  # the first forward pays for lazy set-up, not a user
        self.served.reset_counters()

    @api.post("/predict")
    async def predict(self, request: Request):
        try:
            parsed = parse_request(await request.body(), self.limits)
        except BadRequest as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        answers = await self.handle_batch(parsed)
        return JSONResponse({"model": self.args.model, "rule": self.args.rule, "predictions": answers})

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0, batch_size_fn=texts_in)
    async def handle_batch(self, requests: list) -> list[list[dict]]:
        """Every text of these requests in one forward; the answers split back per request."""
        texts = [text for r in requests for text in r.texts]
        with_members = any(r.member_probabilities for r in requests)
        loop = asyncio.get_running_loop()
        answers = await loop.run_in_executor(self._forward, self.served.answer, texts, with_members, len(requests))
        out, start = [], 0
        for r in requests:
            part = answers[start:start + len(r.texts)]
            start += len(r.texts)
            if with_members and not r.member_probabilities:
                part = [{k: v for k, v in a.items() if k != "member_probabilities"} for a in part]
            out.append(part)
        return out

    @api.get("/healthz")
    async def healthz(self):
        return {"status": "ok", "model": self.args.model, "pid": os.getpid()}

    @api.get("/metadata")
    async def metadata(self):
        a = self.args
        cascade = None
        if a.cascade_threshold is not None:
            cascade = {"threshold": a.cascade_threshold, "order": [self.served.committee.names[k]
                                                                   for k in self.served.order],
                       "calibration": a.calibration}
        return {**self.facts, "model": a.model, "rule": a.rule, "cascade": cascade,
                "serving": {"max_texts_per_request": a.max_texts_per_request, "max_text_chars": a.max_text_chars,
                            "max_batch_texts": a.max_batch_texts, "batch_wait_ms": a.batch_wait_ms,
                            "torch_threads": self.torch_threads, "pid": os.getpid()},
                "counters": self.served.counters()}


def build_app(args: AppArgs):
    """The application builder of a Serve config file: `import_path: orchestrator.serve.app:build_app`."""
    return CommitteeServer.bind(args.model_dump())
