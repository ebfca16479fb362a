//! Records the kernel programs write into the ring buffer, and the load-time constants they read.
//!
//! Layout rules (checked at compile time below each struct): `#[repr(C)]`, `Copy`, no `bool`, no
//! pointers, explicit padding. Every record starts with [`EventHeader`]; its `kind` travels as a
//! `u32` and is turned into [`EventKind`] with `TryFrom` on the user side, because the kernel can
//! send any value.
#![no_std]

pub mod event;
pub mod offsets;

pub use event::*;
pub use offsets::KernelOffsets;
