//! Start → banner: spawns `agent-runtime gateway --port 0` N times (fresh HOME each) and times
//! from `spawn()` until the `X-Pairing-Code:` line is read from its stdout.
//!
//! `cargo build --profile agent -p agent-runtime && cargo run --release -p agent-runtime --example
//! startup_bench -- [BINARY] [N]` (defaults: the shipped `agent`-profile binary, 20 runs). Prints each sample,
//! then min / median / max in milliseconds.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args.next().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/x86_64-unknown-linux-gnu/agent/agent-runtime"
        )
        .to_owned()
    });
    let n: usize = args.next().map_or(20, |s| s.parse().unwrap());
    let mut samples: Vec<Duration> = Vec::with_capacity(n);
    for i in 0..n {
        let home = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let mut child = Command::new(&bin)
            .args(["gateway", "--port", "0"])
            .env_clear()
            .env("HOME", home.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut elapsed = None;
        for line in BufReader::new(stdout).lines() {
            if line.unwrap().contains("X-Pairing-Code:") {
                elapsed = Some(started.elapsed());
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let e = elapsed.expect("banner printed");
        println!("run {i:2}: {:.2} ms", e.as_secs_f64() * 1e3);
        samples.push(e);
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "start->banner over {n} runs: min {:.2} ms, median {:.2} ms, max {:.2} ms",
        ms(samples[0]),
        ms(samples[n / 2]),
        ms(samples[n - 1])
    );
}
