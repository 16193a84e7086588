//! `flagraft eval`: evaluate every entity of a ruleset for every user.
//!
//! Prints one JSON line per (user, entity) in the order and with the fields
//! of the shared evaluation cases (`flagraft_client::report`). `--explain`
//! follows each line with the deciding rule and every condition's outcome
//! with the values compared. `--bench` instead measures single-threaded
//! evaluations per second (median of several rounds).

use anyhow::{bail, Context, Result};
use flagraft_client::eval::TraceLine;
use flagraft_client::ip::IpTable;
use flagraft_client::report::{self, Kind, Target};
use flagraft_client::{CompiledRuleset, EvalOptions, User};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// download_config_specs document (v1 or v2 dialect).
    #[arg(long, value_name = "DCS.json")]
    specs: PathBuf,
    /// JSON array of Statsig user objects.
    #[arg(long, value_name = "USERS.json")]
    users: PathBuf,
    /// ID-list members as raw unit IDs: {"list": ["id", ...]}.
    #[arg(long, value_name = "IDLISTS.json")]
    id_lists: Option<PathBuf>,
    /// SDK environment tier, used when a user has no statsigEnvironment tier.
    #[arg(long, value_name = "TIER")]
    environment: Option<String>,
    /// IP-to-country table (IP2Location LITE DB1 CSV); without it only a
    /// user's own `country` counts for ip_based conditions.
    #[arg(long, value_name = "CSV")]
    ip_table: Option<PathBuf>,
    /// Evaluate at this time (epoch ms) instead of now.
    #[arg(long, value_name = "MS")]
    now_ms: Option<i64>,
    /// After each line, explain the deciding rule and every condition.
    #[arg(long, conflicts_with = "bench")]
    explain: bool,
    /// Measure single-threaded evaluations per second instead of printing.
    #[arg(long)]
    bench: bool,
    /// Benchmark rounds (the median is reported).
    #[arg(long, default_value_t = 7, requires = "bench")]
    rounds: u32,
    /// Do not print ruleset warnings on stderr.
    #[arg(long)]
    quiet: bool,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

fn load_ruleset(args: &Args) -> Result<CompiledRuleset> {
    let dcs = read(&args.specs, "--specs")?;
    let mut entities = flagraft_client::entities_from_dcs(&dcs)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.specs.display()))?;
    if let Some(p) = &args.id_lists {
        let lists = read(p, "--id-lists")?;
        let more = flagraft_client::dcs::id_list_entities(&lists)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        entities.extend(more);
    }
    let (rs, problems) = CompiledRuleset::compile_lenient(&entities);
    if problems.iter().any(|p| p.is_error()) {
        let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        bail!(
            "{}: the ruleset is invalid\n{}",
            args.specs.display(),
            lines.join("\n")
        );
    }
    if !args.quiet {
        for p in &problems {
            eprintln!("{p}");
        }
    }
    Ok(rs)
}

fn load_users(path: &Path) -> Result<Vec<User>> {
    let bytes = read(path, "--users")?;
    let v: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let Value::Array(items) = v else {
        bail!("{}: expected a JSON array of users", path.display());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, u)| User::from_json(u).with_context(|| format!("{}: user {i}", path.display())))
        .collect()
}

pub fn run(args: Args) -> Result<()> {
    let rs = load_ruleset(&args)?;
    let users = load_users(&args.users)?;
    let mut opts = EvalOptions::default();
    if let Some(tier) = &args.environment {
        opts = opts.with_environment(tier);
    }
    if let Some(p) = &args.ip_table {
        let table = IpTable::load(p)?;
        opts = opts.with_ip_table(Arc::new(table));
    }
    if let Some(now) = args.now_ms {
        opts = opts.with_now_ms(now);
    }
    let targets = report::targets(&rs);
    if args.bench {
        return bench(&rs, &users, &targets, &opts, args.rounds.max(1));
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (i, user) in users.iter().enumerate() {
        for t in &targets {
            let line = report::line(&rs, i, user, t, &opts);
            writeln!(out, "{}", report::line_text(&line))?;
            if args.explain {
                for l in explain(&rs, user, t, &opts) {
                    let indent = "  ".repeat(2 * l.depth as usize + 1);
                    writeln!(out, "{indent}{}", l.text)?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn explain(rs: &CompiledRuleset, user: &User, t: &Target, opts: &EvalOptions) -> Vec<TraceLine> {
    let mut trace = Vec::new();
    match t.kind {
        Kind::Gate => {
            rs.check_gate_traced(user, &t.name, opts, Some(&mut trace));
        }
        Kind::Config | Kind::Experiment => {
            rs.eval_config_traced(false, user, &t.name, opts, Some(&mut trace));
        }
        Kind::Layer => {
            rs.eval_config_traced(true, user, &t.name, opts, Some(&mut trace));
        }
    }
    trace
}

/// One evaluation, kept from being optimised away.
fn eval_once(rs: &CompiledRuleset, user: &User, t: &Target, opts: &EvalOptions) {
    match t.kind {
        Kind::Gate => {
            std::hint::black_box(rs.check_gate(user, &t.name, opts));
        }
        Kind::Config | Kind::Experiment => {
            std::hint::black_box(rs.get_config(user, &t.name, opts));
        }
        Kind::Layer => {
            std::hint::black_box(rs.get_layer(user, &t.name, opts));
        }
    }
}

fn bench(
    rs: &CompiledRuleset,
    users: &[User],
    targets: &[Target],
    opts: &EvalOptions,
    rounds: u32,
) -> Result<()> {
    let per_pass = users.len() * targets.len();
    if per_pass == 0 {
        bail!(
            "nothing to evaluate: {} users, {} entities",
            users.len(),
            targets.len()
        );
    }
    // Users are prepared once (as an SDK does per request); warm up so lazy
    // state (user-agent parser, parsed agents) is built before timing.
    for u in users {
        for t in targets {
            eval_once(rs, u, t, opts);
        }
    }
    // Each round runs whole passes for at least ~200 ms.
    let mut rates = Vec::new();
    for round in 1..=rounds {
        let start = Instant::now();
        let mut evals = 0usize;
        while start.elapsed().as_millis() < 200 {
            for u in users {
                for t in targets {
                    eval_once(rs, u, t, opts);
                }
            }
            evals += per_pass;
        }
        let rate = evals as f64 / start.elapsed().as_secs_f64();
        println!("round {round}: {evals} evals, {rate:.0} evals/s");
        rates.push(rate);
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    let median = rates[rates.len() / 2];
    println!(
        "users {} entities {} evaluations per pass {}",
        users.len(),
        targets.len(),
        per_pass
    );
    println!("evals_per_sec {median:.0}");
    Ok(())
}
