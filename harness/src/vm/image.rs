//! The guest image: everything a VM's `/init` needs, packed as one initramfs and cached by the
//! hash of its bytes.

use std::path::PathBuf;

/// wedge's cache outside the repository: `$XDG_CACHE_HOME/wedge`, else `~/.cache/wedge`
/// (relative to the current directory when neither is set). Kernels and images live under it.
pub fn cache_dir() -> PathBuf {
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty());
    let base = match (xdg, std::env::var_os("HOME")) {
        (Some(x), _) => PathBuf::from(x),
        (None, Some(home)) => PathBuf::from(home).join(".cache"),
        (None, None) => PathBuf::from(".cache"),
    };
    base.join("wedge")
}
