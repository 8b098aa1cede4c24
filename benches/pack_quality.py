#!/usr/bin/env python3
"""Quantization quality, side by side: the 2026-04-27 record's own export pipeline vs `pgolf pack` (issue 19).

    python benches/pack_quality.py prepare --work DIR            # train/validation split of the fixture stream
    python benches/pack_quality.py train   --work DIR [--seconds 1800]
    python benches/pack_quality.py compare --work DIR --record RECORD_DIR --challenge CHALLENGE_DIR

`prepare` splits the sp1024 fixture stream (fixtures/data/sp1024, 385,437 tokens of the FineWeb sample, 232
documents) at a document boundary: the first 208 documents are training data (and calibration data), the last 24 the
held-out validation set. `train` runs `pgolf train` on it (6×256, 8 heads / 4 KV, MLP 2×, seq 256, tied embeddings;
the baseline recipe) under a wall-clock cap and keeps the float checkpoint.

`compare` then, in one run and on the same checkpoint, calibration tokens and validation tokens:
  1. the record's pipeline, its own functions taken from RECORD_DIR/train_gpt.py by name (gptq_mixed_quantize,
     gptq_quantize_weight, _lqer_pack_asym, _serialize_pergroup with lrzip and the L1 row sort, dequantize_mixed) with
     the hyperparameters its log declares (int6 matrices, int7 embedding, k = 11.5 / 13 / 14, LQER rank 4 on the top
     3, asymmetric, group 64; pergroup compressor). Its Hessians are accumulated as its `collect_hessians` does
     (Σ XᵀX of each matrix's input over the calibration batches, the tied embedding's from the final norm's output),
     by hooks on the challenge's baseline `GPT` (CHALLENGE_DIR/train_gpt.py), the architecture `pgolf train` trains.
     One knob is changed, the same on both sides: tensors of ≤ 4,096 elements stay float (the record's 65,536 would
     keep every matrix of a model this small in fp16, leaving nothing to compare);
  2. `pgolf pack --scheme gptq` with the same settings (control tensors in fp16 too, `--control-fp16`, as the record
     stores every small tensor), calibrated on the same tokens;
  3. `pgolf pack --fit rd --budget B` with B the record's artifact bytes (pgolf's best at the record's size: with the
     record's bits as the upper bound, and with int8 as the upper bound), and at 95% of B;
  4. pgolf's gap against the number of calibration tokens.
Every artifact is scored twice: by `pgolf verify` and by the challenge's own `eval_val` on the weights decoded in
Python (the record's `dequantize_mixed`, or python/pgolf_decode.py). Prints one JSON report (and writes it to
DIR/report.json). Needs torch, sentencepiece, safetensors, numpy, brotli and the `lrzip` binary.
"""
import argparse
import ast
import collections
import glob
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER_INTS, MAGIC, VERSION = 256, 20240520, 1
TRAIN_DOCS = 208
CONFIG = dict(vocab_size=1024, num_layers=6, model_dim=256, num_heads=8, num_kv_heads=4, mlp_mult=2,
              tie_embeddings=True, logit_softcap=30.0, rope_base=10000.0, qk_gain_init=1.5, train_seq_len=256)
KEEP_FLOAT_MAX_NUMEL = 4096
# The 04-27 record's declared export settings (train_seed42.log, `Hyperparameters:`).
RECORD_H = dict(matrix_bits=6, embed_bits=7, mlp_clip_sigmas=11.5, attn_clip_sigmas=13.0, embed_clip_sigmas=14.0,
                matrix_clip_sigmas=12.85, lqer_enabled=True, lqer_rank=4, lqer_top_k=3, lqer_asym_enabled=True,
                lqer_asym_group=64, lqer_factor_bits=4, gated_attn_quant_gate=True)


def write_shard(path, tokens):
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())


def read_shard(path):
    return np.fromfile(path, dtype="<u2", offset=HEADER_INTS * 4)


def prepare(args):
    stream = np.concatenate([read_shard(p) for p in sorted(glob.glob(
        os.path.join(ROOT, "fixtures/data/sp1024/fineweb_val_00000[0-9].bin")))])
    starts = np.flatnonzero(stream == 1)
    cut = int(starts[TRAIN_DOCS])
    for sub in ("train", "val"):
        os.makedirs(os.path.join(args.work, sub), exist_ok=True)
    write_shard(os.path.join(args.work, "train", "fineweb_train_000000.bin"), stream[:cut])
    write_shard(os.path.join(args.work, "val", "fineweb_val_000000.bin"), stream[cut:])
    with open(os.path.join(args.work, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=1)
    print(json.dumps({"train_tokens": cut, "val_tokens": len(stream) - cut, "documents": len(starts)}))


def train(args):
    cmd = [args.pgolf, "train", "--config", os.path.join(args.work, "config.json"),
           "--train", os.path.join(args.work, "train", "fineweb_train_*.bin"),
           "--val", os.path.join(args.work, "val", "fineweb_val_*.bin"),
           "--tokenizer", os.path.join(args.shared, "data/tokenizers/fineweb_1024_bpe.model"),
           "-o", os.path.join(args.work, "model"), "--train-batch-tokens", "8192", "--iterations", "100000",
           "--max-wallclock-seconds", str(args.seconds), "--warmdown-iters", str(args.warmdown),
           "--val-loss-every", "0", "--train-log-every", "25"]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


# ---------------------------------------------------------------------------------------------------------- compare

RECORD_FUNCTIONS = ["gptq_quantize_weight", "_quantize_gate_int8_row", "_lqer_pack", "_lqer_pack_asym",
                    "gptq_mixed_quantize", "dequantize_mixed", "_lrzip_compress", "_lrzip_decompress", "_pack_streams",
                    "_unpack_streams", "_similarity_sort_l1", "_serialize_pergroup", "_deserialize_pergroup"]
RECORD_CONSTANTS = ["_GROUP_ORDER", "_SIMSORT_KEYS", "_PACK_MAGIC"]
# The one knob changed (documented above): the record's passthrough size.
RECORD_EDITS = [("t.numel() <= 65536", f"t.numel() <= {KEEP_FLOAT_MAX_NUMEL}")]


def load_record(path):
    """The record's export functions and constants, taken from its source by name and run as written (plus the one
    documented edit); returns the namespace and the SHA-256 of the code run."""
    import hashlib
    import torch
    src = open(path).read()
    parts = []
    for node in ast.parse(src).body:
        if isinstance(node, ast.FunctionDef) and node.name in RECORD_FUNCTIONS:
            parts.append(ast.get_source_segment(src, node))
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) in RECORD_CONSTANTS for t in node.targets):
            parts.append(ast.get_source_segment(src, node))
    code = "\n\n".join(parts)
    for old, new in RECORD_EDITS:
        assert old in code, old
        code = code.replace(old, new)
    ns = {"torch": torch, "collections": collections, "re": re, "io": io, "os": os, "subprocess": subprocess,
          "np": np, "log": lambda *a, **k: None}
    exec(compile(code, path, "exec"), ns)
    missing = [n for n in RECORD_FUNCTIONS + RECORD_CONSTANTS if n not in ns]
    assert not missing, missing
    return ns, hashlib.sha256(code.encode()).hexdigest()


def calibration_tokens(work, n_tokens, seq_len):
    """pgolf's calibration order: the training shards sorted, the first N tokens, whole sequences."""
    toks = np.concatenate([read_shard(p) for p in sorted(glob.glob(os.path.join(work, "train", "*.bin")))])
    toks = toks[:n_tokens]
    n = len(toks) // seq_len
    return toks[:n * seq_len].reshape(n, seq_len).astype(np.int64)


def record_hessians(model, seqs):
    """What the record's `collect_hessians` accumulates, on the baseline GPT: Σ xᵀx of every block matrix's input
    (c_q/c_k/c_v share the attention input; proj takes the attention output; fc the MLP input; the MLP's proj its
    hidden activation) and, for the tied embedding, of the final norm's output; divided by the number of batches."""
    import torch
    hessians, hooks = {}, []

    def add(name, x):
        x = x.detach().float().reshape(-1, x.shape[-1])
        if name not in hessians:
            hessians[name] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float32)
        hessians[name].addmm_(x.T, x)

    for mname, module in model.named_modules():
        if mname.startswith("blocks.") and isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(
                lambda mod, inp, out, n=mname + ".weight": add(n, inp[0])))
    hooks.append(model.final_norm.register_forward_hook(lambda mod, inp, out: add("tok_emb.weight", out)))
    model.eval()
    with torch.no_grad():
        for row in seqs:
            x = torch.from_numpy(row).view(1, -1)
            model(x, x)
    for hk in hooks:
        hk.remove()
    return {k: v / len(seqs) for k, v in hessians.items()}


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def compare(args):
    import torch
    from safetensors.torch import load_file
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import pgolf_decode
    import sentencepiece as spm
    import importlib.util

    torch.set_num_threads(os.cpu_count() or 1)
    spec = importlib.util.spec_from_file_location("train_gpt", os.path.join(args.challenge, "train_gpt.py"))
    tg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tg)
    rec, rec_sha = load_record(os.path.join(args.record, "train_gpt.py"))
    cfg = json.load(open(os.path.join(args.work, "model", "config.json")))
    ckpt = os.path.join(args.work, "model", "model.safetensors")
    L = cfg["train_seq_len"]
    tokenizer = os.path.join(args.shared, "data/tokenizers/fineweb_1024_bpe.model")
    val_glob = os.path.join(args.work, "val", "fineweb_val_*.bin")
    train_glob = os.path.join(args.work, "train", "fineweb_train_*.bin")
    val = tg.load_validation_tokens(val_glob, L)
    sp = spm.SentencePieceProcessor(model_file=tokenizer)
    luts = tg.build_sentencepiece_luts(sp, cfg["vocab_size"], torch.device("cpu"))

    def new_model():
        return tg.GPT(vocab_size=cfg["vocab_size"], num_layers=cfg["num_layers"], model_dim=cfg["model_dim"],
                      num_heads=cfg["num_heads"], num_kv_heads=cfg["num_kv_heads"], mlp_mult=cfg["mlp_mult"],
                      tie_embeddings=cfg["tie_embeddings"], tied_embed_init_std=0.005,
                      logit_softcap=cfg["logit_softcap"], rope_base=cfg["rope_base"],
                      qk_gain_init=cfg["qk_gain_init"]).float()

    def challenge_bpb(sd):
        m = new_model()
        m.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
        hp = types.SimpleNamespace(val_batch_size=16 * L, train_seq_len=L)
        with torch.no_grad():
            return tg.eval_val(hp, m, 0, 1, torch.device("cpu"), 1, val, *luts)[1]

    def pgolf_bpb(artifact):
        rep = run_json([args.pgolf, "verify", artifact, "--config", os.path.join(args.work, "model", "config.json"),
                        "--val", val_glob, "--tokenizer", tokenizer, "--json"])
        return rep["val_bpb"]

    float_sd = load_file(ckpt)
    report = {"machine": subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True,
                                        text=True).stdout.strip(), "cores": os.cpu_count(),
              "record": os.path.basename(os.path.normpath(args.record)), "record_code_sha256": rec_sha,
              "config": cfg, "parameters": sum(v.numel() for v in float_sd.values()),
              "val_tokens": int(val.numel() - 1), "keep_float_max_numel": KEEP_FLOAT_MAX_NUMEL}
    report["float_bpb"] = challenge_bpb(float_sd)
    rows = []

    def record_run(n_tokens):
        seqs = calibration_tokens(args.work, n_tokens, L)
        m = new_model()
        m.load_state_dict({k: v.float() for k, v in float_sd.items()}, strict=True)
        t0 = time.perf_counter()
        hess = record_hessians(m, seqs)
        h = types.SimpleNamespace(**RECORD_H)
        result, meta = rec["gptq_mixed_quantize"]({k: v.float() for k, v in float_sd.items()}, hess, h)
        tmp = tempfile.mkdtemp(prefix="pq_record_")
        blob = rec["_serialize_pergroup"](result, meta, cfg["num_layers"], tmp)
        seconds = time.perf_counter() - t0
        path = os.path.join(args.work, f"record_{n_tokens}.ptz")
        with open(path, "wb") as f:
            f.write(blob)
        back, back_meta = rec["_deserialize_pergroup"](blob, cfg["num_layers"], tmp)
        deq = rec["dequantize_mixed"](back, back_meta, {k: v.float() for k, v in float_sd.items()})
        try:
            verify = pgolf_bpb(path)
        except subprocess.CalledProcessError as e:
            verify = f"error: {e.stderr.strip().splitlines()[-1] if e.stderr else e}"
        return {"pipeline": "record (GPTQ + SDClip + LQER, pergroup lrzip)", "calib_tokens": len(seqs) * L,
                "bytes": len(blob), "challenge_bpb": challenge_bpb(deq), "pgolf_verify_bpb": verify,
                "seconds": round(seconds, 1), "schemes": collections.Counter(meta.values())}

    def pgolf_run(name, n_tokens, extra, bits=(6, 7)):
        path = os.path.join(args.work, f"pgolf_{name}_{n_tokens}.pglf")
        t0 = time.perf_counter()
        rep = run_json([args.pgolf, "pack", ckpt, "--config", os.path.join(args.work, "model", "config.json"),
                        "-o", path, "--keep-float-max-numel", str(KEEP_FLOAT_MAX_NUMEL), "--scheme", "gptq",
                        "--calibrate", train_glob, "--calib-tokens", str(n_tokens), "--bits", str(bits[0]),
                        "--embed-bits", str(bits[1]), "--k-mlp", "11.5", "--k-attn", "13", "--k-embed", "14", "--k-other", "12.85",
                        "--control-fp16", "--json", *extra])
        seconds = time.perf_counter() - t0
        sd, _ = pgolf_decode.load(path)
        return {"pipeline": f"pgolf pack ({name})", "calib_tokens": n_tokens, "bytes": os.path.getsize(path),
                "challenge_bpb": challenge_bpb(sd), "pgolf_verify_bpb": pgolf_bpb(path),
                "seconds": round(seconds, 1), "bits_upper_bound": bits,
                "rd_choices": [(c["name"], c["bits"], c["k"], c["lqer_rank"]) for c in (rep.get("rd") or {}).get(
                    "choices", [])]}

    lqer = ["--lqer-rank", "4", "--lqer-top-k", "3"]
    n = args.calib_tokens
    r = record_run(n)
    rows.append(r)
    rows.append(pgolf_run("matched: GPTQ + LQER, rANS", n, lqer))
    rows.append(pgolf_run("rd fit at the record's bytes", n, lqer + ["--fit", "rd", "--budget", str(r["bytes"]),
                                                                      "--margin", "0"]))
    rows.append(pgolf_run("rd fit at the record's bytes, up to int8", n, lqer + ["--fit", "rd", "--budget",
                                                                             str(r["bytes"]), "--margin", "0"],
                          bits=(8, 8)))
    rows.append(pgolf_run("rd fit at 95% of the record's bytes", n,
                          lqer + ["--fit", "rd", "--budget", str(int(r["bytes"] * 0.95)), "--margin", "0"]))
    for m in args.calib_sweep:
        rows.append(pgolf_run("calibration sweep", m, lqer))
    for row in rows:
        row["gap"] = row["challenge_bpb"] - report["float_bpb"]
        print(json.dumps(row), flush=True)
    report["rows"] = rows
    with open(os.path.join(args.work, "report.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    print(json.dumps(report, default=str))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=["prepare", "train", "compare"])
    ap.add_argument("--work", required=True)
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--pgolf", default=os.path.join(ROOT, "target/release/pgolf"))
    ap.add_argument("--seconds", type=int, default=1800)
    ap.add_argument("--warmdown", type=int, default=120)
    ap.add_argument("--record")
    ap.add_argument("--challenge")
    ap.add_argument("--calib-tokens", type=int, default=65536)
    ap.add_argument("--calib-sweep", type=lambda s: [int(x) for x in s.split(",") if x], default=[1024, 4096, 16384, 262144])
    args = ap.parse_args()
    {"prepare": prepare, "train": train, "compare": compare}[args.step](args)


if __name__ == "__main__":
    main()
