//! pgolf: inspect, pack and verify Parameter Golf artifacts.
//!
//! Data flows `data → infer → verify`. Nothing in the library prints; progress reaches the terminal through
//! callbacks the CLI passes in.

pub mod data;
pub mod infer;
pub mod limits;
pub mod optim;
pub mod pack;
pub mod train;
pub mod verify;
