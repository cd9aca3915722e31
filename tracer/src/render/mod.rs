//! Renderers: analysis in, bytes out. Pure; where the bytes go is decided in `output`.
pub mod flamegraph;
pub mod go_text;
#[cfg(test)]
mod golden;
pub mod heap_pprof;
pub mod json;
pub mod output;
pub mod pprof;
pub mod text;
