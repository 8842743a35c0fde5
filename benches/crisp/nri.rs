//! What NRI costs a Run: RunPodSandbox p50 on a crisp with `--nri on` and one no-op plugin
//! (`nri-test-plugin`, accepting every event; it appends one line per event to its log)
//! against a crisp with NRI off, same network, cycles interleaved so both see the same machine.

use std::time::{Duration, Instant};

use crate::report::{ms, Samples, Table};
use crate::support::try_stop_pod;
use crate::support::{enable_nri, pod_config_in, try_remove_pod, try_run_pod, try_status};
use crate::support::{Client, Node, TestPlugin};
use crate::{chain_list, Res};

pub struct NriCost {
    pub off: Samples,
    pub on: Samples,
    /// The plugin's RunPodSandbox round trip as crisp timed it (verbose `nriHooks`).
    pub hook: Samples,
}

impl NriCost {
    /// p50 with NRI on minus p50 with it off, in ms.
    pub fn added_p50(&self) -> f64 {
        self.on.pct(50.0) - self.off.pct(50.0)
    }

    pub fn table(&self, n: usize) -> String {
        let mut t = Table::new(
            &format!("NRI: one no-op plugin against NRI off, N={n}"),
            &["figure", "off", "on", "added"],
        );
        for p in [50.0, 90.0] {
            let (off, on) = (self.off.pct(p), self.on.pct(p));
            let name = format!("RunPodSandbox p{p:.0} ms");
            t.row(vec![name, ms(off), ms(on), ms(on - off)]);
        }
        for p in [50.0, 90.0] {
            let name = format!("plugin's RunPodSandbox hook p{p:.0} ms");
            t.row(vec![
                name,
                "-".into(),
                ms(self.hook.pct(p)),
                ms(self.hook.pct(p)),
            ]);
        }
        t.render()
    }
}

async fn node(nri: bool) -> Res<Node> {
    let mut node = crate::bench_node();
    if nri {
        enable_nri(&mut node, 2);
    }
    let list = chain_list(&node.ipam_dir)?;
    node.write_conf("10-crisp.conflist", &list.to_string());
    node.start_daemon().await;
    Ok(node)
}

/// One Run → Stop → Remove; the Run's time and the plugin's Run hook time (when NRI is on).
async fn timed_run(client: &mut Client, node: &Node, name: &str) -> Res<(Duration, Duration)> {
    let logs = node.dir.join("logs");
    let t = Instant::now();
    let id = try_run_pod(client, pod_config_in(&logs, name)).await?;
    let took = t.elapsed();
    let hook = hook_time(client, &id).await?;
    try_stop_pod(client, &id).await?;
    try_remove_pod(client, &id).await?;
    Ok((took, hook))
}

async fn hook_time(client: &mut Client, id: &str) -> Res<Duration> {
    let status = try_status(client, id, true).await?;
    let info = status
        .info
        .get("info")
        .ok_or("verbose status has no info")?;
    let info: serde_json::Value = serde_json::from_str(info).map_err(|e| e.to_string())?;
    let micros = info["nriHooks"][0]["micros"].as_u64().unwrap_or(0);
    Ok(Duration::from_micros(micros))
}

/// `n` Runs on each node (after 3 warm-up cycles each), interleaved.
pub async fn measure(n: usize) -> Res<NriCost> {
    let off = node(false).await?;
    let on = node(true).await?;
    let mut off_client = off.client().await;
    let mut on_client = on.client().await;
    let socket = on.dir.join("nri.sock");
    let log = on.dir.join("noop.log");
    let _plugin = TestPlugin::connect(&mut on_client, &socket, "50-noop", &log, &[]).await;
    let mut cost = NriCost {
        off: Samples::default(),
        on: Samples::default(),
        hook: Samples::default(),
    };
    for i in 0..n + 3 {
        // Alternate which goes first, so neither always runs right after the other's Remove.
        let (a, (b, hook)) = if i % 2 == 0 {
            let a = timed_run(&mut off_client, &off, &format!("nri-off-{i}")).await?;
            (
                a.0,
                timed_run(&mut on_client, &on, &format!("nri-on-{i}")).await?,
            )
        } else {
            let b = timed_run(&mut on_client, &on, &format!("nri-on-{i}")).await?;
            (
                timed_run(&mut off_client, &off, &format!("nri-off-{i}"))
                    .await?
                    .0,
                b,
            )
        };
        if i >= 3 {
            cost.off.push(a);
            cost.on.push(b);
            cost.hook.push(hook);
        }
    }
    Ok(cost)
}
