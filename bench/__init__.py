"""`committee bench`: the side-by-side throughput and latency benchmark.

The authors' loops (Hugging Face models called with `labels=`, fp32, every sequence padded to 128)
against the project's (the loops every training command runs), on the same model shape and the same
real text, in alternating rounds. Sections:
1. pre-training (`sections.pretrain`): real tokens/s and model FLOP/s over the matmul peak;
2. fine-tuning and prediction on AG News (`sections.finetune`): pad-to-128 against length buckets;
3. committee latency, K members against one deep model, in this process (`sections.latency`);
4. on CPU, through Ray (`sections.scaling`): scaling from 1 to N worker processes, a member actor's
   peak memory, and serving one member per worker; on CUDA instead (`sections.gpu`): members per
   GPU, fractional-GPU Ray actors against members in one process.

Data and the tokenizer come from the product's prepare stage (`bench.prepare`), the Ray connection
from `orchestrator.run.cluster.connect`; `bench.run.run_bench` runs the sections, `bench.report` prints
and writes them.
"""
