//! `flagraft projects | keys | cluster`: projects, API keys, membership.

use crate::connect::{session, ClusterArgs};
use crate::table::{render, short, time};
use anyhow::{bail, Result};
use clap::Subcommand;
use flagraft_proto::admin::v1 as pb;
use serde_json::{json, Value};

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum ProjectsCmd {
    /// Every project with its version.
    List,
    /// Create an empty project.
    Create { name: String },
    /// Delete a project, its rules, history and keys.
    Delete {
        name: String,
        /// Required: deleting cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

fn project_json(p: &pb::ProjectInfo) -> Value {
    json!({
        "name": p.name, "version": p.version, "digest": p.digest,
        "commit_time_ms": p.commit_time_ms, "entity_count": p.entity_count,
    })
}

pub fn projects(cmd: ProjectsCmd, c: &ClusterArgs) -> Result<()> {
    let (rt, cluster) = session(c)?;
    match cmd {
        ProjectsCmd::List => {
            let r = rt
                .block_on(cluster.call(|mut a| async move {
                    a.list_projects(pb::ListProjectsRequest {}).await
                }))?;
            if c.json {
                return print_json(&json!(r
                    .projects
                    .iter()
                    .map(project_json)
                    .collect::<Vec<_>>()));
            }
            let rows: Vec<Vec<String>> = r
                .projects
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.version.to_string(),
                        p.entity_count.to_string(),
                        short(&p.digest).to_string(),
                        time(p.commit_time_ms),
                    ]
                })
                .collect();
            print!(
                "{}",
                render(
                    &[
                        "PROJECT",
                        "VERSION",
                        "ENTITIES",
                        "DIGEST",
                        "LAST CHANGE (UTC)"
                    ],
                    &rows
                )
            );
        }
        ProjectsCmd::Create { name } => {
            let req = pb::CreateProjectRequest { name };
            let p = rt.block_on(cluster.call(|mut a| {
                let req = req.clone();
                async move { a.create_project(req).await }
            }))?;
            if c.json {
                return print_json(&project_json(&p));
            }
            println!("created project {}", p.name);
        }
        ProjectsCmd::Delete { name, yes } => {
            if !yes {
                bail!("deleting project {name} removes its rules, history and keys: add --yes");
            }
            let req = pb::DeleteProjectRequest { name: name.clone() };
            rt.block_on(cluster.call(|mut a| {
                let req = req.clone();
                async move { a.delete_project(req).await }
            }))?;
            if c.json {
                return print_json(&json!({"deleted": name}));
            }
            println!("deleted project {name} (its keys are revoked)");
        }
    }
    Ok(())
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindArg {
    /// Reads a project's whole rules (server SDKs, the update stream).
    Server,
    /// Reads pre-evaluated values of a project (browsers, mobile apps).
    Client,
    /// Calls the Admin API (cluster-wide).
    Admin,
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Keys of the project (--project) and admin keys.
    List {
        /// Also revoked keys.
        #[arg(long)]
        all: bool,
    },
    /// Create a key; its secret is printed once and never again.
    Create {
        #[arg(long, value_enum)]
        kind: KindArg,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Revoke a key by id (open streams using it are closed).
    Revoke { id: String },
}

fn kind_name(k: i32) -> &'static str {
    match pb::KeyKind::try_from(k) {
        Ok(pb::KeyKind::Server) => "server",
        Ok(pb::KeyKind::Client) => "client",
        Ok(pb::KeyKind::Admin) => "admin",
        _ => "?",
    }
}

fn key_json(k: &pb::KeyInfo) -> Value {
    json!({
        "id": k.id, "project": k.project, "kind": kind_name(k.kind),
        "description": k.description, "created_ms": k.created_ms, "revoked_ms": k.revoked_ms,
    })
}

pub fn keys(cmd: KeysCmd, c: &ClusterArgs) -> Result<()> {
    let (rt, cluster) = session(c)?;
    match cmd {
        KeysCmd::List { all } => {
            let req = pb::ListKeysRequest {
                project: c.project.clone(),
                include_revoked: all,
            };
            let r = rt.block_on(cluster.call(|mut a| {
                let req = req.clone();
                async move { a.list_keys(req).await }
            }))?;
            if c.json {
                return print_json(&json!(r.keys.iter().map(key_json).collect::<Vec<_>>()));
            }
            let rows: Vec<Vec<String>> = r
                .keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        kind_name(k.kind).into(),
                        if k.project.is_empty() {
                            "*".into()
                        } else {
                            k.project.clone()
                        },
                        time(k.created_ms),
                        k.revoked_ms.map_or("-".into(), time),
                        k.description.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                render(
                    &[
                        "ID",
                        "KIND",
                        "PROJECT",
                        "CREATED (UTC)",
                        "REVOKED",
                        "DESCRIPTION"
                    ],
                    &rows
                )
            );
        }
        KeysCmd::Create { kind, description } => {
            let req = pb::CreateKeyRequest {
                project: if kind == KindArg::Admin {
                    String::new()
                } else {
                    c.project.clone()
                },
                kind: match kind {
                    KindArg::Server => pb::KeyKind::Server,
                    KindArg::Client => pb::KeyKind::Client,
                    KindArg::Admin => pb::KeyKind::Admin,
                } as i32,
                description,
            };
            let r = rt.block_on(cluster.call(|mut a| {
                let req = req.clone();
                async move { a.create_key(req).await }
            }))?;
            let info = r.key.unwrap_or_default();
            if c.json {
                let mut v = key_json(&info);
                v["secret"] = json!(r.secret);
                return print_json(&v);
            }
            let scope = if info.project.is_empty() {
                "the cluster".to_string()
            } else {
                format!("project {}", info.project)
            };
            println!(
                "created {} key {} for {scope}:",
                kind_name(info.kind),
                info.id
            );
            println!("{}", r.secret);
            eprintln!("the key is shown only this once: store it now");
        }
        KeysCmd::Revoke { id } => {
            let req = pb::RevokeKeyRequest { id };
            let k = rt.block_on(cluster.call(|mut a| {
                let req = req.clone();
                async move { a.revoke_key(req).await }
            }))?;
            if c.json {
                return print_json(&key_json(&k));
            }
            println!("revoked {} key {}", kind_name(k.kind), k.id);
        }
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Leader, term and every member with its applied index, lag and versions.
    Status,
    /// Add a node as a learner (it replicates but does not vote).
    AddLearner {
        #[arg(long)]
        node_id: u64,
        #[arg(long)]
        raft_addr: String,
        #[arg(long)]
        admin_addr: String,
        #[arg(long)]
        http_addr: String,
        /// Return at once instead of waiting for the learner to catch up.
        #[arg(long)]
        no_wait: bool,
    },
    /// Make a learner a voter.
    Promote { node_id: u64 },
    /// Remove a node (voter or learner) from the cluster.
    Remove { node_id: u64 },
}

fn membership_line(r: &pb::MembershipResponse) -> String {
    format!(
        "voters {:?}, learners {:?} (log index {})",
        r.voters, r.learners, r.log_index
    )
}

fn membership_json(r: &pb::MembershipResponse) -> Value {
    json!({"voters": r.voters, "learners": r.learners, "log_index": r.log_index})
}

pub fn cluster(cmd: ClusterCmd, c: &ClusterArgs) -> Result<()> {
    let (rt, cluster) = session(c)?;
    match cmd {
        ClusterCmd::Status => {
            let s = rt.block_on(cluster.call(|mut a| async move {
                a.get_cluster_members(pb::GetClusterMembersRequest {}).await
            }))?;
            if c.json {
                return print_json(&json!({
                    "cluster": s.cluster, "answered_by": s.node_id, "leader": s.leader_id,
                    "term": s.term, "voters": s.voters, "learners": s.learners,
                    "members": s.members.iter().map(|m| json!({
                        "node_id": m.node_id, "voter": m.voter, "reachable": m.reachable,
                        "error": m.error, "role": m.role, "term": m.term,
                        "applied_index": m.applied_index, "lag": m.lag,
                        "project_versions": m.project_versions,
                        "admin_addr": m.address.as_ref().map(|a| a.admin_addr.clone()),
                        "http_addr": m.address.as_ref().map(|a| a.http_addr.clone()),
                    })).collect::<Vec<_>>(),
                }));
            }
            let leader = s
                .leader_id
                .map_or("none".to_string(), |l| format!("node {l}"));
            println!("cluster {}: leader {leader}, term {}", s.cluster, s.term);
            let rows: Vec<Vec<String>> = s
                .members
                .iter()
                .map(|m| {
                    let addr = m.address.clone().unwrap_or_default();
                    let mut versions: Vec<String> = m
                        .project_versions
                        .iter()
                        .map(|(p, v)| format!("{p}@{v}"))
                        .collect();
                    versions.sort();
                    if m.reachable {
                        vec![
                            m.node_id.to_string(),
                            m.role.clone(),
                            if m.voter { "voter" } else { "learner" }.into(),
                            m.applied_index.to_string(),
                            m.lag.to_string(),
                            addr.admin_addr,
                            versions.join(" "),
                        ]
                    } else {
                        vec![
                            m.node_id.to_string(),
                            "unreachable".into(),
                            if m.voter { "voter" } else { "learner" }.into(),
                            "-".into(),
                            "-".into(),
                            addr.admin_addr,
                            m.error.clone(),
                        ]
                    }
                })
                .collect();
            print!(
                "{}",
                render(
                    &["NODE", "ROLE", "MEMBER", "APPLIED", "LAG", "ADMIN", "VERSIONS"],
                    &rows
                )
            );
        }
        ClusterCmd::AddLearner {
            node_id,
            raft_addr,
            admin_addr,
            http_addr,
            no_wait,
        } => {
            let req = pb::AddLearnerRequest {
                node: Some(pb::NodeAddress {
                    node_id,
                    raft_addr,
                    admin_addr,
                    http_addr,
                }),
                blocking: !no_wait,
            };
            let r = rt.block_on(cluster.call(|mut a| {
                let req = req.clone();
                async move { a.add_learner(req).await }
            }))?;
            if c.json {
                return print_json(&membership_json(&r));
            }
            println!("added node {node_id} as a learner: {}", membership_line(&r));
        }
        ClusterCmd::Promote { node_id } => {
            let s = rt.block_on(cluster.call(|mut a| async move {
                a.get_cluster_status(pb::GetClusterStatusRequest {}).await
            }))?;
            if !s.learners.contains(&node_id) && !s.voters.contains(&node_id) {
                bail!("node {node_id} is not a member: add it with `flagraft cluster add-learner` first");
            }
            let mut voters = s.voters.clone();
            if !voters.contains(&node_id) {
                voters.push(node_id);
            }
            let req = pb::ChangeMembershipRequest {
                voters,
                retain: true,
            };
            let r = rt.block_on(cluster.call(|mut a| {
                let req = req.clone();
                async move { a.change_membership(req).await }
            }))?;
            if c.json {
                return print_json(&membership_json(&r));
            }
            println!("node {node_id} is a voter: {}", membership_line(&r));
        }
        ClusterCmd::Remove { node_id } => {
            let req = pb::RemoveNodeRequest { node_id };
            let r = rt.block_on(cluster.call(|mut a| async move { a.remove_node(req).await }))?;
            if c.json {
                return print_json(&membership_json(&r));
            }
            println!("removed node {node_id}: {}", membership_line(&r));
        }
    }
    Ok(())
}
