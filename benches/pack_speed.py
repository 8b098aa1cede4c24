#!/usr/bin/env python3
"""How long `pgolf pack --scheme gptq` takes on a SOTA-size checkpoint (issue 19: goal ≤ 5 minutes on 2 cores).

    python benches/pack_speed.py --challenge DIR [--calib-tokens N] [--pgolf target/release/pgolf]

Builds the challenge's GPT (DIR/train_gpt.py) at the SOTA-class shape (11×512, 8 heads / 4 KV, MLP 4×, sp8192, seq
2048, tied: 36M parameters) with random weights (timing does not depend on them), writes a stand-in training shard
of the sp8192 fixture tokens repeated, runs pack with calibration, GPTQ and the default coder, and prints pgolf's
stage seconds (calibration, quantization with LQER on the top 3 matrices at rank 4 by default, coding) and the total wall clock. Needs torch, safetensors, numpy.
"""
import argparse
import importlib.util
import json
import math
import os
import subprocess
import tempfile
import time

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = dict(vocab_size=8192, num_layers=11, model_dim=512, num_heads=8, num_kv_heads=4, mlp_mult=4, tie_embeddings=True,
           logit_softcap=30.0, rope_base=10000.0, qk_gain_init=1.5, train_seq_len=2048)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--challenge", required=True)
    ap.add_argument("--calib-tokens", type=int, default=65_536)
    ap.add_argument("--lqer-rank", type=int, default=4, help="LQER rank (the 04-27 record's 4; 0: off)")
    ap.add_argument("--lqer-top-k", type=int, default=3)
    ap.add_argument("--pgolf", default=os.path.join(ROOT, "target/release/pgolf"))
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("train_gpt", os.path.join(args.challenge, "train_gpt.py"))
    tg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tg)
    torch.manual_seed(0)
    c = CFG
    model = tg.GPT(vocab_size=c["vocab_size"], num_layers=c["num_layers"], model_dim=c["model_dim"],
                   num_heads=c["num_heads"], num_kv_heads=c["num_kv_heads"], mlp_mult=c["mlp_mult"],
                   tie_embeddings=True, tied_embed_init_std=0.005, logit_softcap=c["logit_softcap"],
                   rope_base=c["rope_base"], qk_gain_init=c["qk_gain_init"]).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "skip_weights" not in name and "resid_mix" not in name:
                p.normal_(0.0, 0.5 if "tok_emb" in name else 1.0 / math.sqrt(p.shape[1]))
    tmp = tempfile.mkdtemp(prefix="pgolf-pack-speed-")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, os.path.join(tmp, "model.safetensors"))
    json.dump(c, open(os.path.join(tmp, "config.json"), "w"))
    src = np.fromfile(os.path.join(ROOT, "fixtures/models/val_sp8192/fineweb_val_000000.bin"), dtype="<u2", offset=1024)
    toks = np.tile(src, args.calib_tokens // len(src) + 1)[:args.calib_tokens]
    header = np.zeros(256, dtype="<i4")
    header[0], header[1], header[2] = 20240520, 1, len(toks)
    with open(os.path.join(tmp, "fineweb_train_000000.bin"), "wb") as f:
        f.write(header.tobytes())
        f.write(toks.astype("<u2").tobytes())
    params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    out = subprocess.run([args.pgolf, "pack", os.path.join(tmp, "model.safetensors"), "--config",
                          os.path.join(tmp, "config.json"), "-o", os.path.join(tmp, "out.pglf"), "--scheme", "gptq",
                          "--calibrate", os.path.join(tmp, "fineweb_train_*.bin"), "--calib-tokens",
                          str(args.calib_tokens), "--lqer-rank", str(args.lqer_rank), "--lqer-top-k",
                          str(args.lqer_top_k), "--json"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    r = json.loads(out.stdout)
    print(json.dumps(dict(parameters=params, calib_tokens=args.calib_tokens, lqer_rank=args.lqer_rank,
                          lqer_top_k=args.lqer_top_k, wall_seconds=wall,
                          stage_seconds=r["stage_seconds"], artifact_bytes=r["size"]["artifact_bytes"],
                          cpus=os.cpu_count()), indent=1))


if __name__ == "__main__":
    main()
