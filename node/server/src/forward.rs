//! Relaying admin calls to the leader's admin address.
//!
//! A node that is not the leader sends the call, unchanged, to the leader's
//! `admin` address (from the Raft membership) and relays the answer. The
//! relayed request carries `x-flagraft-forwarded`; a node receiving such a
//! request that is not (or no longer) the leader answers UNAVAILABLE instead of
//! forwarding again, so a request crosses at most one hop.

use crate::limits::{ADMIN_MAX_MESSAGE_BYTES, CONNECT_TIMEOUT};
use flagraft_proto::admin::v1::admin_client::AdminClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

pub const FORWARDED_HEADER: &str = "x-flagraft-forwarded";
const AUTHORIZATION: &str = "authorization";

#[derive(Clone)]
pub struct Forwarder {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    timeout: Duration,
}

impl Forwarder {
    /// `timeout` bounds each relayed call (config `raft.rpc_timeout_ms`).
    pub fn new(timeout: Duration) -> Self {
        Forwarder {
            channels: Arc::default(),
            timeout,
        }
    }

    /// The request to send to the leader: same message, marked as forwarded.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        req.metadata_mut().insert(
            FORWARDED_HEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        req.set_timeout(self.timeout);
        req
    }

    /// Like [`Forwarder::request`], carrying the caller's credentials along:
    /// the leader authenticates the call again.
    pub fn relay<T>(&self, from: &tonic::metadata::MetadataMap, message: T) -> Request<T> {
        let mut req = self.request(message);
        if let Some(auth) = from.get(AUTHORIZATION) {
            req.metadata_mut().insert(AUTHORIZATION, auth.clone());
        }
        req
    }

    /// A client for `addr` ("host:port"), over a cached lazily-connected channel.
    pub fn client(&self, addr: &str) -> Result<AdminClient<Channel>, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| Status::internal(format!("leader address {addr}: {e}")))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .connect_lazy();
                channels.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(AdminClient::new(channel)
            .max_decoding_message_size(ADMIN_MAX_MESSAGE_BYTES)
            .max_encoding_message_size(ADMIN_MAX_MESSAGE_BYTES))
    }
}

pub fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED_HEADER)
}
