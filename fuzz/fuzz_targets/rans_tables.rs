#![no_main]
//! rANS streams with adversarial frequency tables: the input chooses the symbol count, the alphabet, the scale bits
//! and the frequencies (zeros included; they are normalized to sum to 2^scale_bits), the lane count and the lane
//! words. Whatever decodes must be a stream some encoder could have written: re-encoding the symbols decodes to them.
use libfuzzer_sys::fuzz_target;

fn varint(out: &mut Vec<u8>, mut v: u64) {
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

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as u64;
    let min = data[2] as i8;
    let alphabet = (data[3] % 16) as i32 + 1;
    let max = (min as i32 + alphabet - 1).min(127) as i8;
    let sb = (data[4] % 16) as u32 + 1;
    let a = (max as i32 - min as i32 + 1) as usize;
    let raw: Vec<u64> = (0..a).map(|i| *data.get(5 + i).unwrap_or(&1) as u64).collect();
    let total: u64 = raw.iter().sum::<u64>().max(1);
    // Normalize to 2^sb, the remainder to the largest entry.
    let mut freq: Vec<u64> = raw.iter().map(|&f| f * (1 << sb) / total).collect();
    let sum: u64 = freq.iter().sum();
    let (top, _) = raw.iter().enumerate().max_by_key(|&(_, f)| *f).unwrap();
    freq[top] += (1u64 << sb) - sum;
    let rest = data.get(5 + a..).unwrap_or(&[]);
    let k = (rest.first().copied().unwrap_or(1) as u64 % 4).max(1);
    let words = rest.get(1..).unwrap_or(&[]);
    let mut stream = vec![1u8];
    varint(&mut stream, n);
    stream.extend([min as u8, max as u8, sb as u8]);
    for &f in &freq {
        varint(&mut stream, f);
    }
    varint(&mut stream, k);
    let per_lane = (words.len() / 2) / k as usize;
    for _ in 0..k {
        varint(&mut stream, per_lane as u64);
    }
    stream.extend_from_slice(&words[..2 * per_lane * k as usize]);
    if let Ok(symbols) = pgolf::pack::rans::decode(&stream, 1 << 20) {
        let again = pgolf::pack::rans::decode(&pgolf::pack::rans::encode(&symbols), u64::MAX).unwrap();
        assert_eq!(again, symbols);
    }
});
