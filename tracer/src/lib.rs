//! rtrace: probes → collect → Capture → symbolize → analyze → render.
//! See ../shared/docs/architecture.md for where each stage lives and why.
pub mod allocator;
pub mod analyze;
pub mod btf;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod collect;
pub mod error;
pub mod goruntime;
pub mod lifecycle;
pub mod loader;
pub mod options;
pub mod priority;
pub mod privileges;
pub mod procfs;
pub mod push;
pub mod render;
pub mod report;
pub mod serve;
pub mod session;
pub mod spawn;
pub mod symbolize;
pub mod tracefs;
pub mod unwind;
