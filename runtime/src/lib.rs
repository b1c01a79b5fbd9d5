//! wedge's own sandbox runtime: the thing wedge's scenarios run and break.

pub mod agent;
pub mod sync;
