//! flagraft-node as a library (the binary is `src/main.rs`): one member of a
//! flagraft cluster.
//!
//! Ports (see `config`): Raft gRPC (`flagraft.raft.v1.Raft`, node to node),
//! Admin gRPC (`flagraft.admin.v1.Admin`), and one HTTP port for `/healthz`,
//! `/readyz`, `/metrics` and the client update stream (`/v1/stream`).

pub mod admin;
pub mod auth;
pub mod bootstrap;
pub mod campaign;
pub mod codec;
pub mod config;
pub mod dcs;
pub mod forward;
pub mod history;
pub mod http;
pub mod initialize;
pub mod limits;
pub mod metrics;
pub mod raft_network;
pub mod raft_service;
pub mod reads;
pub mod ruleset_check;
pub mod server;
pub mod state;
pub mod stream;
pub mod validate;
