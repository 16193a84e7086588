//! flagraft's gRPC messages and services, generated from `proto/`.
//!
//! - [`raft::v1`]: node-to-node Raft transport (`flagraft.raft.v1.Raft`); its
//!   payloads are bincode-2 encodings of openraft's own types (see the .proto).
//! - [`admin::v1`]: the Admin API (`flagraft.admin.v1.Admin`).

pub mod raft {
    pub mod v1 {
        tonic::include_proto!("flagraft.raft.v1");
    }
}

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("flagraft.admin.v1");
    }
}

#[cfg(test)]
mod tests {
    use super::admin::v1::{CommitRequest, Entity};
    use prost::Message;

    #[test]
    fn optional_fields_keep_presence_through_encoding() {
        let req = CommitRequest {
            project: "default".into(),
            upserts: vec![Entity {
                kind: "gate".into(),
                name: "g".into(),
                json: "{}".into(),
            }],
            expected_version: Some(0),
            request_id: None,
            ..Default::default()
        };
        let decoded = CommitRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, req);
        assert_eq!(decoded.expected_version, Some(0));
        assert_eq!(decoded.request_id, None);
    }
}
