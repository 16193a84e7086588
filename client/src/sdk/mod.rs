//! The live SDK client: a WebSocket subscriber (docs/protocol.md) feeding the
//! local evaluator.
//!
//! ```no_run
//! # async fn demo() -> Result<(), flagraft_client::sdk::ClientError> {
//! use flagraft_client::{sdk::Client, User};
//! let client = Client::builder()
//!     .endpoints(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"])
//!     .sdk_key("server-key")
//!     .environment("production")
//!     .build()
//!     .await?;
//! let on = client.check_gate(&User::with_user_id("u1"), "new_checkout");
//! # let _ = on; Ok(()) }
//! ```

mod backoff;
mod builder;
pub mod cache;
mod client;
mod overrides;
mod shared;
mod state;
mod stream;

pub use builder::ClientBuilder;
pub use client::{Client, ClientError, ConfigEvaluation, EvalSource, GateEvaluation};
pub use overrides::{OverrideKind, OverrideValue, Overrides};
pub use shared::{Health, Update};
pub use state::{ApplyError, RulesetState, StateSource};
