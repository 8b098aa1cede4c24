#!/usr/bin/env python3
"""Phased LoRA TTT throughput: `pgolf verify --phased-ttt` against the 2026-04-27 record's own `eval_val_ttt_phased`
(PyTorch eager on the CPU, fp32: the record's CUDA autocast is off there) on the same model, documents, knobs, A
draws and thread count, side by side in one run.

    cargo build --release
    python benches/lora_ttt_throughput.py --challenge /path/to/parameter-golf [--shape fixture|full] [--threads 2]

The record's module is loaded as fixtures/generate_records.py loads it (its GPU-only kernels replaced by PyTorch's
reference attention and the plain training paths, the same functions), the model drawn from a seed:
- `fixture`: the 04-27 fixture model (fixtures/records/rec_2026_04_27, 11 layers at width 32, 17 layer passes);
- `full`: the record's own shape (11×512, MLP 4×, sp8192 CaseOps, loops, parallel lanes: the preset's 35,945,671
  parameters), written to a temporary safetensors file with its pgolf config.
The stream is fixtures/records/streams/caseops (5 documents, 6,144 targets, with its byte sidecar). The knobs are the
record's logged ones (rank 80, alpha 144, chunk 48, windows up to 2048, AdamW 1e-4, warm A, global SGD 1e-3) except
what the short stream needs: batches of 2 documents (3 batches), phases after 1, 3 and 5 documents (prefix 2500 is
clamped to the stream's 5, as the record clamps it), global chunks of one sequence (2,048 tokens; 512 for the
fixture's EVAL_SEQ_LEN) so that phases train at all. pgolf replays the record's A draws (--lora-init), so the two
BPBs must agree (≤ 1e-6 relative). pgolf's figure is its own evaluation time (`seconds`: no loading).
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STREAM = os.path.join(ROOT, "fixtures/records/streams/caseops")
KNOBS = dict(ttt_lora_rank=80, ttt_lora_lr=1e-4, ttt_chunk_size=48, ttt_eval_seq_len=2048, ttt_batch_size=2,
             ttt_weight_decay=0.5, ttt_beta1=0.0, ttt_beta2=0.99, ttt_grad_steps=1, phased_ttt_prefix_docs=2500,
             phased_ttt_num_phases=3, global_ttt_lr=1e-3, global_ttt_momentum=0.9, global_ttt_epochs=1,
             global_ttt_batch_seqs=32, global_ttt_grad_clip=1.0)
FULL_ENV = dict(MLP_MULT="4.0", SMEAR_GATE_ENABLED="1", SPARSE_ATTN_GATE_ENABLED="1", SPARSE_ATTN_GATE_SCALE="0.5",
                CASEOPS_ENABLED="1")


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--challenge", required=True)
    ap.add_argument("--shape", choices=["fixture", "full"], default="fixture")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--pgolf", default=os.path.join(ROOT, "target/release/pgolf"))
    args = ap.parse_args()
    os.chdir(ROOT)
    sys.path.insert(0, os.path.join(ROOT, "fixtures"))
    gl = load(os.path.join(ROOT, "fixtures/generate_lora_ttt.py"), "generate_lora_ttt")
    gr = load(os.path.join(ROOT, "fixtures/generate_records.py"), "generate_records")
    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="pgolf_lora_bench_")
    if args.shape == "fixture":
        mod, h, model, val_data, _, _ = gl.setup_0427(args, "pgolf_lora_bench")
        weights = ["--config", "fixtures/records/rec_2026_04_27/config.json"]
        model_path = "fixtures/records/rec_2026_04_27/model.safetensors"
    else:
        importlib.import_module("torch._dynamo")  # as generate_lora_ttt: torch.optim needs the real module
        gr.install_stubs()
        case = next(c for c in gr.CASES if c["name"] == "rec_2026_04_27")
        mod = gr.load_record(args.challenge, case["folder"], FULL_ENV, "lora0427full")
        if getattr(mod, "BOS_ID", 1) is None:
            mod.BOS_ID = 1
        h, model = gr.build_model(mod, "h")
        model = model.float().eval()
        model.looping_active = True
        gr.randomize(model, 4321)
        model_path = os.path.join(tmp, "model.safetensors")
        save_file(gr.export_state(mod, model, h, False), model_path)
        config = os.path.join(tmp, "config.json")
        with open(config, "w") as f:
            json.dump(gr.pgolf_config(h, model, "h"), f)
        weights = ["--config", config]
        h.val_files = os.path.join(STREAM, "fineweb_val_0*.bin")
        h.val_bytes_files = os.path.join(STREAM, "fineweb_val_bytes_*.bin")
        h.tokenizer_path = os.path.join(STREAM, "tokenizer.model")
        h.rank, h.world_size, h.run_id = 0, 1, "pgolf_lora_bench_full"
        val_data = mod.ValidationData(h, torch.device("cpu"))
        model.fused_ce_enabled = False
        for block in model.blocks:
            block.mlp.use_fused = False
    parameters = sum(p.numel() for p in model.parameters())
    knobs = dict(KNOBS, global_ttt_chunk_tokens=h.eval_seq_len)
    gl.set_case(h, knobs)
    draws = gl.capture_draws(mod)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    loss, bpb = mod.eval_val_ttt_phased(h, model, torch.device("cpu"), val_data, model.forward_ttt)
    torch_s = time.perf_counter() - t0
    init = os.path.join(tmp, "lora_init.safetensors")
    save_file(gl.draws_file(draws), init)

    cmd = [args.pgolf, "--threads", str(args.threads), "verify", model_path, *weights,
           "--val", os.path.join(STREAM, "fineweb_val_0*.bin"),
           "--byte-sidecar", os.path.join(STREAM, "fineweb_val_bytes_*.bin"),
           "--tokenizer", os.path.join(STREAM, "tokenizer.model"), "--phased-ttt", "--lora-init", init,
           "--eval-seq-len", str(h.eval_seq_len), "--json"]
    for k, v in knobs.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
    n = out["targets"]
    rel = abs(out["val_bpb"] - bpb) / bpb
    result = dict(shape=args.shape, parameters=parameters, threads=args.threads, targets=n,
                  batches=out["receipts"]["count"] - 3, torch_seconds=torch_s, pgolf_seconds=out["seconds"],
                  torch_targets_per_s=n / torch_s, pgolf_targets_per_s=n / out["seconds"],
                  ratio=torch_s / out["seconds"], torch_val_bpb=bpb, pgolf_val_bpb=out["val_bpb"], bpb_rel_diff=rel)
    print(f"shape {args.shape}: {parameters:,} parameters, {n} targets, {args.threads} threads")
    print(f"pytorch  {n / torch_s:8.1f} targets/s  ({torch_s:.2f} s)  val_bpb {bpb:.8f}")
    print(f"pgolf    {n / out['seconds']:8.1f} targets/s  ({out['seconds']:.2f} s)  val_bpb {out['val_bpb']:.8f}")
    print(f"ratio    {torch_s / out['seconds']:.2f}x of PyTorch; BPB relative difference {rel:.1e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
