//! `flagraft commit | get | history | diff | rollback`: a project's rules.

use crate::connect::{random_request_id, session, ClusterArgs};
use crate::entity_files;
use crate::table::{clip, render, short, time};
use anyhow::{bail, Result};
use flagraft_proto::admin::v1 as pb;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CommitArgs {
    /// Entity files (JSON or YAML): one entity {kind, name, body}, a list of
    /// them, or a whole download_config_specs document.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Also delete this entity (KIND/NAME, repeatable).
    #[arg(long, value_name = "KIND/NAME")]
    delete: Vec<String>,
    /// What the change is about (kept in history).
    #[arg(long, short, default_value = "")]
    message: String,
    /// Who made it (default: $USER).
    #[arg(long)]
    author: Option<String>,
    /// Fail with a conflict unless the project is at exactly this version.
    #[arg(long, value_name = "VERSION")]
    expect_version: Option<u64>,
    /// Idempotency key: the same id again returns the first commit's version
    /// (default: a random id, so this command's own retries are safe).
    #[arg(long)]
    request_id: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The ruleset as of this version (default: the current one).
    #[arg(long)]
    version: Option<u64>,
    /// DCS dialect of the document.
    #[arg(long, value_enum, default_value = "v1")]
    dialect: DialectArg,
    /// Only this entity (KIND/NAME), its body.
    #[arg(long, value_name = "KIND/NAME")]
    entity: Option<String>,
    /// Read through the leader, linearizably (default: whichever node answers).
    #[arg(long)]
    linearizable: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DialectArg {
    V1,
    V2,
}

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// Versions listed (the most recent ones, unless --from is given).
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// List from this version upwards.
    #[arg(long)]
    from: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// From this version...
    from: u64,
    /// ...to this one (default: the current version).
    to: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    /// Commit a new version whose ruleset equals this version's.
    version: u64,
    #[arg(long, short, default_value = "")]
    message: String,
    #[arg(long)]
    author: Option<String>,
    #[arg(long, value_name = "VERSION")]
    expect_version: Option<u64>,
    #[arg(long)]
    request_id: Option<String>,
}

fn author(given: &Option<String>) -> String {
    given
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "flagraft-cli".into())
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn commit(args: CommitArgs, c: &ClusterArgs) -> Result<()> {
    if args.files.is_empty() && args.delete.is_empty() {
        bail!("nothing to commit: give entity files and/or --delete KIND/NAME");
    }
    let upserts = entity_files::load(&args.files)?;
    let deletes = args
        .delete
        .iter()
        .map(|d| entity_files::parse_key(d))
        .collect::<Result<Vec<_>>>()?;
    let request_id = args.request_id.clone().unwrap_or_else(random_request_id);
    let req = pb::CommitRequest {
        project: c.project.clone(),
        upserts: upserts
            .iter()
            .map(|e| pb::Entity {
                kind: e.key.kind.as_str().into(),
                name: e.key.name.clone(),
                json: e.body.to_string(),
            })
            .collect(),
        deletes: deletes
            .iter()
            .map(|k| pb::EntityKey {
                kind: k.kind.as_str().into(),
                name: k.name.clone(),
            })
            .collect(),
        author: author(&args.author),
        message: args.message.clone(),
        expected_version: args.expect_version,
        request_id: Some(request_id.clone()),
    };
    let (rt, cluster) = session(c)?;
    let r = rt.block_on(cluster.call(|mut a| {
        let req = req.clone();
        async move { a.commit(req).await }
    }))?;
    if c.json {
        return print_json(&json!({
            "project": c.project, "version": r.version, "digest": r.digest,
            "commit_time_ms": r.commit_time_ms, "duplicate": r.duplicate,
            "request_id": request_id, "upserts": upserts.len(), "deletes": deletes.len(),
        }));
    }
    if r.duplicate {
        println!(
            "already committed as version {} of project {} (request id {request_id}); nothing new written",
            r.version, c.project
        );
    } else {
        println!(
            "committed version {} of project {} ({} upserted, {} deleted; digest {})",
            r.version,
            c.project,
            upserts.len(),
            deletes.len(),
            short(&r.digest)
        );
    }
    Ok(())
}

pub fn get(args: GetArgs, c: &ClusterArgs) -> Result<()> {
    let (rt, cluster) = session(c)?;
    if let Some(spec) = &args.entity {
        let key = entity_files::parse_key(spec)?;
        let req = pb::GetEntityRequest {
            project: c.project.clone(),
            kind: key.kind.as_str().into(),
            name: key.name.clone(),
            version: args.version,
            min_version: None,
        };
        let r = rt.block_on(cluster.call(|mut a| {
            let req = req.clone();
            async move { a.get_entity(req).await }
        }))?;
        let body: Value = match &r.entity {
            Some(e) => serde_json::from_str(&e.json)?,
            None => Value::Null,
        };
        if c.json {
            return print_json(&json!({
                "project": c.project, "version": r.version, "kind": key.kind.as_str(),
                "name": key.name, "body": body,
            }));
        }
        eprintln!("{key} in project {} at version {}", c.project, r.version);
        return print_json(&body);
    }
    let req = pb::GetRulesetRequest {
        project: c.project.clone(),
        version: args.version,
        dialect: match args.dialect {
            DialectArg::V1 => pb::Dialect::V1,
            DialectArg::V2 => pb::Dialect::V2,
        } as i32,
        consistency: if args.linearizable {
            pb::ReadConsistency::Linearizable as i32
        } else {
            pb::ReadConsistency::Unspecified as i32
        },
        min_version: None,
    };
    let r = rt.block_on(cluster.call(|mut a| {
        let req = req.clone();
        async move { a.get_ruleset(req).await }
    }))?;
    let dcs: Value = serde_json::from_str(&r.dcs_json)?;
    if c.json {
        return print_json(&json!({
            "project": c.project, "version": r.version, "digest": r.digest,
            "commit_time_ms": r.commit_time_ms, "entity_count": r.entity_count, "dcs": dcs,
        }));
    }
    eprintln!(
        "project {} at version {} ({} entities, digest {}, committed {})",
        c.project,
        r.version,
        r.entity_count,
        short(&r.digest),
        time(r.commit_time_ms)
    );
    print_json(&dcs)
}

fn record_json(r: &pb::VersionRecord) -> Value {
    json!({
        "version": r.version, "author": r.author, "message": r.message,
        "commit_time_ms": r.commit_time_ms, "request_id": r.request_id, "digest": r.digest,
        "upserts": r.upserts.iter().map(|e| format!("{}/{}", e.kind, e.name)).collect::<Vec<_>>(),
        "deletes": r.deletes.iter().map(|k| format!("{}/{}", k.kind, k.name)).collect::<Vec<_>>(),
    })
}

pub fn history(args: HistoryArgs, c: &ClusterArgs) -> Result<()> {
    let (rt, cluster) = session(c)?;
    let limit = args.limit.clamp(1, 1000);
    let page = |from: u64| pb::ListHistoryRequest {
        project: c.project.clone(),
        from_version: from,
        limit,
        min_version: None,
    };
    let from = match args.from {
        Some(f) => f,
        None => {
            let probe = page(u64::MAX);
            let head = rt.block_on(cluster.call(|mut a| {
                let req = probe.clone();
                async move { a.list_history(req).await }
            }))?;
            (head.current_version + 1)
                .saturating_sub(u64::from(limit))
                .max(1)
        }
    };
    let req = page(from);
    let r = rt.block_on(cluster.call(|mut a| {
        let req = req.clone();
        async move { a.list_history(req).await }
    }))?;
    if c.json {
        return print_json(&json!({
            "project": c.project, "current_version": r.current_version,
            "oldest_retained": r.oldest_retained, "next_from_version": r.next_from_version,
            "records": r.records.iter().map(record_json).collect::<Vec<_>>(),
        }));
    }
    println!(
        "project {}: version {} (history kept from version {})",
        c.project, r.current_version, r.oldest_retained
    );
    let rows: Vec<Vec<String>> = r
        .records
        .iter()
        .map(|rec| {
            vec![
                rec.version.to_string(),
                time(rec.commit_time_ms),
                clip(&rec.author, 16),
                format!("+{} -{}", rec.upserts.len(), rec.deletes.len()),
                short(&rec.digest).to_string(),
                clip(&rec.message, 60),
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &[
                "VERSION",
                "TIME (UTC)",
                "AUTHOR",
                "CHANGES",
                "DIGEST",
                "MESSAGE"
            ],
            &rows
        )
    );
    Ok(())
}

pub fn diff(args: DiffArgs, c: &ClusterArgs) -> Result<()> {
    let (rt, cluster) = session(c)?;
    let req = pb::DiffRequest {
        project: c.project.clone(),
        from_version: args.from,
        to_version: args.to,
    };
    let r = rt.block_on(cluster.call(|mut a| {
        let req = req.clone();
        async move { a.diff(req).await }
    }))?;
    let change_name = |ch: i32| match pb::ChangeKind::try_from(ch) {
        Ok(pb::ChangeKind::Added) => "added",
        Ok(pb::ChangeKind::Removed) => "removed",
        _ => "modified",
    };
    if c.json {
        let parse = |s: &str| -> Value {
            if s.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(s).unwrap_or(Value::Null)
            }
        };
        return print_json(&json!({
            "project": c.project, "from_version": r.from_version, "to_version": r.to_version,
            "from_digest": r.from_digest, "to_digest": r.to_digest,
            "changes": r.changes.iter().map(|ch| json!({
                "kind": ch.kind, "name": ch.name, "change": change_name(ch.change),
                "from": parse(&ch.from_json), "to": parse(&ch.to_json),
            })).collect::<Vec<_>>(),
        }));
    }
    println!(
        "project {}: version {} -> {}: {} change(s)",
        c.project,
        r.from_version,
        r.to_version,
        r.changes.len()
    );
    let rows: Vec<Vec<String>> = r
        .changes
        .iter()
        .map(|ch| {
            vec![
                change_name(ch.change).into(),
                ch.kind.clone(),
                ch.name.clone(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        print!("{}", render(&["CHANGE", "KIND", "NAME"], &rows));
    }
    Ok(())
}

pub fn rollback(args: RollbackArgs, c: &ClusterArgs) -> Result<()> {
    let (rt, cluster) = session(c)?;
    let request_id = args.request_id.clone().unwrap_or_else(random_request_id);
    let req = pb::RollbackRequest {
        project: c.project.clone(),
        to_version: args.version,
        author: author(&args.author),
        message: args.message.clone(),
        expected_version: args.expect_version,
        request_id: Some(request_id.clone()),
    };
    let r = rt.block_on(cluster.call(|mut a| {
        let req = req.clone();
        async move { a.rollback(req).await }
    }))?;
    if c.json {
        return print_json(&json!({
            "project": c.project, "rolled_back_to": args.version, "version": r.version,
            "digest": r.digest, "commit_time_ms": r.commit_time_ms, "duplicate": r.duplicate,
            "request_id": request_id,
        }));
    }
    println!(
        "project {}: version {} now has the ruleset of version {} (digest {}){}",
        c.project,
        r.version,
        args.version,
        short(&r.digest),
        if r.duplicate { " (already done)" } else { "" }
    );
    Ok(())
}
