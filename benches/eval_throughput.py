#!/usr/bin/env python3
"""Evaluation throughput: pgolf's CPU forward against PyTorch eager, same model, same data, same thread count,
side by side in one run.

    cargo build --release
    python benches/eval_throughput.py --challenge /path/to/parameter-golf [--threads 2] [--seqs 16] [--shape baseline]

Builds the challenge's own GPT (imported from the checkout; the baseline shape is 9×512, 8 heads / 4 KV, MLP 2×,
vocab 1024, seq 1024, tied), re-draws its weights, writes them as safetensors, then times
  - PyTorch: the challenge's `eval_val` over --seqs sequences (fp32, CPU, torch.set_num_threads(threads));
  - pgolf:   `pgolf verify` over the same tokens with --threads, reading its own `seconds` (evaluation only).
Prints targets/s for both, the ratio, and the two BPBs (they must agree). Needs torch, sentencepiece, safetensors.
"""
import argparse
import importlib.util
import json
import math
import os
import subprocess
import tempfile
import time
import types

import numpy as np
import torch
from safetensors.torch import save_file

SHAPES = {
    "baseline": dict(vocab_size=1024, num_layers=9, model_dim=512, num_heads=8, num_kv_heads=4, mlp_mult=2,
                     tie_embeddings=True, logit_softcap=30.0, rope_base=10000.0, qk_gain_init=1.5, train_seq_len=1024),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--challenge", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seqs", type=int, default=16)
    ap.add_argument("--shape", default="baseline", choices=sorted(SHAPES))
    ap.add_argument("--pgolf", default="target/release/pgolf")
    ap.add_argument("--mixed", action="store_true",
                    help="also PyTorch under torch.autocast('cpu', torch.bfloat16) and pgolf --precision mixed")
    args = ap.parse_args()

    spec = importlib.util.spec_from_file_location("train_gpt", os.path.join(args.challenge, "train_gpt.py"))
    tg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tg)
    import sentencepiece as spm

    cfg = SHAPES[args.shape]
    L = cfg["train_seq_len"]
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = tg.GPT(vocab_size=cfg["vocab_size"], num_layers=cfg["num_layers"], model_dim=cfg["model_dim"],
                   num_heads=cfg["num_heads"], num_kv_heads=cfg["num_kv_heads"], mlp_mult=cfg["mlp_mult"],
                   tie_embeddings=cfg["tie_embeddings"], tied_embed_init_std=0.005,
                   logit_softcap=cfg["logit_softcap"], rope_base=cfg["rope_base"],
                   qk_gain_init=cfg["qk_gain_init"]).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "skip_weights" not in name and "resid_mix" not in name:
                p.normal_(0.0, 0.5 if "tok_emb" in name else 1.0 / math.sqrt(p.shape[1]))

    tmp = tempfile.mkdtemp(prefix="pgolf-bench-")
    full = tg.load_validation_tokens("fixtures/data/sp1024/fineweb_val_00000*.bin", L)
    n = args.seqs * L + 1
    header = np.zeros(256, dtype="<i4")
    header[0], header[1], header[2] = 20240520, 1, n
    with open(os.path.join(tmp, "fineweb_val_000000.bin"), "wb") as f:
        f.write(header.tobytes())
        f.write(full[:n].numpy().astype("<u2").tobytes())
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, os.path.join(tmp, "model.safetensors"))
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f)

    val = tg.load_validation_tokens(os.path.join(tmp, "fineweb_val_*.bin"), L)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "tokenizers", "fineweb_1024_bpe.model"))
    luts = tg.build_sentencepiece_luts(sp, cfg["vocab_size"], torch.device("cpu"))
    hp = types.SimpleNamespace(val_batch_size=8 * L, train_seq_len=L)
    t0 = time.perf_counter()
    _, torch_bpb = tg.eval_val(hp, model, 0, 1, torch.device("cpu"), 1, val, *luts)
    torch_s = time.perf_counter() - t0

    def pgolf(precision):
        out = subprocess.run([args.pgolf, "--threads", str(args.threads), "verify",
                              os.path.join(tmp, "model.safetensors"), "--config", os.path.join(tmp, "config.json"),
                              "--val", os.path.join(tmp, "fineweb_val_*.bin"),
                              "--tokenizer", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                                                          "tokenizers", "fineweb_1024_bpe.model"),
                              "--batch-seqs", "8", "--precision", precision, "--json"],
                             check=True, capture_output=True, text=True)
        return json.loads(out.stdout)

    r = pgolf("fp32")
    targets = args.seqs * L
    params = sum(p.numel() for p in model.parameters())
    report = {
        "shape": args.shape, "parameters": params, "threads": args.threads, "targets": targets,
        "torch_version": torch.__version__,
        "torch_targets_per_s": targets / torch_s, "pgolf_targets_per_s": r["targets_per_second"],
        "pgolf_over_torch": r["targets_per_second"] / (targets / torch_s),
        "torch_val_bpb": torch_bpb, "pgolf_val_bpb": r["val_bpb"],
        "bpb_rel_diff": abs(r["val_bpb"] - torch_bpb) / torch_bpb,
    }
    if args.mixed:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, torch_mixed_bpb = tg.eval_val(hp, model, 0, 1, torch.device("cpu"), 1, val, *luts)
        torch_mixed_s = time.perf_counter() - t0
        m = pgolf("mixed")
        report.update({
            "torch_bf16_autocast_targets_per_s": targets / torch_mixed_s,
            "pgolf_mixed_targets_per_s": m["targets_per_second"],
            "pgolf_mixed_over_torch_bf16": m["targets_per_second"] / (targets / torch_mixed_s),
            "pgolf_mixed_over_torch_fp32": m["targets_per_second"] / (targets / torch_s),
            "torch_bf16_val_bpb": torch_mixed_bpb, "pgolf_mixed_val_bpb": m["val_bpb"],
            "pgolf_mixed_minus_fp32_bpb": m["val_bpb"] - r["val_bpb"],
        })
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
