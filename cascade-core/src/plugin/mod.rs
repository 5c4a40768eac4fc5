//! Runtime tier plugins: a stable C ABI ([`abi`]) and the loader that turns a shared
//! library named in the config into a [`crate::Tier`] ([`PluginLibrary`], [`PluginTier`]).
//!
//! The C side of the ABI is `plugins/cascade-plugin.h`; Rust plugins use the
//! `cascade-plugin-sdk` crate, which exports any `Tier` and keeps panics inside the
//! plugin. docs/plugins.md explains how to write, configure and debug one.

pub mod abi;
mod config;
mod loader;

pub use config::{PluginTierConfig, open_tier};
pub use loader::{KIND, PluginLibrary, PluginTier};
