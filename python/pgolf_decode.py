"""pgolf artifact -> torch state dict (docs/FORMAT.md): sd, config = load(path). Needs numpy, torch."""  #:doc
# Tags mark what only some artifacts need; `pgolf pack --decoder-out` cuts the rest (src/pack/decoder.rs).  #:doc
import hashlib, json, zlib
import lzma  #:xz
import numpy as np, torch
#{rans


def _v(b, p):
    v = s = 0
    while 1:
        x = b[p]; p += 1; v |= (x & 127) << s; s += 7
        if x < 128: return v, p


def _vs(b, p, n):
    o = []
    for _ in range(n): x, p = _v(b, p); o.append(x)
    return np.array(o, np.int64), p


def _rans(b):
    n, p = _v(b, 1)
    if not b[0]: return np.frombuffer(b, np.int8, n, p)
    lo, hi, sb = (b[p] ^ 128) - 128, (b[p + 1] ^ 128) - 128, b[p + 2]
    f, p = _vs(b, p + 3, hi - lo + 1); c = np.cumsum(f) - f; lut = np.repeat(np.arange(len(f)), f)
    k, p = _v(b, p); ln, p = _vs(b, p, k)
    w = np.frombuffer(b, '<u2', ln.sum(), p).astype(np.int64); t = np.cumsum(ln) - ln
    x = w[t] << 16 | w[t + 1]; t += 2; o = np.empty(n, np.int64); m = (1 << sb) - 1
    for j in range(0, n, k):
        r = min(k, n - j); y = x[:r]; l = y & m; s = lut[l]; y = f[s] * (y >> sb) + l - c[s]
        i = np.nonzero(y < 65536)[0]; y[i] = y[i] << 16 | w[t[i]]; t[i] += 1; x[:r] = y; o[j:j + r] = s + lo
    return o.astype(np.int8)
#}
#{span_shuffle|body_shuffle


def _un(d, k):
    if k < 2: return d
    a = np.frombuffer(d, np.uint8); o = np.empty_like(a); p = 0
    for i in range(k): n = len(a[i::k]); o[i::k] = a[p:p + n]; p += n
    return o.tobytes()
#}
#{coded|body


def _dec(c):
    if c == 'zlib': return zlib.decompress  #:zlib
    if c == 'xz': return lzma.decompress  #:xz
    if c == 'zstd': return __import__('zstandard').ZstdDecompressor().decompress  #:zstd
    return __import__('brotli').decompress  #:brotli
#}


def _sp(body, s):
    r = body[s['offset']:s['offset'] + s['length']]
    c, _, k = (s.get('coding') or '').partition('+shuffle')  #:coded
    if c: r = _dec(c)(r)  #:coded
    if k: r = _un(r, int(k))  #:span_shuffle
    return r


def _t(body, s):
    r, d = bytearray(_sp(body, s)), getattr(torch, s['dtype'])
    return (torch.frombuffer(r, dtype=d) if r else torch.empty(0, dtype=d)).reshape(s['shape'])


def load(path):
    b = open(path, 'rb').read()
    if b[:5] != b'PGLF\1': raise ValueError(f"{path}: not a version-1 pgolf artifact")
    cd, hl = b[5], int.from_bytes(b[7:11], 'little')
    if cd > 4: raise ValueError(f"{path}: unknown codec {cd}")
    if hashlib.sha256(b[43:]).digest() != b[11:43]: raise ValueError(f"{path}: sha256 mismatch")
    h = json.loads(zlib.decompress(b[43:43 + hl])); body = b[43 + hl:]
    if cd: body = _dec(['', 'zlib', 'zstd', 'xz', 'brotli'][cd])(body)  #:body
    if cd and b[6] > 1: body = _un(body, b[6])  #:body_shuffle
    sd = {}
    for t in h['tensors']:
        if 'values' in t: w = _t(body, t['values'])
        else:
            q = t['symbols']; r = body[q['offset']:q['offset'] + q['length']]
            q = torch.tensor(_rans(r) if cd == 0 else np.frombuffer(r, np.int8)).reshape(t['shape']).float()
            s = _t(body, t['scales']).float(); w = q * (s.view(-1, *[1] * (q.dim() - 1)) if s.dim() else s)
            #{lqer
            if 'lqer' in t:  # W += (qA*sA) @ (qB*sB); asym: one A scale, B scales per group of the flattened B
                a, sa, qb, sb = (_t(body, t['lqer_' + k]).float() for k in ('a', 'a_scales', 'b', 'b_scales'))
                w = w + (a * (sa.reshape(-1, 1) if sa.dim() else sa)) @ \
                    (qb.reshape(-1, qb.numel() // sb.numel()) * sb.reshape(-1, 1)).reshape(qb.shape)
            #}
        sd[t['name']] = w.to(getattr(torch, t['orig_dtype']))
    return sd, h['config']
