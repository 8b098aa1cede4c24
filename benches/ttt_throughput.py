#!/usr/bin/env python3
"""Score-first TTT throughput: pgolf against PyTorch eager running the same recipe on the same model, data and
thread count, side by side in one run.

    cargo build --release
    python benches/ttt_throughput.py --challenge /path/to/parameter-golf [--threads 2] [--case tied_w1]

The PyTorch side is `fixtures/generate_ttt.py`'s implementation of the records' recipe (the challenge's own GPT);
the pgolf side is `pgolf verify --ttt` with the same knobs, reading its own `seconds` (evaluation only, no loading).
Prints targets/s for both, the ratio, and the two BPBs (they must agree to 1e-5).
"""
import argparse
import importlib.util
import json
import os
import subprocess
import time

import sentencepiece as spm
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--challenge", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--case", default="tied_w1")
    ap.add_argument("--pgolf", default="target/release/pgolf")
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("gen", "fixtures/generate_ttt.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    tg = gen.load_challenge(args.challenge)
    case = next(c for c in gen.CASES if c["name"] == args.case)
    torch.set_num_threads(args.threads)
    glob = "fixtures/ttt/val_sp1024/fineweb_val_*.bin"
    tokens = tg.load_validation_tokens(glob, case["seq_len"])
    sp = spm.SentencePieceProcessor(model_file=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "tokenizers", "fineweb_1024_bpe.model"))
    luts = tg.build_sentencepiece_luts(sp, 1024, torch.device("cpu"))
    model = gen.build_model(tg, "fixtures/models", case["model"])
    t0 = time.perf_counter()
    ref = gen.score_first_ttt(tg, model, tokens, luts, case)
    torch_s = time.perf_counter() - t0

    m = case["model"]
    cmd = [args.pgolf, "--threads", str(args.threads), "verify", f"fixtures/models/{m}.safetensors",
           "--config", f"fixtures/models/{m}.json", "--val", glob,
           "--tokenizer", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "tokenizers", "fineweb_1024_bpe.model"),
           "--stride", str(case["stride"]), "--ttt", "--ttt-chunk-tokens", str(case["chunk"]),
           "--ttt-epochs", str(case["epochs"]), "--ttt-lr", str(case["lr"]), "--ttt-batch-seqs",
           str(case["batch_seqs"]), "--ttt-freeze-blocks", str(case["freeze"]), "--world-size", str(case["world"]),
           "--json"]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
    n = ref["targets"]
    print(f"case {args.case}: {n} targets, {ref['steps']} optimizer steps, {args.threads} threads")
    print(f"pytorch  {n / torch_s:8.0f} targets/s  ({torch_s:.2f} s)  val_bpb {ref['val_bpb']:.8f}")
    print(f"pgolf    {n / out['seconds']:8.0f} targets/s  ({out['seconds']:.2f} s)  val_bpb {out['val_bpb']:.8f}")
    print(f"ratio    {torch_s / out['seconds']:.2f}x of PyTorch; |Δbpb| {abs(out['val_bpb'] - ref['val_bpb']):.2e}")


if __name__ == "__main__":
    main()
