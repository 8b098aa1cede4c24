#!/usr/bin/env python3
"""Training throughput: `pgolf train` against PyTorch eager running the challenge's own GPT, Muon and Adam groups
(root train_gpt.py, imported from a checkout) on the same model shape, data, batch and thread count, side by side.

    cargo build --release
    python benches/train_throughput.py --challenge /path/to/parameter-golf [--threads 2] [--steps 20] [--dim 64]

The baseline recipe's shape (9x512, 8 heads over 4 KV heads, seq 1024), on 8 sequences a step:

    python benches/train_throughput.py --challenge ... --dim 512 --layers 9 --heads 8 --kv-heads 4 \
        --seq-len 1024 --batch-tokens 8192 --steps 4

Both sides take the same sequential batches from fixtures/data/sp1024/fineweb_val_000000.bin and run the reference
optimizer split (Adam for the tied embedding and the control tensors, Muon for the block matrices). Prints
tokens/s for both, each timed after one warm-up step (pgolf's own training clock from its first step's end to its
last's, validation excluded; the mean of one run before PyTorch's and one after) and the ratio.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--challenge", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--pgolf", default="target/release/pgolf")
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("train_gpt", os.path.join(args.challenge, "train_gpt.py"))
    tg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tg)
    torch.set_num_threads(args.threads)
    L = args.seq_len
    if args.batch_tokens % L:
        ap.error("--batch-tokens must be a multiple of --seq-len")
    H, KV = args.heads, args.kv_heads
    cfg = dict(vocab_size=1024, num_layers=args.layers, model_dim=args.dim, num_heads=H, num_kv_heads=KV, mlp_mult=2,
               tie_embeddings=True, logit_softcap=30.0, rope_base=10000.0, qk_gain_init=1.5, train_seq_len=L)
    model = tg.GPT(vocab_size=1024, num_layers=args.layers, model_dim=args.dim, num_heads=H, num_kv_heads=KV,
                   mlp_mult=2, tie_embeddings=True, tied_embed_init_std=0.005, logit_softcap=30.0,
                   rope_base=10000.0, qk_gain_init=1.5).float()
    named = list(model.blocks.named_parameters())
    matrices = [p for n, p in named if p.ndim == 2 and not any(c in n for c in tg.CONTROL_TENSOR_NAME_PATTERNS)]
    scalars = [p for n, p in named if p.ndim < 2 or any(c in n for c in tg.CONTROL_TENSOR_NAME_PATTERNS)]
    scalars.append(model.skip_weights)
    opts = [torch.optim.Adam([model.tok_emb.weight], lr=0.05, betas=(0.9, 0.95), eps=1e-8),
            tg.Muon(matrices, lr=0.04, momentum=0.95, backend_steps=5),
            torch.optim.Adam(scalars, lr=0.04, betas=(0.9, 0.95), eps=1e-8)]
    shard = "fixtures/data/sp1024/fineweb_val_000000.bin"
    tokens = torch.from_numpy(np.fromfile(shard, dtype="<u2", offset=1024).astype(np.int64))
    pos = 0
    B = args.batch_tokens

    def step():
        nonlocal pos
        span = tokens[pos:pos + B + 1]
        pos += B + 1
        loss = model(span[:-1].reshape(-1, L), span[1:].reshape(-1, L))
        loss.backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        return float(loss)

    def run_pgolf():
        with tempfile.TemporaryDirectory() as d:
            cpath = os.path.join(d, "cfg.json")
            with open(cpath, "w") as f:
                json.dump(cfg, f)
            cmd = [args.pgolf, "--threads", str(args.threads), "train", "--config", cpath, "--train", shard,
                   "--val", "fixtures/data/sp1024/fineweb_val_000001.bin", "--max-val-tokens", "4096",
                   "--tokenizer", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                                               "tokenizers", "fineweb_1024_bpe.model"),
                   "-o", os.path.join(d, "out"), "--train-batch-tokens", str(B),
                   "--iterations", str(args.steps + 1),
                   "--max-wallclock-seconds", "0", "--val-loss-every", "0", "--train-log-every", "1", "--json"]
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
        # Timed after one warm-up step, as PyTorch is: the training clock at the last step minus at the first.
        steps = [e for e in out["events"] if e.get("event") == "step"]
        assert len(steps) == args.steps + 1, "one step event per iteration"
        return (steps[-1]["train_time_ms"] - steps[0]["train_time_ms"]) / 1000

    # pgolf runs once before PyTorch and once after, so neither side always runs first on a machine whose speed
    # drifts; its time is the mean of the two.
    pg_before = run_pgolf()
    step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        last = step()
    torch_s = time.perf_counter() - t0
    pg_after = run_pgolf()
    pg_s = (pg_before + pg_after) / 2

    n = args.steps * B
    params = sum(p.numel() for p in model.parameters())
    print(f"model {args.layers}x{args.dim} sp1024 {H}/{KV} heads seq {L}, {params} parameters, {args.steps} steps of "
          f"{B} tokens, {args.threads} threads")
    print(f"pytorch  {n / torch_s:8.0f} tokens/s  ({torch_s:.2f} s, last loss {last:.3f})")
    print(f"pgolf    {n / pg_s:8.0f} tokens/s  ({pg_s:.2f} s: {n / pg_before:.0f} before PyTorch, "
          f"{n / pg_after:.0f} after)")
    print(f"ratio    {torch_s / pg_s:.2f}x of PyTorch")

if __name__ == "__main__":
    main()
