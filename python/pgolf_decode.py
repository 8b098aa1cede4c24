"""Load a pgolf artifact (docs/FORMAT.md) into a torch state dict. numpy and torch only; small, since a
train_gpt.py that embeds it pays for its bytes. Usage: state_dict, config = load("model.pglf")."""
import hashlib, json, lzma, zlib
import numpy as np
import torch


def _varint(b, p):
    v = s = 0
    while True:
        x = b[p]; p += 1; v |= (x & 127) << s; s += 7
        if x < 128:
            return v, p


def _i8(x):
    return x - 256 if x > 127 else x


def _rans(b):
    n, p = _varint(b, 1)
    if b[0] == 0:
        return np.frombuffer(b, np.int8, n, p)
    lo, hi, sb = _i8(b[p]), _i8(b[p + 1]), b[p + 2]; p += 3
    f = []
    for _ in range(hi - lo + 1):
        v, p = _varint(b, p); f.append(v)
    f = np.array(f, np.int64); c = np.concatenate([[0], np.cumsum(f)[:-1]])
    lut = np.repeat(np.arange(len(f)), f)
    k, p = _varint(b, p); lens = []
    for _ in range(k):
        v, p = _varint(b, p); lens.append(v)
    w = np.frombuffer(b, '<u2', sum(lens), p).astype(np.int64)
    ptr = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    x = (w[ptr] << 16) | w[ptr + 1]; ptr += 2
    out = np.empty(n, np.int64); mask = (1 << sb) - 1
    for j in range(-(-n // k)):
        m = min(k, n - j * k); xs = x[:m]; sl = xs & mask; s = lut[sl]
        xs = f[s] * (xs >> sb) + sl - c[s]
        i = np.nonzero(xs < 65536)[0]
        xs[i] = (xs[i] << 16) | w[ptr[i]]; ptr[i] += 1
        x[:m] = xs; out[j * k:j * k + m] = s + lo
    return out.astype(np.int8)


def _unshuffle(d, k):
    if k <= 1:
        return d
    a = np.frombuffer(d, np.uint8); o = np.empty_like(a); p = 0
    for i in range(k):
        n = len(range(i, len(a), k)); o[i::k] = a[p:p + n]; p += n
    return o.tobytes()


def _span(body, sp):
    raw = body[sp['offset']:sp['offset'] + sp['length']]
    c = sp.get('coding')
    if not c:
        return raw
    name, _, k = c.partition('+shuffle')
    dec = {'zlib': zlib.decompress, 'xz': lzma.decompress}.get(name) or __import__('brotli').decompress
    return _unshuffle(dec(raw), int(k or 1))


def _tensor(body, sp):
    raw = bytearray(_span(body, sp))
    return torch.frombuffer(raw, dtype=getattr(torch, sp['dtype'])).reshape(sp['shape']) if raw else \
        torch.empty(sp['shape'], dtype=getattr(torch, sp['dtype']))


def load(path):
    b = open(path, 'rb').read()
    if b[:4] != b'PGLF' or b[4] != 1:
        raise ValueError(f"{path}: not a version-1 pgolf artifact")
    codec, shuffle, hl = b[5], b[6], int.from_bytes(b[7:11], 'little')
    if hashlib.sha256(b[43:]).digest() != b[11:43]:
        raise ValueError(f"{path}: sha256 mismatch")
    h = json.loads(zlib.decompress(b[43:43 + hl])); body = b[43 + hl:]
    if codec:
        dec = {1: zlib.decompress, 3: lzma.decompress}.get(codec)
        if dec is None:
            dec = __import__('zstandard').ZstdDecompressor().decompress if codec == 2 else __import__('brotli').decompress
        body = _unshuffle(dec(body), shuffle)
    sd = {}
    for t in h['tensors']:
        dtype = getattr(torch, t['orig_dtype'])
        if 'values' in t:
            sd[t['name']] = _tensor(body, t['values']).to(dtype)
            continue
        q = t['symbols']; raw = body[q['offset']:q['offset'] + q['length']]
        q = torch.from_numpy((_rans(raw) if codec == 0 else np.frombuffer(raw, np.int8)).copy()).reshape(t['shape'])
        s = _tensor(body, t['scales']).float()
        s = s.view(-1, *[1] * (q.dim() - 1)) if s.dim() else s
        w = q.float() * s
        if 'lqer' in t:  # W += (qA·sA) @ (qB·sB); asym: one A scale, B scales per group of the flattened B
            qa, sa = _tensor(body, t['lqer_a']).float(), _tensor(body, t['lqer_a_scales']).float()
            qb, sb = _tensor(body, t['lqer_b']).float(), _tensor(body, t['lqer_b_scales']).float()
            a = qa * sa.reshape(-1, 1) if sa.dim() else qa * sa
            b = (qb.reshape(-1, qb.numel() // sb.numel()) * sb.reshape(-1, 1)).reshape(qb.shape)
            w = w + a @ b
        sd[t['name']] = w.to(dtype)
    return sd, h['config']
