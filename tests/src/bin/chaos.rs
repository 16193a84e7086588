//! `chaos`: runs the chaos rig (or re-checks a saved history) and prints the verdict.
//!
//! ```text
//! chaos --duration 60s --seed 42            # a run; needs root (network namespaces)
//! chaos --check target/chaos/run-42/history.json
//! ```
//!
//! Exit status: 0 every check passed; 1 a violation; 2 undecided (e.g. the
//! linearizability search ran out of budget); 3 the rig itself failed.

use anyhow::Context;
use clap::Parser;
use flagraft_cluster_tests::chaos::check::{self, CheckOptions, Report, Verdict};
use flagraft_cluster_tests::chaos::history::History;
use flagraft_cluster_tests::chaos::rig::{self, RigOptions};
use flagraft_cluster_tests::chaos::workload::WorkloadOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(name = "chaos", about = "flagraft chaos rig: faults, history, checker")]
struct Args {
    /// How long faults are injected: 90, 60s, 10m, 1h.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule and the workload (default: from the clock; always printed).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 4)]
    writers: usize,
    #[arg(long, default_value_t = 2)]
    readers: usize,
    #[arg(long, default_value_t = 3)]
    subscribers: usize,
    /// Run directory (configs, data, logs, history.json, report.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The flagraft-node binary (default: next to this one).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Do not run anything: check this saved history.
    #[arg(long)]
    check: Option<PathBuf>,
    /// Linearizability search budget in seconds.
    #[arg(long, default_value_t = 300)]
    search_secs: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m or h)")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() {
    let code = match real_main() {
        Ok(v) => match v {
            Verdict::Pass | Verdict::NotExercised => 0,
            Verdict::Fail => 1,
            Verdict::Unknown => 2,
        },
        Err(e) => {
            eprintln!("chaos: error: {e:#}");
            3
        }
    };
    std::process::exit(code);
}

fn real_main() -> anyhow::Result<Verdict> {
    let args = Args::parse();
    let opts = CheckOptions {
        budget: flagraft_cluster_tests::chaos::linear::Budget {
            max_time: Duration::from_secs(args.search_secs),
            ..Default::default()
        },
        ..CheckOptions::default()
    };
    if let Some(path) = &args.check {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let history = History::from_json(&text).context("parse history")?;
        println!("seed: {}", history.seed);
        let report = check::check(&history, &opts);
        let out = path.with_file_name("report.json");
        return finish(&history, &report, &out);
    }
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000)
    });
    println!("seed: {seed}");
    let exe = std::env::current_exe().context("current exe")?;
    let bin_dir = exe.parent().context("exe dir")?;
    let node_binary = args
        .node_bin
        .clone()
        .unwrap_or_else(|| bin_dir.join("flagraft-node"));
    anyhow::ensure!(
        node_binary.is_file(),
        "{} not found (build it: cargo build -p flagraft-node)",
        node_binary.display()
    );
    let dir = args.out.clone().unwrap_or_else(|| {
        bin_dir
            .parent()
            .unwrap_or(bin_dir)
            .join("chaos")
            .join(format!("run-{seed}-{}", std::process::id()))
    });
    println!(
        "chaos: {:?} of faults, {} writers, {} readers, {} subscribers; run dir {}",
        args.duration,
        args.writers,
        args.readers,
        args.subscribers,
        dir.display()
    );
    let rig_opts = RigOptions {
        seed,
        duration: args.duration,
        workload: WorkloadOptions {
            writers: args.writers,
            readers: args.readers,
            subscribers: args.subscribers,
            ..WorkloadOptions::default()
        },
        dir: dir.clone(),
        node_binary,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let history = runtime.block_on(rig::run(&rig_opts))?;
    drop(runtime);
    let hist_path = dir.join("history.json");
    std::fs::write(&hist_path, history.to_json()?).context("write history")?;
    println!("history: {}", hist_path.display());
    let report = check::check(&history, &opts);
    finish(&history, &report, &dir.join("report.json"))
}

fn finish(history: &History, report: &Report, out: &Path) -> anyhow::Result<Verdict> {
    std::fs::write(out, serde_json::to_string_pretty(report)?).context("write report")?;
    let c = &report.counts;
    println!(
        "operations: {} ({} commits ok, {} conflicts, {} failed, {} unknown [{} found applied, {} not]; {} reads ok, {} reads unknown; {} attempts)",
        c.operations,
        c.commits_ok,
        c.commits_conflict,
        c.commits_failed,
        c.commits_unknown,
        c.unknown_found_applied,
        c.unknown_found_not_applied,
        c.reads_ok,
        c.reads_unknown,
        c.attempts
    );
    println!(
        "subscribers: {} with {} observations; final version {:?}",
        c.subscribers, c.observations, c.final_version
    );
    println!("faults: {:?}", c.faults);
    for (class, s) in &report.unavailability.per_class {
        println!(
            "  commit unavailability after {class}: {} faults, p50 {} ms, max {} ms{}",
            s.faults,
            fmt_ms(s.p50_ms),
            fmt_ms(s.max_ms),
            if s.never_recovered_in_window > 0 {
                format!(
                    ", {} without an ack before the next fault",
                    s.never_recovered_in_window
                )
            } else {
                String::new()
            }
        );
    }
    for i in &history.incidents {
        println!("incident: {i}");
    }
    print!("{}", report.render());
    println!("report: {}", out.display());
    if let Some(why) = &history.rig_failure {
        anyhow::bail!("the rig did not complete its run: {why}");
    }
    Ok(report.verdict)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}
