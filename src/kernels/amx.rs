//! bf16 matrix products on Intel AMX, for `--precision mixed` on the CPU.
//!
//! The rule is the one [`super::precision::Precision::Mixed`] states (the records' autocast): both operands rounded
//! to bf16 (round-to-nearest-even, as torch's cast), products accumulated in f32, the result f32. AMX's
//! `TDPBF16PS` computes exactly that on 16×32 by 32×16 bf16 tiles into 16×16 f32 tiles; only the order of the f32
//! additions differs from a plain loop (and bf16 subnormal inputs count as zero), so results agree with the rounded
//! operands' f32 product to f32 rounding.
//!
//! Used where the CPU has AMX-BF16 (cpuid leaf 7: AMX-TILE and AMX-BF16) and Linux grants this process the tile
//! data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); [`available`] says which. Stable Rust has no
//! AMX intrinsics, so the five instructions are written as inline assembly.

use std::sync::OnceLock;

/// Whether AMX bf16 products can run in this process (checked once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    // cpuid.(eax=7, ecx=0):edx bit 22 AMX-BF16, bit 24 AMX-TILE.
    let leaf = std::arch::x86_64::__cpuid_count(7, 0);
    if leaf.edx & (1 << 22) == 0 || leaf.edx & (1 << 24) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call; it only changes which register state this process may use.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// What the CPU lacks, for the message where `--precision mixed` falls back to rounding plus f32 products.
pub fn why_not() -> &'static str {
    if cfg!(not(all(target_arch = "x86_64", target_os = "linux"))) {
        "AMX products need Linux on x86-64"
    } else {
        "this CPU has no AMX-BF16 (or the kernel refused its tile state)"
    }
}

/// bf16 of `x`, round-to-nearest-even (NaN stays NaN), as torch's `.to(torch.bfloat16)`.
#[inline]
pub fn bf16_bits(x: f32) -> u16 {
    // Branch-free (a select), so that the packing loops vectorize.
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    if x.is_nan() { 0x7fc0 } else { rounded }
}

/// `x` rounded to the nearest bf16 ([`bf16_bits`]), kept as f32.
#[inline(always)]
pub fn bf16_rounded(x: f32) -> f32 {
    f32::from_bits((bf16_bits(x) as u32) << 16)
}

/// `dst ← bf16(src)` value by value ([`bf16_bits`]), compiled for AVX-512 where the CPU has it (16 lanes; the
/// same integer arithmetic, so the same bits).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2"))]
fn round_row(src: &[f32], dst: &mut [u16]) {
    for (o, &x) in dst.iter_mut().zip(src) {
        *o = bf16_bits(x);
    }
}

/// Rows and columns of a C block: 2×2 tiles of 16×16.
const BLOCK: usize = 32;
/// bf16 values per tile row (64 bytes), the k-step of one `TDPBF16PS`.
const KSTEP: usize = 32;

/// `C [m, n] = A [m, k] · Bᵀ` for row-major A and B [n, k] (a linear layer's x·Wᵀ), operands rounded to bf16, f32
/// accumulation. Call only where [`available`] is true. Blocks of C's rows are shared out over rayon's threads.
pub fn matmul_bt(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    matmul_bt_packed(a, &PackedB::from_nk(b, n, k), m)
}

/// [`matmul_bt`] with B already packed ([`PackedB::from_nk`]; a weight packed once for many products).
pub fn matmul_bt_packed(a: &[f32], packed: &PackedB, m: usize) -> Vec<f32> {
    let (n, k) = (packed.n, packed.k);
    assert_eq!(a.len(), m * k);
    over_row_blocks(m, n, |r0, rows, c_rows| {
        matmul_packed(
            &a[r0 * k..(r0 + rows) * k],
            k,
            rows,
            k,
            packed,
            n,
            c_rows,
            n,
        );
    })
}

/// [`matmul_bt`] for A already rounded: its bf16 bits, row-major [m, k] (an activation written in bf16 by the kernel
/// that made it).
pub fn matmul_bt_bf16(a: &[u16], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    matmul_bt_bf16_packed(a, &PackedB::from_nk(b, n, k), m)
}

/// [`matmul_bt_bf16`] with B already packed. Full blocks of 32 rows are read in place where k is a multiple of 32
/// (measured 7% faster in mixed evaluation than copying them into the tiled layout); the last block is copied,
/// padded.
pub fn matmul_bt_bf16_packed(a: &[u16], packed: &PackedB, m: usize) -> Vec<f32> {
    let (n, k) = (packed.n, packed.k);
    assert_eq!(a.len(), m * k);
    let kpa = k.div_ceil(KSTEP) * KSTEP;
    over_row_blocks(m, n, |r0, rows, c_rows| {
        assert_c_rows(c_rows, rows, n, n);
        if rows == BLOCK && kpa == k {
            // SAFETY: BLOCK full rows of k = kpa bf16 read in place (row-major); `packed` covers k and n.
            unsafe {
                tile_block(
                    &a[r0 * k..(r0 + rows) * k],
                    ATiles::row_major(kpa),
                    packed,
                    c_rows,
                    rows,
                    n,
                    n,
                )
            };
            return;
        }
        let mut tiled = Lines::zeroed(BLOCK * kpa);
        for (r, row) in a[r0 * k..(r0 + rows) * k].chunks_exact(k).enumerate() {
            for (step, values) in row.chunks(KSTEP).enumerate() {
                let at = step * BLOCK * KSTEP + r * KSTEP;
                tiled[at..at + values.len()].copy_from_slice(values);
            }
        }
        // SAFETY: `tiled` is BLOCK rows of kpa bf16 in the tiled layout (zero past k and past `rows`), `packed`
        // covers k and n; C rows r0..r0 + rows.
        unsafe { tile_block(&tiled, ATiles::tiled(kpa), packed, c_rows, rows, n, n) };
    })
}

/// C [m, n] (f32, every element written by `block`) computed by blocks of 32 rows over rayon's threads:
/// `block(r0, rows, c_rows)` writes rows r0..r0 + rows.
fn over_row_blocks(
    m: usize,
    n: usize,
    block: impl Fn(usize, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    if m == 0 || n == 0 {
        return vec![0f32; m * n];
    }
    use rayon::prelude::*;
    // Every element is written below (each block writes all of its rows × n) before the vector is read.
    let mut c = super::buffers::uninit_vec::<f32>(m * n);
    c.par_chunks_mut(BLOCK * n)
        .enumerate()
        .for_each(|(i, c_rows)| block(i * BLOCK, c_rows.len() / n, c_rows));
    c
}

/// bf16 values in whole 64-byte cache lines, the first starting on a line: every tile row (64 bytes) the kernel
/// loads from a packed operand then reads one line, not two, whatever allocator the process runs. (A `Vec<u16>` is
/// as aligned as the allocator makes it, 16 bytes under glibc's `malloc`; the tile loads of B, streamed again for
/// every block of rows, then split.)
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; KSTEP]);

struct Lines(Vec<Line>);

impl Lines {
    /// At least `values` zeros (whole lines).
    fn zeroed(values: usize) -> Self {
        Lines(vec![Line([0; KSTEP]); values.div_ceil(KSTEP)])
    }
}

impl std::ops::Deref for Lines {
    type Target = [u16];
    fn deref(&self) -> &[u16] {
        // SAFETY: `Line` is repr(C) over KSTEP u16 with no padding (64 bytes, its alignment), so the vector's lines
        // are len · KSTEP consecutive u16.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u16>(), self.0.len() * KSTEP) }
    }
}

impl std::ops::DerefMut for Lines {
    fn deref_mut(&mut self) -> &mut [u16] {
        // SAFETY: as `deref`, uniquely borrowed.
        unsafe {
            std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u16>(), self.0.len() * KSTEP)
        }
    }
}

/// B rounded to bf16 in the tiles' pair-interleaved layout, one C block's two tiles after the other k-step by k-step:
/// for columns 32j..32j+32, k-step s holds the left tile (columns 32j..32j+16) then the right one, each 16 rows of
/// 64 bytes, row p (k-pair 16s + p) holding 16 × (B[2·pair, col], B[2·pair + 1, col]). A block's k-steps are one
/// stream of 2 KiB steps (what the tile kernel prefetches). Columns are padded to a multiple of 32, k to a multiple
/// of 32, with zeros.
pub struct PackedB {
    data: Lines,
    n: usize,
    k: usize,
    kp: usize,
}

impl PackedB {
    /// From B given as [n, k] row-major (C = A·Bᵀ: a weight, or attention's keys).
    pub fn from_nk(b: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(b.len(), n * k);
        let mut packed = Self::zeroed(n, k);
        let kp = packed.kp;
        let mut rounded = vec![0u16; k.next_multiple_of(2)];
        for col in 0..n {
            // Column `col` holds B's row `col`, two k values per 32-bit slot, slots 16 apart.
            round_row(&b[col * k..(col + 1) * k], &mut rounded[..k]);
            for (pair, values) in rounded.chunks_exact(2).enumerate() {
                let at = PackedB::offset(kp, col / 16, pair) + (col % 16) * 2;
                packed.data[at] = values[0];
                packed.data[at + 1] = values[1];
            }
        }
        packed
    }

    /// From B given as [k, n] row-major (C = A·B: attention's values).
    pub fn from_kn(b: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(b.len(), n * k);
        let mut packed = Self::zeroed(n, k);
        let kp = packed.kp;
        let zeros = vec![0f32; n];
        for pair in 0..k.div_ceil(2) {
            let even = &b[2 * pair * n..(2 * pair + 1) * n];
            let odd = if 2 * pair + 1 < k {
                &b[(2 * pair + 1) * n..(2 * pair + 2) * n]
            } else {
                &zeros[..]
            };
            for panel in 0..n.div_ceil(16) {
                let cols = panel * 16..((panel + 1) * 16).min(n);
                let start = PackedB::offset(kp, panel, pair);
                interleave_rows(
                    &even[cols.clone()],
                    &odd[cols],
                    &mut packed.data[start..start + 32],
                );
            }
        }
        packed
    }

    /// B's (n, k): C's columns, and the inner dimension of the products it serves.
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Where k-pair `pair` of 16-column panel `panel` starts (its 16 slots of two values).
    fn offset(kp: usize, panel: usize, pair: usize) -> usize {
        (panel / 2) * kp * BLOCK
            + (pair / 16) * BLOCK * KSTEP
            + (panel % 2) * 16 * KSTEP
            + (pair % 16) * KSTEP
    }

    fn zeroed(n: usize, k: usize) -> Self {
        assert!(
            available(),
            "AMX products asked for where they are not available"
        );
        let kp = k.div_ceil(KSTEP) * KSTEP;
        let panels = n.div_ceil(BLOCK) * 2;
        PackedB {
            data: Lines::zeroed(panels * kp * 16),
            n,
            k,
            kp,
        }
    }
}

/// `dst[2c] = bf16(even[c])`, `dst[2c + 1] = bf16(odd[c])`: one k-pair row of a panel.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2"))]
fn interleave_rows(even: &[f32], odd: &[f32], dst: &mut [u16]) {
    for (c, (&e, &o)) in even.iter().zip(odd).enumerate() {
        dst[2 * c] = bf16_bits(e);
        dst[2 * c + 1] = bf16_bits(o);
    }
}

/// A rounded to bf16 in the layout the tiles read: blocks of 32 rows of `kpa` values (k padded with zeros to a
/// multiple of 32), written row by row by the caller (attention's probabilities, straight from the softmax).
pub struct PackedA {
    data: Lines,
    rows: usize,
    kpa: usize,
}

impl PackedA {
    /// Room for `rows` rows of up to `k` values, all zero.
    pub fn zeroed(rows: usize, k: usize) -> Self {
        let kpa = k.div_ceil(KSTEP) * KSTEP;
        PackedA {
            data: Lines::zeroed(rows.div_ceil(BLOCK) * BLOCK * kpa),
            rows,
            kpa,
        }
    }

    /// Re-lays the buffer out for `rows` rows of `k` values (within the capacity it was made with); the rows past
    /// `rows` up to the block are zeroed, and the rows themselves are the caller's to write in full
    /// ([`PackedA::row_mut`], padding included).
    pub fn reshape(&mut self, rows: usize, k: usize) {
        let kpa = k.div_ceil(KSTEP) * KSTEP;
        let padded_rows = rows.div_ceil(BLOCK) * BLOCK;
        assert!(
            padded_rows * kpa <= self.data.len(),
            "PackedA::reshape beyond its capacity"
        );
        self.rows = rows;
        self.kpa = kpa;
        self.data[rows * kpa..padded_rows * kpa].fill(0);
    }

    /// Row r, all of its k-padded-to-32 values (its values, then zeros).
    pub fn row_mut(&mut self, r: usize) -> &mut [u16] {
        assert!(r < self.rows);
        &mut self.data[r * self.kpa..(r + 1) * self.kpa]
    }
}

/// `C[..rows, ..cols] = A · B[..A's k, ..cols]` on one thread for A already packed; C has row stride `ldc`.
pub fn matmul_prepacked(a: &PackedA, b: &PackedB, cols: usize, c: &mut [f32], ldc: usize) {
    assert!(a.kpa <= b.kp && cols <= b.n);
    assert_c_rows(c, a.rows, cols, ldc);
    for r0 in (0..a.rows).step_by(BLOCK) {
        let block = &a.data[r0 * a.kpa..(r0 + BLOCK) * a.kpa];
        // SAFETY: `block` is BLOCK rows of kpa bf16 (rows past a.rows zero), `b` covers kpa and `cols`; the C rows
        // written are r0..min(r0 + BLOCK, rows), columns below `cols`.
        unsafe {
            tile_block(
                block,
                ATiles::row_major(a.kpa),
                b,
                &mut c[r0 * ldc..],
                BLOCK.min(a.rows - r0),
                ldc,
                cols,
            )
        };
    }
}

/// `C[.., ..cols] = A · B[..k, ..cols]` on one thread: A is `rows` rows of `k` f32 values with row stride `lda`,
/// C has row stride `ldc`; `k` at most B's k and `cols` at most its n. Rows go in blocks of 32, columns in blocks of
/// 32 (the last ones computed padded and cut).
#[allow(clippy::too_many_arguments)]
pub fn matmul_packed(
    a: &[f32],
    lda: usize,
    rows: usize,
    k: usize,
    b: &PackedB,
    cols: usize,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(k <= b.kp && cols <= b.n);
    assert!(
        rows == 0 || k <= lda && (rows - 1) * lda + k <= a.len(),
        "A: {rows} rows of {k} values, {lda} apart, overrun {} values",
        a.len()
    );
    assert_c_rows(c, rows, cols, ldc);
    let kpa = k.div_ceil(KSTEP) * KSTEP;
    let mut tiled = Lines::zeroed(BLOCK * kpa);
    for r0 in (0..rows).step_by(BLOCK) {
        let block_rows = BLOCK.min(rows - r0);
        if block_rows < BLOCK {
            tiled.fill(0);
        }
        for r in 0..block_rows {
            round_row_tiled(&a[(r0 + r) * lda..(r0 + r) * lda + k], &mut tiled, r);
        }
        // SAFETY: `tiled` is BLOCK rows of kpa bf16 in the tiled layout, `b` covers `cols` (padded to 32) and
        // kpa ≤ b.kp; the C rows written are r0..r0 + block_rows, columns below `cols`.
        unsafe {
            tile_block(
                &tiled,
                ATiles::tiled(kpa),
                b,
                &mut c[r0 * ldc..],
                block_rows,
                ldc,
                cols,
            )
        };
    }
}

/// The bounds every tile store into C relies on: AMX is available (else its instructions fault), the rows do not
/// overlap (`ldc ≥ cols`), and `rows` rows of `cols` values `ldc` apart lie within `c` — [`tile_block`] stores
/// whole 32 × 32 blocks straight into C where they fit (a full block of rows and columns), so these asserts are
/// what keeps those stores inside the slice.
fn assert_c_rows(c: &[f32], rows: usize, cols: usize, ldc: usize) {
    assert!(
        cols <= ldc,
        "C rows overlap: {cols} columns with row stride {ldc}"
    );
    assert!(
        rows == 0 || (rows - 1) * ldc + cols <= c.len(),
        "C: {rows} rows of {cols} values, {ldc} apart, overrun {} values",
        c.len()
    );
    assert!(
        available(),
        "AMX tile products called where AMX is not available"
    );
}

/// Row `r` of a block of A, rounded ([`bf16_bits`]) into the tiled layout ([`ATiles::tiled`]): its k-step s at
/// `s · 32 · 32 + r · 32`, the last one padded with zeros.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2"))]
fn round_row_tiled(src: &[f32], tiled: &mut [u16], r: usize) {
    for (step, values) in src.chunks(KSTEP).enumerate() {
        let dst = &mut tiled[step * BLOCK * KSTEP + r * KSTEP..][..KSTEP];
        for (o, &x) in dst.iter_mut().zip(values) {
            *o = bf16_bits(x);
        }
        dst[values.len()..].fill(0);
    }
}

/// Where a block's A tiles lie: the tile of rows 16h..16h+16 at k-step s starts `h · half + s · step` bf16 values
/// from the block's start, its 16 rows `stride` bytes apart.
#[derive(Clone, Copy)]
struct ATiles {
    half: usize,
    step: usize,
    stride: usize,
    ksteps: usize,
}

impl ATiles {
    /// BLOCK rows of `kpa` values each, one after the other ([`PackedA`]).
    fn row_major(kpa: usize) -> Self {
        ATiles {
            half: 16 * kpa,
            step: KSTEP,
            stride: kpa * 2,
            ksteps: kpa / KSTEP,
        }
    }

    /// k-step by k-step: each k-step's BLOCK × KSTEP values row-major (1 KiB per tile, rows 64 bytes apart), so
    /// that a tile load reads 16 consecutive cache lines.
    fn tiled(kpa: usize) -> Self {
        ATiles {
            half: 16 * KSTEP,
            step: BLOCK * KSTEP,
            stride: 64,
            ksteps: kpa / KSTEP,
        }
    }
}

/// The tile configuration `LDTILECFG` reads (palette 1): tmm0–3 the C tiles, tmm4–5 A, tmm6–7 B, all 16 rows of 64
/// bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// One block of up to BLOCK rows of C: for each 32-column block, four C tiles accumulate over A's k-steps. Each
/// k-step's loads are interleaved with the products that need them (tiles are not renamed, so a load waits for the
/// products reading its register), and the next k-step's B (2 KiB) is prefetched into L1 while this one runs.
///
/// # Safety
/// AMX is [`available`]. `a` holds BLOCK rows of A in the layout `a_tiles` describes, over `a_tiles.ksteps` k-steps
/// (zero past A's k and past `rows`); `b` covers those k-steps and `cols` columns (padded to a multiple of 32);
/// `rows ≤ BLOCK`, `cols ≤ ldc`, and `c_rows` holds `rows` rows of `cols` values `ldc` apart ([`assert_c_rows`]):
/// a full block (rows = 32, 32 columns) is stored straight into those rows, a partial one through a local block.
#[cfg(target_arch = "x86_64")]
unsafe fn tile_block(
    a: &[u16],
    a_tiles: ATiles,
    b: &PackedB,
    c_rows: &mut [f32],
    rows: usize,
    ldc: usize,
    cols: usize,
) {
    use std::arch::asm;
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    let mut cfg = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [0; 16],
        rows: [0; 16],
    };
    for t in 0..8 {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    let mut out = [0f32; BLOCK * BLOCK];
    let a0 = a.as_ptr();
    // SAFETY: (the whole block) every pointer below addresses a tile of `a` (the caller's layout `a_tiles`), one of a
    // 32-column block's k-steps in `b`, or the BLOCK × BLOCK `out` / C rows; the caller guarantees the sizes. The
    // prefetches may point past `b` (wrapping arithmetic; a prefetch does not fault).
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig, options(nostack));
        for cb in (0..cols).step_by(BLOCK) {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack)
            );
            let steps = b.data.as_ptr().add((cb / BLOCK) * b.kp * BLOCK);
            for s in 0..a_tiles.ksteps {
                let a_top = a0.add(s * a_tiles.step);
                let a_bottom = a_top.add(a_tiles.half);
                let b_left = steps.add(s * BLOCK * KSTEP);
                let b_right = b_left.add(16 * KSTEP);
                let next = b_left.wrapping_add(BLOCK * KSTEP);
                for line in 0..BLOCK {
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(line * 32) as *const i8);
                }
                asm!(
                    "tileloadd tmm4, [{a_top} + {a_stride}*1]",
                    "tileloadd tmm6, [{b_left} + {b_stride}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{b_right} + {b_stride}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{a_bottom} + {a_stride}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a_top = in(reg) a_top,
                    a_bottom = in(reg) a_bottom,
                    b_left = in(reg) b_left,
                    b_right = in(reg) b_right,
                    a_stride = in(reg) a_tiles.stride,
                    b_stride = in(reg) 64usize,
                    options(nostack),
                );
            }
            let width = BLOCK.min(cols - cb);
            // A full block goes from the tiles straight to C (row stride ldc); a partial one through `out`.
            let direct = rows == BLOCK && width == BLOCK;
            let (o, stride) = if direct {
                (c_rows.as_mut_ptr().add(cb), ldc)
            } else {
                (out.as_mut_ptr(), BLOCK)
            };
            asm!(
                "tilestored [{o00} + {s}*1], tmm0",
                "tilestored [{o01} + {s}*1], tmm1",
                "tilestored [{o10} + {s}*1], tmm2",
                "tilestored [{o11} + {s}*1], tmm3",
                o00 = in(reg) o,
                o01 = in(reg) o.add(16),
                o10 = in(reg) o.add(16 * stride),
                o11 = in(reg) o.add(16 * stride + 16),
                s = in(reg) stride * 4,
                options(nostack),
            );
            if direct {
                continue;
            }
            for r in 0..rows {
                c_rows[r * ldc + cb..r * ldc + cb + width]
                    .copy_from_slice(&out[r * BLOCK..r * BLOCK + width]);
            }
        }
        asm!("tilerelease", options(nostack));
    }
}

/// # Safety
/// Never called: [`available`] is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_block(
    _: &[u16],
    _: ATiles,
    _: &PackedB,
    _: &mut [f32],
    _: usize,
    _: usize,
    _: usize,
) {
    unreachable!("AMX is x86-64 only; `available` is false elsewhere")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_bf16(h: u16) -> f32 {
        f32::from_bits((h as u32) << 16)
    }

    #[test]
    fn rounding_is_nearest_even_as_torch() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties to even (1).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶: ties to even (1 + 2⁻⁶).
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-2.5), half::bf16::from_f32(-2.5).to_bits());
        assert!(from_bf16(bf16_bits(f32::NAN)).is_nan());
        for i in 0..10_000u32 {
            let x = f32::from_bits(i.wrapping_mul(2_654_435_761));
            if x.is_finite() {
                assert_eq!(bf16_bits(x), half::bf16::from_f32(x).to_bits(), "{x}");
            }
        }
    }

    /// The bounds every tile store relies on are checked before any tile instruction, on any CPU: a C that cannot
    /// hold the rows, rows that overlap, an A shorter than its rows.
    #[test]
    fn short_or_overlapping_outputs_are_refused_before_any_tile_store() {
        // A packed B of 32 columns over k 64, built as `zeroed` lays it out (without its AMX check: no tile
        // instruction may run here).
        let kp = 64;
        let b = PackedB {
            data: Lines::zeroed(2 * kp * 16),
            n: 32,
            k: 64,
            kp,
        };
        let refused = |f: &dyn Fn()| {
            let message = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .expect_err("refused")
                .downcast::<String>()
                .map(|m| *m)
                .unwrap_or_default();
            assert!(
                message.contains("overrun") || message.contains("overlap"),
                "{message}"
            );
        };
        let a = vec![1.0f32; 32 * 64];
        // 32 rows of 32 columns need 1,024 values of C.
        refused(&|| matmul_packed(&a, 64, 32, 64, &b, 32, &mut vec![0.0; 1023], 32));
        // Row stride below the columns: the rows would overlap.
        refused(&|| matmul_packed(&a, 64, 32, 64, &b, 32, &mut vec![0.0; 4096], 16));
        // A holds 31 rows, not 32.
        refused(&|| matmul_packed(&a[..31 * 64], 64, 32, 64, &b, 32, &mut vec![0.0; 1024], 32));
        let mut packed_a = PackedA::zeroed(32, 64);
        packed_a.reshape(32, 64);
        refused(&|| matmul_prepacked(&packed_a, &b, 32, &mut vec![0.0; 1000], 32));
    }
}
