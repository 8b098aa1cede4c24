//! A model weight as the kernels see it: its state-dict name, its tensor, and a slot where a backend keeps what it
//! prepared from the tensor (the AMX tile packing), made at the weight's first product and reused by every later
//! one while the weight is a constant.

use std::any::Any;
use std::sync::OnceLock;

use candle_core::Tensor;

/// What a backend prepared from a weight's values, by its own type.
type Prepared = Box<dyn Any + Send + Sync>;

pub struct Weight {
    name: String,
    tensor: Tensor,
    prepared: OnceLock<Prepared>,
    /// Whether the tensor's values are fixed for good: a variable (or a constant sharing a variable's storage)
    /// changes in place, which a kept preparation would not see.
    constant: bool,
}

impl Weight {
    /// A constant weight.
    pub fn new(name: impl Into<String>, tensor: Tensor) -> Self {
        Weight {
            name: name.into(),
            tensor,
            prepared: OnceLock::new(),
            constant: true,
        }
    }

    /// A weight from which nothing is ever prepared and kept (each product makes what it needs).
    pub fn uncached(name: impl Into<String>, tensor: Tensor) -> Self {
        Weight {
            name: name.into(),
            tensor,
            prepared: OnceLock::new(),
            constant: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }

    /// Replaces the tensor (same name) and drops what was prepared from the old one; returns the old tensor.
    pub fn replace(&mut self, tensor: Tensor) -> Tensor {
        self.prepared = OnceLock::new();
        std::mem::replace(&mut self.tensor, tensor)
    }

    /// From now on the values may change in place: nothing prepared is kept or used again.
    pub fn set_variable(&mut self, tensor: Tensor) {
        self.prepared = OnceLock::new();
        self.constant = false;
        self.tensor = tensor;
    }

    /// What the backend prepared from this weight, made by `prepare` at the first call; None where nothing may be
    /// kept (the weight is or shares a variable). A preparation of another type than `T` is not this backend's
    /// and is not used.
    pub fn prepared<T: Any + Send + Sync>(
        &self,
        prepare: impl FnOnce(&Tensor) -> candle_core::Result<T>,
    ) -> candle_core::Result<Option<&T>> {
        if !self.constant || self.tensor.is_variable() {
            return Ok(None);
        }
        if let Some(p) = self.prepared.get() {
            return Ok(p.downcast_ref::<T>());
        }
        let made: Prepared = Box::new(prepare(&self.tensor)?);
        Ok(self.prepared.get_or_init(|| made).downcast_ref::<T>())
    }
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weight")
            .field("name", &self.name)
            .field("dims", &self.tensor.dims())
            .field("constant", &self.constant)
            .finish()
    }
}
