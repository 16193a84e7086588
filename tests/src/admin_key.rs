//! The admin key of test clusters and an Admin client that sends it.
//!
//! Every node a test starts gets [`TEST_ADMIN_KEY`] as its bootstrap admin
//! key (environment variable `FLAGRAFT_ADMIN_KEY`); [`admin_client`] adds
//! `authorization: Bearer <key>` to every call. Test-only: never use this key
//! outside tests.

use flagraft_proto::admin::v1::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The environment variable a node reads its bootstrap admin key from.
pub const ADMIN_KEY_ENV: &str = "FLAGRAFT_ADMIN_KEY";
/// The bootstrap admin key of every test cluster (not a secret).
pub const TEST_ADMIN_KEY: &str = "flagraft-test-admin-key-not-secret";

/// Adds `authorization: Bearer <key>` to each request.
#[derive(Clone)]
pub struct BearerKey(Option<MetadataValue<Ascii>>);

impl BearerKey {
    /// A key that is not valid metadata is sent as no key (the node refuses).
    pub fn new(key: &str) -> Self {
        BearerKey(format!("Bearer {key}").parse().ok())
    }

    /// Sends no key at all.
    pub fn none() -> Self {
        BearerKey(None)
    }
}

impl Interceptor for BearerKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// An Admin client that authenticates with a key.
pub type Admin = AdminClient<InterceptedService<Channel, BearerKey>>;

/// An Admin client on `channel` sending [`TEST_ADMIN_KEY`], with large
/// message limits.
pub fn admin_client(channel: Channel) -> Admin {
    admin_client_with_key(channel, BearerKey::new(TEST_ADMIN_KEY))
}

/// An Admin client on `channel` sending `key`.
pub fn admin_client_with_key(channel: Channel, key: BearerKey) -> Admin {
    AdminClient::with_interceptor(channel, key)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}
