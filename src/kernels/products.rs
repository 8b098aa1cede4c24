//! Linear layers' products, `F.linear(x, W)` = x · Wᵀ, on the engine a backend was built with
//! ([`ProductsKind`]): the `gemm` crate's f32 products on CPU tensors (a differentiable node when gradients flow),
//! AMX bf16 tiles under mixed precision where the CPU has them (W packed once per weight), candle's products
//! otherwise (under mixed precision with bf16 operands: [`Precision::matmul`]).

use candle_core::{DType, Tensor};

use super::amx::PackedB;
use super::buffers::{applies, with_values};
use super::{Precision, ProductsKind, Result, Weight};

/// The product engine of a backend.
#[derive(Clone, Copy, Debug)]
pub struct Products {
    kind: ProductsKind,
    precision: Precision,
}

impl Products {
    pub fn new(kind: ProductsKind, precision: Precision) -> Self {
        Products { kind, precision }
    }

    pub fn kind(&self) -> ProductsKind {
        self.kind
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether mixed-precision products run on AMX tiles (which then read bf16 activations as they are).
    pub fn on_tiles(&self) -> bool {
        self.kind == ProductsKind::AmxTiles && self.precision == Precision::Mixed
    }

    /// `F.linear(x, W)` over all leading dimensions of x.
    pub fn linear(&self, x: &Tensor, w: &Weight) -> Result<Tensor> {
        let dims = x.dims();
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("at least one dimension") = w.tensor().dim(0)?;
        if let Some(values) = self.forward_values(x, w)? {
            return Tensor::from_vec(values, out_dims, x.device());
        }
        let wt = w.tensor();
        if self.kind != ProductsKind::Candle
            && self.precision == Precision::Fp32
            && applies(&[x, wt])
            && wt.rank() == 2
        {
            // A tracked product (training): one differentiable node on the gemm crate.
            return super::ops::linear(x, wt);
        }
        let (inner, rows) = (dims[dims.len() - 1], x.elem_count() / dims[dims.len() - 1]);
        let y = self
            .precision
            .matmul(&x.reshape((rows, inner))?, &wt.t()?)?;
        y.reshape(out_dims)
    }

    /// The values of `F.linear(x, W)` (row-major, x's leading dimensions by W's rows) from the forward-only CPU
    /// kernels, where they apply: CPU f32 tensors that no gradient tracks, in f32 on the `gemm` crate, under mixed
    /// precision on AMX tiles (from W's packing, made once and kept while W is a constant). None: the caller
    /// composes candle's product.
    pub fn forward_values(&self, x: &Tensor, w: &Weight) -> Result<Option<Vec<f32>>> {
        if self.kind == ProductsKind::Candle {
            return Ok(None);
        }
        let wt = w.tensor();
        let on_tiles = self.on_tiles();
        // An activation a fused kernel already wrote in bf16 for the tiles.
        let bf16_input = on_tiles && x.dtype() == DType::BF16 && x.device().is_cpu();
        let forward_only =
            (applies(&[x, wt]) || bf16_input && applies(&[wt])) && !x.track_op() && !wt.track_op();
        let kernel = self.precision == Precision::Fp32 || on_tiles;
        if !forward_only || !kernel || wt.rank() != 2 || x.rank() == 0 {
            return Ok(None);
        }
        let inner = *x.dims().last().expect("rank checked");
        let (out, w_inner) = wt.dims2()?;
        if inner != w_inner {
            return Ok(None); // candle's product reports the mismatch
        }
        let rows = x.elem_count() / inner.max(1);
        if !on_tiles {
            return with_values(x, |xs| {
                with_values(wt, |ws| {
                    Ok(Some(super::fused::linear_f32(xs, ws, rows, out, inner)))
                })
            });
        }
        // The same rule as candle's bf16 product, on AMX tiles, with W's packing: kept with the weight while it
        // is a constant, else made here.
        let pack = |t: &Tensor| with_values(t, |ws| Ok(PackedB::from_nk(ws, out, inner)));
        let made_here;
        let tiles = match w.prepared::<PackedB>(pack)? {
            Some(p) if p.dims() == (out, inner) => p,
            _ => {
                made_here = pack(wt)?;
                &made_here
            }
        };
        if bf16_input {
            let x = x.contiguous()?;
            let (storage, layout) = x.storage_and_layout();
            let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
                (&*storage, layout.contiguous_offsets())
            else {
                return Ok(None);
            };
            let values = &cpu.as_slice::<half::bf16>()?[start..end];
            let xs = super::buffers::bf16_bits(values);
            return Ok(Some(super::amx::matmul_bt_bf16_packed(xs, tiles, rows)));
        }
        with_values(x, |xs| {
            Ok(Some(super::amx::matmul_bt_packed(xs, tiles, rows)))
        })
    }
}
