//! The background network checker at scale: `n` READY sandboxes on the repo's default network
//! (bridge + host-local + portmap, the real plugins), crisp started with
//! `--cni-check-interval 30`. Measured: one whole round's live checks and CHECKs (wall time and
//! CPU, from the round report verbose Status carries), and plain vs verbose PodSandboxStatus
//! p50 between rounds (verbose must not be slower: it never runs a plugin).

use serde_json::{json, Value};
use std::time::{Duration, Instant};

use super::report::{ms, round3, Samples, Table};
use super::support::{try_status, Client};
use super::{chain_node, create_many, remove_many, Res};
use k8s_cri::v1 as cri;

const INTERVAL_SECS: u64 = 30;
/// Status calls of each kind.
const STATUS_CALLS: usize = 300;

pub struct Figures {
    n: usize,
    /// The round report of the first round that saw every sandbox.
    round: Value,
    plain: Samples,
    verbose: Samples,
}

impl Figures {
    pub fn verbose_p50(&self) -> f64 {
        self.verbose.pct(50.0)
    }

    pub fn plain_p50(&self) -> f64 {
        self.plain.pct(50.0)
    }

    fn figure(&self, key: &str) -> f64 {
        self.round[key].as_f64().unwrap_or(f64::NAN)
    }

    pub fn table(&self) -> String {
        let mut t = Table::new(
            &format!(
                "Background network checker, {} READY sandboxes on bridge + host-local + portmap",
                self.n
            ),
            &["figure", "value"],
        );
        for (name, value) in [
            (
                "live-check round, ms (statfs + address dump each)",
                format!("{:.1}", self.figure("liveMillis")),
            ),
            (
                "live-check round, CPU ms",
                format!("{:.1}", self.figure("liveCpuMillis")),
            ),
            (
                "CHECK round, ms (4 chains at a time)",
                format!("{:.1}", self.figure("checkMillis")),
            ),
            (
                "CHECK round, CPU ms (crisp + plugins)",
                format!("{:.1}", self.figure("checkCpuMillis")),
            ),
            (
                "CHECK chains run / failed",
                format!(
                    "{} / {}",
                    self.round["checksRun"], self.round["checksFailed"]
                ),
            ),
            ("PodSandboxStatus plain p50 ms", ms(self.plain.pct(50.0))),
            (
                "PodSandboxStatus verbose p50 ms",
                ms(self.verbose.pct(50.0)),
            ),
            (
                "PodSandboxStatus verbose p90 ms",
                ms(self.verbose.pct(90.0)),
            ),
        ] {
            t.row(vec![name.into(), value]);
        }
        t.render()
    }

    pub fn json(&self) -> Value {
        json!({
            "sandboxes": self.n,
            "interval_s": INTERVAL_SECS,
            "round": self.round,
            "status_plain": self.plain.json(),
            "status_verbose": self.verbose.json(),
            "verbose_over_plain_p50": round3(self.verbose.pct(50.0) / self.plain.pct(50.0)),
        })
    }
}

pub async fn measure(n: usize) -> Res<Figures> {
    let interval = INTERVAL_SECS.to_string();
    let node = chain_node(&["--cni-check-interval", &interval]).await?;
    let ids = create_many(&node, n, "check").await?;
    let mut client = node.client().await;
    let round = full_round(&mut client, n).await?;
    let mut plain = Samples::default();
    let mut verbose = Samples::default();
    for k in 0..STATUS_CALLS {
        let id = &ids[(k * 7919) % ids.len()];
        for (samples, v) in [(&mut plain, false), (&mut verbose, true)] {
            let t = Instant::now();
            try_status(&mut client, id, v).await?;
            samples.push(t.elapsed());
        }
    }
    drop(client);
    remove_many(&node, &ids).await?;
    Ok(Figures {
        n,
        round,
        plain,
        verbose,
    })
}

/// Waits for a round that began after every sandbox was READY and returns its report.
async fn full_round(client: &mut Client, n: usize) -> Res<Value> {
    let started = checker_status(client).await?["rounds"]
        .as_u64()
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(INTERVAL_SECS * 4 + 600);
    loop {
        let status = checker_status(client).await?;
        let round = &status["lastRound"];
        let rounds = status["rounds"].as_u64().unwrap_or(0);
        if rounds > started && round["sandboxes"].as_u64() == Some(n as u64) {
            return Ok(round.clone());
        }
        if Instant::now() > deadline {
            return Err(format!("no checker round saw all {n} sandboxes: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn checker_status(client: &mut Client) -> Res<Value> {
    let info = client
        .status(cri::StatusRequest { verbose: true })
        .await
        .map_err(|e| format!("Status: {e}"))?
        .into_inner()
        .info;
    let text = info
        .get("networkChecker")
        .ok_or("verbose Status has no networkChecker")?;
    serde_json::from_str(text).map_err(|e| format!("networkChecker: {e}"))
}
