//! How long sled's `flush_async` takes after one ~2.5 KiB insert (the floor under a commit's
//! latency: the leader and a follower each flush once per log append).
//!
//! `cargo run --release -p flagraft-store --example flush_latency [-- DIR]`
use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("flush-latency-{}", std::process::id())),
    };
    let db = sled::open(&dir)?;
    let tree = db.open_tree("log")?;
    let value = vec![7u8; 2560];
    let mut samples = Vec::new();
    for i in 0u64..2000 {
        tree.insert(i.to_be_bytes(), value.as_slice())?;
        let t = Instant::now();
        db.flush_async().await?;
        samples.push(t.elapsed().as_micros() as u64);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "flush_async after one 2.5 KiB insert: p50 {} us, p90 {} us, p99 {} us (n={})",
        at(0.5),
        at(0.9),
        at(0.99),
        samples.len()
    );
    drop(tree);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
