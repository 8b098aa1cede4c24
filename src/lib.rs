//! pgolf: inspect, pack, verify and train Parameter Golf models.
//!
//! Modules import downward only (`tests/layering.rs` checks it): `limits` (what every reader accepts), `alloc` (the binary's cache-line-aligned allocator), `output`
//! (files written so they cannot be lost or clobbered), `html` (the self-contained report frame) and `data`
//! (shards, tokenizers, byte tables, BPB accounting) import nothing else; `infer` (configs, the shared layers, the
//! records' GPT and seed 001's JEPA) reads `data`; `optim` (SGD, Adam, Muon) and `pack` (artifacts, coders,
//! quantizers, the size cap) read those below them; `verify` (procedures, ledger, probes, the verification run and
//! its report) reads all of them; `train` evaluates through `verify`; `review` (submission folders: claims, logs, code, checks) reads `data`, `infer` and `pack`. Nothing in the library prints; progress
//! reaches the terminal through callbacks the CLI passes in.

pub mod alloc;
pub mod data;
pub mod html;
pub mod infer;
pub mod limits;
pub mod optim;
pub mod output;
pub mod pack;
pub mod review;
pub mod train;
pub mod verify;
