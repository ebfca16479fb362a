//! What the `sensor` and `collector` binaries share to be operated, written once:
//! [`config`] reads a TOML configuration file (every error named `path:line:column`), and
//! [`install`] writes and removes a service's files under a root (a live host, an image being
//! built, a test), never talking to systemd.

pub mod config;
pub mod install;
