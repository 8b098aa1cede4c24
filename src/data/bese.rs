//! Seed 002's BESE tokenizer (PR #1666, `bese_constants.py` + `bese_fast_bpe.py` + `tokenizer.json`;
//! architectures §2.3): a 40-token base alphabet and 248 BPE merges, encoded with the seed's own `encode_fast`.
//!
//! Base ids: 0 PAD, 1 BOS, 2 EOS, 3 UNK; 4..=14 the letters "etaoinsrhdl"; 15..=18 the groups "ufbz", "cwvj",
//! "mykx", "gpq" (a grouped letter is [group, 19 + its index in the group]); 23 ' ', 24 '.', 25 ',', 26 '\n',
//! 27 '?', 28 quotes, 29 OTHER_PUNCT, 30..=39 digits. A character is lower-cased and mapped when the mapping's bytes
//! equal its UTF-8 length, else it becomes OTHER_PUNCT once per UTF-8 byte: case is discarded and most punctuation
//! merged, so the tokenizer is not invertible.
//!
//! `encode_fast` applies merges from a heap of (rank, position, pair) over a linked list; a stale entry is checked
//! only against `tokens[pos]` and `tokens[next[pos]]`, so an entry at a node already merged away can still fire.
//! This port keeps that behaviour, which differs from rank-ordered sequential BPE on some inputs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};

use super::{DataError, Result};

pub const BESE_BASE_VOCAB: usize = 40;
const SINGLE_LETTERS: &str = "etaoinsrhdl";
const GROUPS: [&str; 4] = ["ufbz", "cwvj", "mykx", "gpq"];
const GROUP_START: u16 = 15;
const POS_START: u16 = 19;
const SPACE: u16 = 23;
const PERIOD: u16 = 24;
const COMMA: u16 = 25;
const NEWLINE: u16 = 26;
const QUESTION: u16 = 27;
const QUOTE: u16 = 28;
pub const OTHER_PUNCT: u16 = 29;
const DIGIT_START: u16 = 30;

#[derive(Clone, Debug)]
pub struct BeseModel {
    pub path: PathBuf,
    /// ((a, b), new id), in rank order.
    pub merges: Vec<((u16, u16), u16)>,
    /// `_build_merge_priority`: pair → (rank, new id); a repeated pair keeps its last rank, as a dict does.
    priority: HashMap<(u16, u16), (u32, u16)>,
    /// Bytes each id stands for: the base table, and bytes(a) + bytes(b) for a merge.
    pub bytes: Vec<u16>,
    /// Base ids each id expands to.
    expansion: Vec<Vec<u16>>,
}

#[derive(serde::Deserialize)]
struct TokenizerJson {
    tokenizer_type: String,
    base_vocab_size: usize,
    vocab_size: usize,
    merges: Vec<((u16, u16), u16)>,
}

/// The base ids of one lower-cased character, if the alphabet has it.
fn base_ids(ch: char) -> Option<Vec<u16>> {
    if let Some(i) = SINGLE_LETTERS.find(ch) {
        return Some(vec![4 + i as u16]);
    }
    for (g, group) in GROUPS.iter().enumerate() {
        if let Some(p) = group.find(ch) {
            return Some(vec![GROUP_START + g as u16, POS_START + p as u16]);
        }
    }
    Some(vec![match ch {
        ' ' => SPACE,
        '.' => PERIOD,
        ',' => COMMA,
        '\n' => NEWLINE,
        '?' => QUESTION,
        '\'' | '"' | '\u{2018}' | '\u{2019}' | '\u{201c}' | '\u{201d}' => QUOTE,
        '0'..='9' => DIGIT_START + (ch as u16 - '0' as u16),
        _ => return None,
    }])
}

/// `BYTES_PER_TOKEN` of the base alphabet: letters, positions, punctuation and digits 1; specials and groups 0.
fn base_bytes(id: u16) -> u16 {
    match id {
        4..=14 | 19..=22 | 23..=39 => 1,
        _ => 0,
    }
}

/// The characters the base ids stand for when decoding (OTHER_PUNCT and the quotes come back as '?' and '\'').
fn base_char(ids: &[u16]) -> Option<char> {
    match ids {
        [id @ 4..=14] => SINGLE_LETTERS.chars().nth((id - 4) as usize),
        [g @ 15..=18, p @ 19..=22] => GROUPS[(g - GROUP_START) as usize]
            .chars()
            .nth((p - POS_START) as usize),
        [SPACE] => Some(' '),
        [PERIOD] => Some('.'),
        [COMMA] => Some(','),
        [NEWLINE] => Some('\n'),
        [QUESTION] | [OTHER_PUNCT] => Some('?'),
        [QUOTE] => Some('\''),
        [d @ 30..=39] => char::from_digit((d - DIGIT_START) as u32, 10),
        _ => None,
    }
}

/// `_text_to_base_tokens`: each character lower-cased (Python's `str.lower`), mapped when the mapping's bytes equal
/// its UTF-8 length, else OTHER_PUNCT once per UTF-8 byte.
pub fn text_to_base(text: &str) -> Vec<u16> {
    let mut out = Vec::with_capacity(text.len());
    for ch in text.chars() {
        let utf8_len = ch.len_utf8();
        let mut lower = ch.to_lowercase();
        let single = match (lower.next(), lower.next()) {
            (Some(l), None) => Some(l),
            _ => None,
        };
        let mapped = single.and_then(base_ids);
        match mapped {
            Some(ids) if ids.iter().map(|&i| base_bytes(i) as usize).sum::<usize>() == utf8_len => {
                out.extend(ids)
            }
            _ => out.extend(std::iter::repeat_n(OTHER_PUNCT, utf8_len)),
        }
    }
    out
}

impl BeseModel {
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |message: String| DataError::BadTokenizer {
            path: path.into(),
            message,
        };
        let text = crate::limits::read_small_text(path).map_err(|source| DataError::Io {
            path: path.into(),
            source,
        })?;
        let json: TokenizerJson = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a BESE tokenizer.json: {e}")))?;
        if json.tokenizer_type != "bese_bpe" || json.base_vocab_size != BESE_BASE_VOCAB {
            return Err(bad(format!(
                "tokenizer_type {:?} with base vocabulary {}: expected \"bese_bpe\" over {BESE_BASE_VOCAB}",
                json.tokenizer_type, json.base_vocab_size
            )));
        }
        let vocab = json.vocab_size;
        if vocab != BESE_BASE_VOCAB + json.merges.len() || vocab > u16::MAX as usize {
            return Err(bad(format!(
                "vocab_size {vocab} is not the base {BESE_BASE_VOCAB} plus {} merges",
                json.merges.len()
            )));
        }
        let mut bytes: Vec<u16> = (0..BESE_BASE_VOCAB as u16).map(base_bytes).collect();
        let mut expansion: Vec<Vec<u16>> = (0..BESE_BASE_VOCAB as u16).map(|i| vec![i]).collect();
        bytes.resize(vocab, 0);
        expansion.resize(vocab, Vec::new());
        let mut priority = HashMap::new();
        for (rank, &((a, b), new)) in json.merges.iter().enumerate() {
            let known = |t: u16| (t as usize) < BESE_BASE_VOCAB + rank;
            if new as usize != BESE_BASE_VOCAB + rank || !known(a) || !known(b) {
                return Err(bad(format!(
                    "merge {rank} [[{a}, {b}], {new}] does not build on earlier ids"
                )));
            }
            bytes[new as usize] = bytes[a as usize] + bytes[b as usize];
            let mut e = expansion[a as usize].clone();
            e.extend_from_slice(&expansion[b as usize]);
            expansion[new as usize] = e;
            priority.insert((a, b), (rank as u32, new));
        }
        Ok(BeseModel {
            path: path.into(),
            merges: json.merges,
            priority,
            bytes,
            expansion,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// `encode_fast`, quirk included (see the module note).
    pub fn encode(&self, text: &str) -> Vec<u16> {
        let mut tokens = text_to_base(text);
        let n = tokens.len();
        if n == 0 || self.merges.is_empty() {
            return tokens;
        }
        let mut prev: Vec<isize> = (-1..n as isize - 1).collect();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut heap = BinaryHeap::new();
        for i in 0..n - 1 {
            let pair = (tokens[i], tokens[i + 1]);
            if let Some(&(rank, _)) = self.priority.get(&pair) {
                heap.push(Reverse((rank, i, pair)));
            }
        }
        while let Some(Reverse((_, pos, pair))) = heap.pop() {
            if tokens[pos] != pair.0 {
                continue;
            }
            let nxt = next[pos];
            if nxt >= n || tokens[nxt] != pair.1 {
                continue;
            }
            let new_id = self.priority[&pair].1;
            tokens[pos] = new_id;
            next[pos] = next[nxt];
            if next[nxt] < n {
                prev[next[nxt]] = pos as isize;
            }
            if prev[pos] >= 0 {
                let left = prev[pos] as usize;
                let pair = (tokens[left], new_id);
                if let Some(&(rank, _)) = self.priority.get(&pair) {
                    heap.push(Reverse((rank, left, pair)));
                }
            }
            if next[pos] < n {
                let pair = (new_id, tokens[next[pos]]);
                if let Some(&(rank, _)) = self.priority.get(&pair) {
                    heap.push(Reverse((rank, pos, pair)));
                }
            }
        }
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < n {
            out.push(tokens[pos]);
            let nxt = next[pos];
            if nxt <= pos {
                break;
            }
            pos = nxt;
        }
        out
    }

    /// The seed's best-effort decoding: every id expanded to base ids, each base character written back (lower
    /// case; OTHER_PUNCT as '?', quotes as '\'').
    pub fn decode(&self, ids: &[u16]) -> String {
        let base: Vec<u16> = ids
            .iter()
            .flat_map(|&i| self.expansion.get(i as usize).cloned().unwrap_or_default())
            .collect();
        let mut out = String::new();
        let mut i = 0;
        while i < base.len() {
            let pair = base.get(i..i + 2).and_then(base_char);
            if let (Some(c), true) = (pair, (15..=18).contains(&base[i])) {
                out.push(c);
                i += 2;
                continue;
            }
            if let Some(c) = base_char(&base[i..i + 1]) {
                out.push(c);
            }
            i += 1;
        }
        out
    }
}
