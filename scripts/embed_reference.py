#!/usr/bin/env python3
"""Reference embedding pipeline for memlayer: onnxruntime + tokenizers on the exported
all-MiniLM-L6-v2 model, with the exact settings the Rust adapter uses.

Usage:
  embed_reference.py --model-dir DIR --input texts.jsonl --output vectors.jsonl
                     [--threads N] [--bench] [--max-batch-tokens T] [--max-batch-size B]

Input: one JSON string per line (blank lines are skipped; anything else is an error).
Output: one JSON array of 384 floats per line, in input order. "-" means stdin/stdout.

Settings (must match the Rust side):
  * tokenizer.json from DIR, its shipped truncation (128) and fixed padding (128) are
    overridden: truncation to 256 tokens (longest-first, stride 0), no padding at encode
    time, then each batch is right-padded with [PAD] (id 0) to its longest row;
  * attention_mask 1 for real tokens, 0 for padding; token_type_ids int64 zeros;
  * texts are sorted by token count (stable) before batching; a batch holds at most
    --max-batch-size rows and at most --max-batch-tokens padded tokens (rows x longest);
  * onnxruntime CPU, intra-op threads = --threads (default 1), inter-op 1, sequential;
  * the model output `sentence_embedding` is already mean-pooled and L2-normalised.
With --bench, throughput (texts/s, excluding tokenizer/model load and a warm-up run)
is printed to stderr.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MAX_SEQ_LENGTH = 256
DEFAULT_MAX_BATCH_TOKENS = 768
DEFAULT_MAX_BATCH_SIZE = 64


def load_tokenizer(model_dir, max_length=MAX_SEQ_LENGTH):
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length, stride=0, strategy="longest_first")
    pad_id = tok.token_to_id("[PAD]")
    if pad_id is None:
        raise SystemExit("tokenizer.json has no [PAD] token")
    return tok, pad_id


def load_session(model_dir, threads=1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(
        os.path.join(model_dir, "model.onnx"), so, providers=["CPUExecutionProvider"]
    )


def tokenize(tok, texts):
    """Token id lists (truncated, unpadded) for each text."""
    return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=True)]


def plan_batches(lengths, max_batch_tokens, max_batch_size, batching="sorted"):
    """Batches of indices. `sorted` (memlayer's, the default): sorted by length (stable),
    cut at max_batch_size rows or max_batch_tokens padded tokens. `input`: the common Python
    pipeline, fixed batches of max_batch_size rows in input order, each padded to its longest."""
    if batching == "input":
        idx = list(range(len(lengths)))
        return [idx[i : i + max_batch_size] for i in range(0, len(idx), max_batch_size)]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, cur, cur_max = [], [], 0
    for i in order:
        new_max = max(cur_max, lengths[i])
        if cur and (len(cur) + 1 > max_batch_size or (len(cur) + 1) * new_max > max_batch_tokens):
            batches.append(cur)
            cur, new_max = [], lengths[i]
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


def pad_batch(id_lists, pad_id):
    longest = max(len(ids) for ids in id_lists)
    input_ids = np.full((len(id_lists), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(id_lists), longest), dtype=np.int64)
    for r, ids in enumerate(id_lists):
        input_ids[r, : len(ids)] = ids
        mask[r, : len(ids)] = 1
    return input_ids, mask, np.zeros_like(input_ids)


def run_batch(session, input_ids, mask, token_type_ids, outputs=("sentence_embedding",)):
    return session.run(
        list(outputs),
        {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_type_ids},
    )


def embed_ids(session, id_lists, pad_id, max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS,
              max_batch_size=DEFAULT_MAX_BATCH_SIZE, batching="sorted"):
    out = np.zeros((len(id_lists), 384), dtype=np.float32)
    for batch in plan_batches([len(x) for x in id_lists], max_batch_tokens, max_batch_size, batching):
        (emb,) = run_batch(session, *pad_batch([id_lists[i] for i in batch], pad_id))
        out[batch] = emb
    return out


def embed_texts(session, tok, pad_id, texts, **kw):
    return embed_ids(session, tokenize(tok, texts), pad_id, **kw)


def read_texts(path):
    f = sys.stdin if path == "-" else open(path, encoding="utf-8")
    texts = []
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            value = json.loads(line)
            if not isinstance(value, str):
                raise SystemExit(f"{path}:{n}: expected a JSON string, got {type(value).__name__}")
            texts.append(value)
    return texts


def write_vectors(path, vectors):
    f = sys.stdout if path == "-" else open(path, "w", encoding="utf-8")
    with f:
        for row in vectors:
            # float(np.float32) is exact; parsing it back as f32 gives the same value.
            f.write(json.dumps([float(v) for v in row], separators=(",", ":")))
            f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-batch-tokens", type=int, default=DEFAULT_MAX_BATCH_TOKENS)
    ap.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE)
    ap.add_argument("--bench", action="store_true")
    a = ap.parse_args()
    if a.threads < 1 or a.max_batch_size < 1 or a.max_batch_tokens < MAX_SEQ_LENGTH:
        ap.error(f"--threads and --max-batch-size must be >= 1, --max-batch-tokens >= {MAX_SEQ_LENGTH}")

    texts = read_texts(a.input)
    tok, pad_id = load_tokenizer(a.model_dir)
    session = load_session(a.model_dir, a.threads)
    run_batch(session, *pad_batch([[101, 102]], pad_id))  # warm-up, not timed

    t0 = time.perf_counter()
    ids = tokenize(tok, texts)
    t1 = time.perf_counter()
    vectors = embed_ids(session, ids, pad_id, a.max_batch_tokens, a.max_batch_size)
    t2 = time.perf_counter()
    write_vectors(a.output, vectors)

    if a.bench:
        n = len(texts)
        tokens = sum(len(x) for x in ids)
        batches = plan_batches([len(x) for x in ids], a.max_batch_tokens, a.max_batch_size)
        padded = sum(len(b) * max(len(ids[i]) for i in b) for b in batches)
        total = t2 - t0
        print(
            f"bench: {n} texts, {tokens} tokens ({padded} padded, {len(batches)} batches), "
            f"threads={a.threads}: {n / total if total else float('inf'):.1f} texts/s, "
            f"{tokens / total if total else float('inf'):.0f} tokens/s "
            f"(tokenize {t1 - t0:.3f}s, infer {t2 - t1:.3f}s)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
