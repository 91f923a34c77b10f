//! Runs `STEPS` (default 1) training steps of one named case of the `train_step` bench and
//! prints the loss and the time of each, for peak-memory measurements of a whole process
//! (`tools/bench/convdeconv_memory_peer.py` reads the child's maximum resident set size).
//! Without a case it lists the cases and does nothing, so `cargo bench` stays light.
//!
//! `cargo bench -p vnr-models --bench train_step_once -- CASE [STEPS]`

use std::time::Instant;

mod support;

fn main() -> support::Result<()> {
    vnr_train::configure_process_for_training();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(name) = args.first() else {
        println!("usage: train_step_once CASE [STEPS]; cases:");
        for (name, what) in support::CASES {
            println!("  {name}: {what}");
        }
        return Ok(());
    };
    let steps: usize = match args.get(1) {
        Some(s) => s.parse().map_err(|e| format!("STEPS {s}: {e}"))?,
        None => 1,
    };
    let start = Instant::now();
    let mut step = support::Step::new(name)?;
    println!("{name}: built in {:.2} s", start.elapsed().as_secs_f64());
    for i in 0..steps {
        let start = Instant::now();
        let loss = step.run()?;
        println!(
            "{name}: step {i}: loss {loss:.6}, {:.1} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
