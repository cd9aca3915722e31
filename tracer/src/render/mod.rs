//! Renderers: analysis in, bytes out. Pure; where the bytes go is decided in `output`.
pub mod flamegraph;
pub mod go_text;
#[cfg(test)]
mod golden;
#[cfg(test)]
mod golden_go;
pub mod goroutine_pprof;
pub mod goroutines_txt;
pub mod heap_pprof;
pub mod html;
pub mod json;
pub mod metrics;
pub mod output;
pub mod pprof;
pub mod profiles;
pub mod pyroscope;
pub mod text;
pub mod timeline;
