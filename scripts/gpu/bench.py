#!/usr/bin/env python3
"""The H100 benchmark (issue 9): pgolf's CUDA build against PyTorch on the same GPU, side by side in one run.

    bash scripts/gpu/run.sh python3 scripts/gpu/bench.py --challenge DIR [--shape baseline|sota|all]
         [--targets N] [--ttt-targets N] [--precision mixed|fp32] [--out FILE]

DIR is a checkout of openai/parameter-golf (its root train_gpt.py is imported for the model; carry it to the GPU
machine as an ignored folder, e.g. .cache/parameter-golf). Shapes:
  baseline  9×512, 8 heads / 4 KV, MLP 2×, sp1024, seq 1024, tied (17M parameters)
  sota      11×512, 8 heads / 4 KV, MLP 4×, sp8192, seq 2048, tied (36M parameters)
For each shape the challenge's GPT gets random weights, which are written as safetensors for pgolf; the validation
stream is the fixture tokens of that vocabulary repeated to --targets (speed does not depend on the text; both sides
score the same tokens, so their BPBs must agree). Two measurements per side:
  - sliding-window evaluation, stride 64, --batch-seqs windows per forward (the records' eval_val_sliding);
  - score-first TTT, the records' recipe (chunks of 32,768 targets, 3 epochs of SGD lr 0.002 momentum 0.9 on
    batches of 32 sequences, clip 1.0, cosine across chunks) over --ttt-targets.
PyTorch runs eager (`--compile` for torch.compile) under torch.autocast(bfloat16) for --precision mixed, with
F.scaled_dot_product_attention as the challenge's model calls it. pgolf runs `verify --device cuda --precision P`
and reports its own evaluation seconds (no loading).

Reported per shape and mode: targets/s for both, the ratio, model FLOP utilisation against the H100's 989 TFLOP/s
dense bf16 (forward 2·N_matmul + 2·layers·L·d per processed token: causal attention's useful work; training 3×
forward), the two BPBs, and the projection of the full validation set (62,021,632 targets for sp1024, 40,540,160
for sp8192) to seconds: the goal is sliding + TTT ≤ 600 s on one H100.
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
import sentencepiece as spm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H100_BF16_DENSE = 989e12
FULL_TARGETS = {1024: 62_021_632, 8192: 40_540_160}
SHAPES = {
    "baseline": dict(vocab_size=1024, num_layers=9, model_dim=512, num_heads=8, num_kv_heads=4, mlp_mult=2,
                     tie_embeddings=True, logit_softcap=30.0, rope_base=10000.0, qk_gain_init=1.5,
                     train_seq_len=1024),
    "sota": dict(vocab_size=8192, num_layers=11, model_dim=512, num_heads=8, num_kv_heads=4, mlp_mult=4,
                 tie_embeddings=True, logit_softcap=30.0, rope_base=10000.0, qk_gain_init=1.5, train_seq_len=2048),
}
FIXTURE_TOKENS = {1024: "fixtures/data/sp1024/fineweb_val_*.bin", 8192: "fixtures/models/val_sp8192/fineweb_val_*.bin"}
STRIDE = 64
TTT = dict(chunk=32_768, epochs=3, lr=0.002, momentum=0.9, batch_seqs=32, clip=1.0)


class PerTokenLoss:
    """Stands in for `train_gpt.F` while scoring: torch.nn.functional with an unreduced cross_entropy."""

    def __getattr__(self, name):
        return getattr(F, name)

    def cross_entropy(self, logits, targets, reduction="mean"):
        return F.cross_entropy(logits, targets, reduction="none")


DEVICE = "cuda"


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class TorchSide:
    def __init__(self, tg, model, tokens, luts, L, batch, autocast):
        self.tg, self.model, self.tokens, self.L, self.batch = tg, model, tokens, L, batch
        self.base, self.space, self.boundary = luts
        self.autocast = autocast

    def nll(self, x, y):
        saved = self.tg.F
        self.tg.F = PerTokenLoss()
        try:
            with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=self.autocast):
                return self.model(x, y).reshape(x.shape).double()
        finally:
            self.tg.F = saved

    def windows(self, lo, hi):
        """Window starts whose first scored target lies in [lo, hi), as the records' sliding evaluation."""
        T, L = self.tokens.numel() - 1, self.L
        ctx = L - STRIDE
        return [ws for ws in range(0, T, STRIDE) if ws + ctx < T and lo <= (0 if ws == 0 else ws + ctx) < hi]

    def score(self, starts):
        T, L = self.tokens.numel() - 1, self.L
        ctx = L - STRIDE
        loss, count, nbytes = 0.0, 0, 0
        for b in range(0, len(starts), self.batch):
            batch = starts[b:b + self.batch]
            x = torch.zeros(len(batch), L, dtype=torch.int64, device=DEVICE)
            y = torch.zeros_like(x)
            mask = torch.zeros(len(batch), L, dtype=torch.bool, device=DEVICE)
            for i, ws in enumerate(batch):
                we = min(ws + L, T)
                x[i, :we - ws] = self.tokens[ws:we]
                y[i, :we - ws] = self.tokens[ws + 1:we + 1]
                mask[i, 0 if ws == 0 else ctx:we - ws] = True
            nll = self.nll(x, y)
            tb = self.base[y].long() + (self.space[y] & ~self.boundary[x]).long()
            loss += float(nll[mask].sum())
            count += int(mask.sum())
            nbytes += int(tb[mask].sum())
        return loss, count, nbytes

    def sliding(self):
        sync()
        t0 = time.perf_counter()
        loss, count, nbytes = self.score(self.windows(0, self.tokens.numel()))
        sync()
        return dict(seconds=time.perf_counter() - t0, targets=count, val_bpb=loss / math.log(2) / nbytes,
                    windows=len(self.windows(0, self.tokens.numel())))

    def ttt(self):
        T, L, K = self.tokens.numel() - 1, self.L, TTT["chunk"]
        chunks = (T + K - 1) // K
        params = [p for p in self.model.parameters()]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.SGD(params, lr=TTT["lr"], momentum=TTT["momentum"])
        loss, count, nbytes, trained = 0.0, 0, 0, 0
        sync()
        t0 = time.perf_counter()
        for ci in range(chunks):
            lo, hi = ci * K, min((ci + 1) * K, T)
            self.model.eval()
            l_, c_, b_ = self.score(self.windows(lo, hi if ci < chunks - 1 else T + 1))
            loss, count, nbytes = loss + l_, count + c_, nbytes + b_
            n = (hi - lo) // L
            if ci == chunks - 1 or n == 0:
                continue
            self.model.train()
            for g in opt.param_groups:
                g["lr"] = TTT["lr"] * 0.5 * (1.0 + math.cos(math.pi * ci / max(chunks - 1, 1)))
            for _ in range(TTT["epochs"]):
                for s in range(0, n, TTT["batch_seqs"]):
                    e = min(s + TTT["batch_seqs"], n)
                    local = self.tokens[lo + s * L:lo + e * L + 1]
                    opt.zero_grad(set_to_none=True)
                    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=self.autocast):
                        out = self.model(local[:-1].reshape(-1, L), local[1:].reshape(-1, L))
                    out.backward()
                    torch.nn.utils.clip_grad_norm_(params, TTT["clip"])
                    opt.step()
                    trained += (e - s) * L
        sync()
        return dict(seconds=time.perf_counter() - t0, targets=count, trained_tokens=trained,
                    val_bpb=loss / math.log(2) / nbytes)


def matmul_params(cfg):
    d, hd = cfg["model_dim"], cfg["model_dim"] // cfg["num_heads"]
    kv = cfg["num_kv_heads"] * hd
    per_layer = d * d * 2 + d * kv * 2 + 2 * d * d * cfg["mlp_mult"]
    return cfg["num_layers"] * per_layer + cfg["vocab_size"] * d


def forward_flops_per_token(cfg, L):
    return 2 * matmul_params(cfg) + 2 * cfg["num_layers"] * L * cfg["model_dim"]


def side_by_side(t, p, flops, vocab, **extra):
    """PyTorch's run `t` and pgolf's report `p` of the same work (`flops` model FLOPs): rates, MFU, BPBs, and the
    full validation set projected to seconds."""
    torch_rate = t["targets"] / t["seconds"]
    pgolf_rate = p["targets_per_second"]
    return dict(
        targets=t["targets"], **extra, torch_targets_per_s=torch_rate, pgolf_targets_per_s=pgolf_rate,
        pgolf_over_torch=pgolf_rate / torch_rate,
        torch_mfu=flops / t["seconds"] / H100_BF16_DENSE, pgolf_mfu=flops / p["seconds"] / H100_BF16_DENSE,
        torch_val_bpb=t["val_bpb"], pgolf_val_bpb=p["val_bpb"],
        bpb_rel_diff=abs(p["val_bpb"] - t["val_bpb"]) / t["val_bpb"],
        torch_full_val_seconds=FULL_TARGETS[vocab] / torch_rate, pgolf_full_val_seconds=FULL_TARGETS[vocab] / pgolf_rate)


def run_pgolf(pgolf, tmp, cfg, tokenizer, precision, batch, extra):
    cmd = [pgolf, "verify", os.path.join(tmp, "model.safetensors"), "--config", os.path.join(tmp, "config.json"),
           "--val", os.path.join(tmp, "fineweb_val_*.bin"), "--tokenizer", tokenizer, "--stride", str(STRIDE),
           "--batch-seqs", str(batch), "--device", DEVICE, "--precision", precision, "--json", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\nexit {p.returncode}\n{p.stderr}")
    return json.loads(p.stdout)


def write_stream(tg, tmp, vocab, n_targets):
    base = tg.load_validation_tokens(os.path.join(ROOT, FIXTURE_TOKENS[vocab]), 1)
    reps = (n_targets + 1 + base.numel() - 1) // base.numel()
    stream = base.repeat(reps)[:n_targets + 1]
    header = np.zeros(256, dtype="<i4")
    header[0], header[1], header[2] = 20240520, 1, stream.numel()
    for f in os.listdir(tmp):
        if f.startswith("fineweb_val_"):
            os.remove(os.path.join(tmp, f))
    with open(os.path.join(tmp, "fineweb_val_000000.bin"), "wb") as f:
        f.write(header.tobytes())
        f.write(stream.numpy().astype("<u2").tobytes())
    return stream


def bench_shape(args, tg, name):
    cfg = SHAPES[name]
    L, V = cfg["train_seq_len"], cfg["vocab_size"]
    torch.manual_seed(0)
    model = tg.GPT(vocab_size=V, num_layers=cfg["num_layers"], model_dim=cfg["model_dim"],
                   num_heads=cfg["num_heads"], num_kv_heads=cfg["num_kv_heads"], mlp_mult=cfg["mlp_mult"],
                   tie_embeddings=cfg["tie_embeddings"], tied_embed_init_std=0.005,
                   logit_softcap=cfg["logit_softcap"], rope_base=cfg["rope_base"],
                   qk_gain_init=cfg["qk_gain_init"]).float()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.ndim == 2 and "skip_weights" not in pname and "resid_mix" not in pname:
                p.normal_(0.0, 0.5 if "tok_emb" in pname else 1.0 / math.sqrt(p.shape[1]))
    tmp = tempfile.mkdtemp(prefix=f"pgolf-gpu-bench-{name}-")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              os.path.join(tmp, "model.safetensors"))
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f)
    tokenizer = os.path.join(args.tokenizers, f"fineweb_{V}_bpe.model")
    sp = spm.SentencePieceProcessor(model_file=tokenizer)
    luts = tg.build_sentencepiece_luts(sp, V, torch.device(DEVICE))
    params = sum(p.numel() for p in model.parameters())
    model = model.to(DEVICE)
    if args.compile:
        model = torch.compile(model)
    autocast = args.precision == "mixed"
    fwd = forward_flops_per_token(cfg, L)
    report = dict(shape=name, parameters=params, seq_len=L, vocab=V, stride=STRIDE, precision=args.precision,
                  batch_seqs=args.batch_seqs, forward_flops_per_token=fwd)

    stream = write_stream(tg, tmp, V, args.targets)
    side = TorchSide(tg, model, stream.to(DEVICE, torch.int64), luts, L, args.batch_seqs, autocast)
    side.score(side.windows(0, STRIDE * args.batch_seqs))  # warm-up (kernels, allocator), not timed
    t = side.sliding()
    try:
        p = run_pgolf(args.pgolf, tmp, cfg, tokenizer, args.precision, args.batch_seqs, [])
        report["sliding"] = side_by_side(t, p, t["windows"] * L * fwd, V)
    except RuntimeError as e:  # keep the other measurements (a run out of GPU memory, say)
        report["sliding"] = dict(error=str(e)[-2000:], torch_targets_per_s=t["targets"] / t["seconds"])

    stream = write_stream(tg, tmp, V, args.ttt_targets)
    side = TorchSide(tg, model, stream.to(DEVICE, torch.int64), luts, L, args.batch_seqs, autocast)
    t = side.ttt()
    try:
        p = run_pgolf(args.pgolf, tmp, cfg, tokenizer, args.precision, args.batch_seqs,
                      ["--ttt", "--ttt-chunk-tokens", str(TTT["chunk"]), "--ttt-epochs", str(TTT["epochs"]),
                       "--ttt-lr", str(TTT["lr"]), "--ttt-momentum", str(TTT["momentum"]),
                       "--ttt-batch-seqs", str(TTT["batch_seqs"]), "--ttt-grad-clip", str(TTT["clip"]),
                       "--ttt-micro-batch", str(args.ttt_micro_batch)])
    except RuntimeError as e:
        report["ttt"] = dict(error=str(e)[-2000:], torch_targets_per_s=t["targets"] / t["seconds"])
        return report
    windows = len(side.windows(0, stream.numel()))
    report["ttt"] = side_by_side(t, p, windows * L * fwd + 3 * fwd * t["trained_tokens"], V,
                                 trained_tokens=t["trained_tokens"])
    return report


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--challenge", required=True)
    ap.add_argument("--shared")
    ap.add_argument("--shape", default="all", choices=["all", *sorted(SHAPES)])
    ap.add_argument("--targets", type=int, default=262_144, help="targets scored by the sliding benchmark")
    ap.add_argument("--ttt-targets", type=int, default=131_072, help="targets (4 chunks) of the TTT benchmark")
    ap.add_argument("--batch-seqs", type=int, default=32)
    ap.add_argument("--ttt-micro-batch", type=int, default=8)
    ap.add_argument("--precision", default="mixed", choices=["mixed", "fp32"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--pgolf", default=os.environ.get("PGOLF"))
    ap.add_argument("--out")
    ap.add_argument("--ttt-chunk", type=int, default=TTT["chunk"])
    ap.add_argument("--device", default="cuda", help="cpu: a small smoke run of this script where there is no GPU")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    TTT["chunk"] = args.ttt_chunk
    if not args.pgolf:
        raise SystemExit("bench.py: no pgolf binary: run it through scripts/gpu/run.sh or pass --pgolf")
    # The tokenizers: --shared's data/tokenizers, else the repository's fixtures.
    args.tokenizers = (os.path.join(args.shared, "data", "tokenizers") if args.shared
                       else os.path.join(ROOT, "fixtures", "tokenizers"))
    spec = importlib.util.spec_from_file_location("train_gpt", os.path.join(args.challenge, "train_gpt.py"))
    tg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tg)
    shapes = sorted(SHAPES) if args.shape == "all" else [args.shape]
    out = dict(device=torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu", torch_version=torch.__version__,
               reports=[bench_shape(args, tg, s) for s in shapes])
    text = json.dumps(out, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
