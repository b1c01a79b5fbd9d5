//! The x86_64 system call table, which lives in the model ([`crate::syscall_names`]) so that
//! scenarios can name calls without depending on `/proc` decoding.

pub use crate::syscall_names::X86_64;
