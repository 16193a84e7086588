//! flagraft-node as a library (the binary is `src/main.rs`).

pub mod stream;
