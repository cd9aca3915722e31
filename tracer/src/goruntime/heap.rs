//! The heap profile a Go process keeps (when its binary links runtime.MemProfile).
