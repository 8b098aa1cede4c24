//! pgolf: inspect, pack, verify and train Parameter Golf models.
//!
//! Modules import downward only (`tests/layering.rs` checks it for every top-level module): `limits` (what every
//! reader accepts), `alloc` (the binary's cache-line-aligned allocator), `output` (files written so they cannot be
//! lost or clobbered) and `html` (the self-contained report frame) import nothing; `data` (shards, tokenizers, byte
//! tables, BPB accounting) reads `limits` and `output`; `kernels` (every numeric operation behind one interface, the
//! backend chosen once per model) imports nothing; `infer` (configs, the records' GPT and seed 001's JEPA) reads
//! `data` and `kernels`; `optim` (SGD, Adam, Muon) and `pack` (artifacts, coders, quantizers, the size cap) read those
//! below them; `verify` (procedures, ledger, probes, the spec and run of a verification, its report) reads all of
//! them; `train` evaluates through `verify`; `review` (submission folders: claims, logs, code, checks) reads `data`,
//! `infer`, `pack` and `verify` (whose flags write the reproducing command); `demo` plans the whole loop's commands.
//! Every command has two stages: its flags resolved into a typed spec, the spec run into a typed report. Nothing in
//! the library prints; progress reaches the terminal through callbacks the CLI passes in.

// Every unsafe block says why it is sound (`// SAFETY:`), and every unsafe fn what its caller must guarantee
// (`# Safety`).
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod alloc;
pub mod data;
pub mod demo;
pub mod html;
pub mod infer;
pub mod kernels;
pub mod limits;
pub mod optim;
pub mod output;
pub mod pack;
pub mod review;
pub mod train;
pub mod verify;
