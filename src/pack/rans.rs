//! pgolf's static entropy coder: a per-tensor order-0 rANS over int8 symbols, with a compact frequency table and K
//! interleaved lanes (symbol i belongs to lane i mod K) so that a decoder can advance every lane at once — the
//! pure-Python decoder does it with numpy, one vector step per K symbols.
//!
//! Stream layout (all integers little-endian; `varint` = unsigned LEB128):
//! ```text
//! u8      method: 0 = raw (the symbols as bytes follow), 1 = rANS
//! varint  n, the symbol count
//! -- method 1 only --
//! i8 min, i8 max             the alphabet [min, max]
//! u8 scale_bits              frequencies sum to 2^scale_bits (≤ 16)
//! varint × (max − min + 1)   quantized frequency of each symbol (0 = absent)
//! varint K                   lanes
//! varint × K                 16-bit words in each lane
//! u16 × Σ words              each lane's words in decoding order: state high, state low, then renormalisation words
//! ```
//! The state is 32 bits, renormalised 16 bits at a time (L = 2^16), so a decode step reads at most one word.

use std::fmt;

pub const SCALE_BITS: u32 = 15;
const L: u32 = 1 << 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RansError(pub String);

impl fmt::Display for RansError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rANS stream: {}", self.0)
    }
}

impl std::error::Error for RansError {}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, RansError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or_else(|| RansError("truncated".into()))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, RansError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RansError("varint longer than 64 bits".into()))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], RansError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| RansError("truncated".into()))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

/// Lanes for n symbols: one per 16,384 symbols, between 1 and 256.
pub fn lanes_for(n: usize) -> usize {
    (n / 16_384).clamp(1, 256)
}

/// Quantizes symbol counts to frequencies summing to 2^scale_bits, every present symbol at least 1.
pub fn quantize_frequencies(counts: &[u64], scale_bits: u32) -> Vec<u32> {
    let total: u64 = counts.iter().sum();
    let m = 1u64 << scale_bits;
    let mut freq: Vec<u32> = counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0
            } else {
                ((c as f64 * m as f64 / total as f64).round() as u32).max(1)
            }
        })
        .collect();
    // Fix the sum, moving one unit at a time where it costs least (relative to the count it stands for).
    loop {
        let sum: i64 = freq.iter().map(|&f| f as i64).sum();
        let diff = m as i64 - sum;
        if diff == 0 {
            return freq;
        }
        let pick = if diff > 0 {
            (0..freq.len()).filter(|&i| counts[i] > 0).max_by(|&a, &b| {
                let ga = counts[a] as f64 / freq[a] as f64;
                let gb = counts[b] as f64 / freq[b] as f64;
                ga.total_cmp(&gb)
            })
        } else {
            (0..freq.len()).filter(|&i| freq[i] > 1).min_by(|&a, &b| {
                let la = counts[a] as f64 / freq[a] as f64;
                let lb = counts[b] as f64 / freq[b] as f64;
                la.total_cmp(&lb)
            })
        };
        let i = pick.expect("a symbol to adjust");
        if diff > 0 { freq[i] += 1 } else { freq[i] -= 1 }
    }
}

/// Encodes symbols; the raw method is used when it is not larger.
pub fn encode(symbols: &[i8]) -> Vec<u8> {
    let n = symbols.len();
    let mut raw = vec![0u8];
    put_varint(&mut raw, n as u64);
    raw.extend(symbols.iter().map(|&s| s as u8));
    if n == 0 {
        return raw;
    }
    let min = *symbols.iter().min().unwrap();
    let max = *symbols.iter().max().unwrap();
    let a = (max as i32 - min as i32 + 1) as usize;
    let mut counts = vec![0u64; a];
    for &s in symbols {
        counts[(s as i32 - min as i32) as usize] += 1;
    }
    let freq = quantize_frequencies(&counts, SCALE_BITS);
    let mut cum = vec![0u32; a];
    for i in 1..a {
        cum[i] = cum[i - 1] + freq[i - 1];
    }
    let k = lanes_for(n);
    let mut lanes: Vec<Vec<u16>> = Vec::with_capacity(k);
    for lane in 0..k {
        let mut words: Vec<u16> = Vec::new();
        let mut x: u32 = L;
        let count = (n - lane).div_ceil(k);
        for j in (0..count).rev() {
            let s = (symbols[j * k + lane] as i32 - min as i32) as usize;
            let f = freq[s];
            let x_max = ((L >> SCALE_BITS) << 16) * f;
            if x >= x_max {
                words.push((x & 0xffff) as u16);
                x >>= 16;
            }
            x = ((x / f) << SCALE_BITS) + (x % f) + cum[s];
        }
        words.push((x & 0xffff) as u16);
        words.push((x >> 16) as u16);
        words.reverse();
        lanes.push(words);
    }
    let mut out = vec![1u8];
    put_varint(&mut out, n as u64);
    out.push(min as u8);
    out.push(max as u8);
    out.push(SCALE_BITS as u8);
    for &f in &freq {
        put_varint(&mut out, f as u64);
    }
    put_varint(&mut out, k as u64);
    for l in &lanes {
        put_varint(&mut out, l.len() as u64);
    }
    for l in &lanes {
        for w in l {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    if out.len() <= raw.len() { out } else { raw }
}

/// Decodes a stream, checking every bound; `max_symbols` caps the declared count.
pub fn decode(data: &[u8], max_symbols: u64) -> Result<Vec<i8>, RansError> {
    let mut r = Reader { data, pos: 0 };
    let method = r.byte()?;
    let n = r.varint()?;
    if n > max_symbols {
        return Err(RansError(format!(
            "declares {n} symbols, more than the limit of {max_symbols}"
        )));
    }
    let n = n as usize;
    match method {
        0 => Ok(r.bytes(n)?.iter().map(|&b| b as i8).collect()),
        1 => {
            let (min, max) = (r.byte()? as i8, r.byte()? as i8);
            if max < min {
                return Err(RansError("empty alphabet".into()));
            }
            let sb = r.byte()? as u32;
            if !(1..=16).contains(&sb) {
                return Err(RansError(format!("scale bits {sb} outside 1..=16")));
            }
            let a = (max as i32 - min as i32 + 1) as usize;
            let mut freq = Vec::with_capacity(a);
            for _ in 0..a {
                freq.push(
                    u32::try_from(r.varint()?)
                        .map_err(|_| RansError("frequency overflows".into()))?,
                );
            }
            if freq.iter().map(|&f| f as u64).sum::<u64>() != 1u64 << sb {
                return Err(RansError(format!("frequencies do not sum to 2^{sb}")));
            }
            let mut lut = Vec::with_capacity(1 << sb);
            let mut cum = vec![0u32; a];
            for (s, &f) in freq.iter().enumerate() {
                cum[s] = lut.len() as u32;
                lut.extend(std::iter::repeat_n(s as u16, f as usize));
            }
            let k = r.varint()? as usize;
            if k == 0 || k > n.max(1) {
                return Err(RansError(format!("{k} lanes for {n} symbols")));
            }
            let mut lengths = Vec::with_capacity(k);
            for _ in 0..k {
                lengths.push(r.varint()? as usize);
            }
            let mut lanes = Vec::with_capacity(k);
            for &len in &lengths {
                let b = r.bytes(
                    len.checked_mul(2)
                        .ok_or_else(|| RansError("lane length overflows".into()))?,
                )?;
                if len < 2 {
                    return Err(RansError("a lane without its state".into()));
                }
                lanes.push(b);
            }
            let word = |lane: &[u8], i: usize| -> Result<u32, RansError> {
                lane.get(2 * i..2 * i + 2)
                    .map(|w| u16::from_le_bytes([w[0], w[1]]) as u32)
                    .ok_or_else(|| RansError("a lane ran out of words".into()))
            };
            let mut out = vec![0i8; n];
            for (lane, bytes) in lanes.iter().enumerate() {
                let mut x = (word(bytes, 0)? << 16) | word(bytes, 1)?;
                let mut next = 2;
                let mask = (1u32 << sb) - 1;
                let mut i = lane;
                while i < n {
                    let slot = x & mask;
                    let s = lut[slot as usize] as usize;
                    x = freq[s] * (x >> sb) + slot - cum[s];
                    if x < L {
                        x = (x << 16) | word(bytes, next)?;
                        next += 1;
                    }
                    out[i] = (s as i32 + min as i32) as i8;
                    i += k;
                }
                // The encoder starts every lane at L and writes exactly the words the decoder reads: a lane that
                // ends elsewhere, or leaves words unread, was not written by it (a frequency table that disagrees
                // with the stream, say).
                if x != L || next != bytes.len() / 2 {
                    return Err(RansError(format!(
                        "lane {lane} ends in state {x:#x} with {} of {} words read: the stream does not match its \
                         frequency table",
                        next,
                        bytes.len() / 2
                    )));
                }
            }
            Ok(out)
        }
        m => Err(RansError(format!("unknown method {m}"))),
    }
}

/// Bytes of the frequency table and header of an encoded stream (what "plus its tables" counts).
pub fn header_bytes(encoded: &[u8]) -> usize {
    let mut r = Reader {
        data: encoded,
        pos: 0,
    };
    let parse = |r: &mut Reader| -> Result<(), RansError> {
        if r.byte()? != 1 {
            return Ok(());
        }
        r.varint()?;
        let (min, max) = (r.byte()? as i8, r.byte()? as i8);
        r.byte()?;
        for _ in 0..(max as i32 - min as i32 + 1) {
            r.varint()?;
        }
        let k = r.varint()?;
        for _ in 0..k {
            r.varint()?;
        }
        Ok(())
    };
    let _ = parse(&mut r);
    r.pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_small_cases() {
        for syms in [
            vec![],
            vec![5i8],
            vec![-3i8; 1000],
            (0..5000).map(|i| ((i * 7919) % 63 - 31) as i8).collect(),
        ] {
            assert_eq!(decode(&encode(&syms), u64::MAX).unwrap(), syms);
        }
    }

    #[test]
    fn a_frequency_table_that_disagrees_with_the_stream_is_an_error() {
        let syms: Vec<i8> = (0..4000).map(|i| [0i8, 1, 2, 1][i % 4]).collect();
        let good = encode(&syms);
        let mut r = Reader {
            data: &good,
            pos: 0,
        };
        assert_eq!(r.byte().unwrap(), 1, "a rANS stream");
        let n = r.varint().unwrap();
        let (min, max, sb) = (r.byte().unwrap(), r.byte().unwrap(), r.byte().unwrap());
        let freq: Vec<u64> = (0..3).map(|_| r.varint().unwrap()).collect();
        let lanes = &good[r.pos..];
        // Symbol 0 is used by the stream; the table gives it frequency 0 and its share to symbol 2.
        let mut bad = vec![1u8];
        put_varint(&mut bad, n);
        bad.extend([min, max, sb]);
        for f in [0, freq[1], freq[2] + freq[0]] {
            put_varint(&mut bad, f);
        }
        bad.extend_from_slice(lanes);
        let e = decode(&bad, u64::MAX).unwrap_err().to_string();
        assert!(e.contains("does not match its frequency table"), "{e}");
        // The stream with its own table decodes.
        assert_eq!(decode(&good, u64::MAX).unwrap(), syms);
    }

    #[test]
    fn frequencies_sum_to_the_scale() {
        let f = quantize_frequencies(&[1, 0, 1_000_000, 3, 7], 15);
        assert_eq!(f.iter().sum::<u32>(), 1 << 15);
        assert!(f[0] >= 1 && f[1] == 0 && f[3] >= 1);
    }
}
