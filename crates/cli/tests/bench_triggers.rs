//! `mezzanine bench triggers` as a user runs it: it registers its plugin, writes through the
//! API in its three phases, accounts for every acknowledged write's event (received or lost)
//! and deletes its plugin at the end. Whether the events arrive is the delivery's business
//! (tests/tests/triggers); the first test holds either way, the second gives the bench a
//! stand-in delivery (in the test: each shard's cells read in `added_id` order and sent to the
//! plugin, each again until it is answered) and checks what it measures then.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mezzanine_e2e::{client, get_json, TestServer, ADMIN_TOKEN};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mezzanine");
const SHARDS: u32 = 8;

/// Runs `bench triggers` briefly against `srv`; its report and stderr.
async fn bench(srv: &TestServer, drain_timeout: &str) -> (Value, String) {
    let out = tokio::process::Command::new(BIN)
        .args(["bench", "triggers", "--server", &srv.base, "--json"])
        .args(["--duration", "1s", "--outage", "1s"])
        .args(["--drain-timeout", drain_timeout, "--connections", "2"])
        .env("MEZZANINE_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "bench triggers failed:\n{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        stderr.contains("registered plugin bench-triggers-"),
        "{stderr}"
    );
    (r, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_accounts_for_every_acknowledged_write_and_deletes_its_plugin() {
    let (srv, _) = TestServer::fresh(1, SHARDS).await;
    let (r, _) = bench(&srv, "1s").await;
    assert!(
        r["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{r}"
    );

    // Every phase wrote, and the totals are the phases' writes, each received or lost.
    let mut written = 0;
    for phase in ["saturation", "latency", "outage"] {
        let w = r[phase]["writes"]["writes"].as_u64().unwrap();
        assert!(w > 0, "no write in the {phase} phase: {r}");
        assert_eq!(r[phase]["writes"]["errors"], 0, "{r}");
        written += w;
    }
    let end = &r["end"];
    let n = |k: &str| end[k].as_u64().unwrap();
    assert_eq!(n("acknowledged"), written, "{end}");
    assert_eq!(
        n("lost") + n("received") - n("unacknowledged"),
        n("acknowledged"),
        "{end}"
    );
    assert_eq!(end["all_received"], n("lost") == 0, "{end}");
    assert_eq!(
        n("malformed_calls"),
        0,
        "the server's calls are cell.written: {end}"
    );
    assert_eq!(
        r["outage"]["receiver_down_secs"].as_f64().map(f64::round),
        Some(1.0)
    );
    let names: Vec<&str> = r["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "saturation delivered/s ÷ writes/s",
            "latency p99 (ms)",
            "outage drain/s ÷ writes/s",
            "events lost",
            "duplicates",
            "out of order (per shard)"
        ]
    );

    // The plugin is gone.
    let (status, plugins) = get_json(&client(), &srv.url("/v1/plugins")).await;
    assert_eq!(status, 200);
    assert_eq!(
        plugins,
        Value::Array(Vec::new()),
        "the bench left its plugin behind"
    );
    srv.stop().await;
}

/// A stand-in for the delivery: once the bench's plugin is registered, one task per shard reads
/// the shard's cells in `added_id` order and calls the plugin with each, again every 50 ms until
/// it answers 200, until `stop`.
fn stand_in_delivery(srv: &TestServer, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let base = srv.base.clone();
    tokio::spawn(async move {
        let c = client();
        let endpoint = loop {
            let (_, plugins) = get_json(&c, &format!("{base}/v1/plugins")).await;
            if let Some(e) = plugins[0]["endpoint"].as_str() {
                break e.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let shards: Vec<_> = (0..SHARDS)
            .map(|shard| {
                let (c, base, endpoint, stop) =
                    (c.clone(), base.clone(), endpoint.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut after = 0;
                    let mut id = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let path = format!(
                            "{base}/v1/cells/partitionRead?partition_number={shard}&read_type=2&added_id={after}&limit=100"
                        );
                        let (_, page) = get_json(&c, &path).await;
                        let page = page.as_array().cloned().unwrap_or_default();
                        if page.is_empty() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        for cell in page {
                            id += 1;
                            let mut params = cell.clone();
                            params["shard_id"] = json!(shard);
                            let call = json!({"jsonrpc": "2.0", "method": "cell.written",
                                "params": params, "id": id});
                            while !stop.load(Ordering::Relaxed) {
                                let sent = c.post(&endpoint).json(&call).send().await;
                                if sent.is_ok_and(|r| r.status() == 200) {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            after = cell["added_id"].as_i64().unwrap();
                        }
                    }
                })
            })
            .collect();
        for s in shards {
            let _ = s.await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_delivery_every_figure_is_measured() {
    let (srv, _) = TestServer::fresh(1, SHARDS).await;
    let stop = Arc::new(AtomicBool::new(false));
    let delivery = stand_in_delivery(&srv, stop.clone());
    let (r, stderr) = bench(&srv, "20s").await;
    stop.store(true, Ordering::Relaxed);
    delivery.await.unwrap();

    let end = &r["end"];
    assert_eq!(end["lost"], 0, "{end}\n{stderr}");
    assert_eq!(end["all_received"], true, "{end}");
    assert_eq!(
        end["out_of_order"], 0,
        "each shard is delivered in order: {end}"
    );
    assert_eq!(end["unacknowledged"], 0, "{end}");
    assert_eq!(end["malformed_calls"], 0, "{end}");
    let s = &r["saturation"];
    assert_eq!(s["all_delivered"], true, "{s}");
    assert_eq!(s["delivered"], s["writes"]["writes"], "{s}");
    assert!(s["ratio"].as_f64().unwrap() > 0.0, "{s}");
    assert!(s["drain_secs"].is_f64(), "{s}");
    let l = &r["latency"];
    assert_eq!(l["delivered"], l["writes"]["writes"], "{l}");
    for q in ["p50_ms", "p99_ms", "max_ms"] {
        assert!(l[q].is_f64(), "{q} not measured: {l}");
    }
    let o = &r["outage"];
    // Writes went on while the receiver was down: they were the backlog at its return.
    assert!(o["backlog_at_return"].as_u64().unwrap() > 0, "{o}");
    assert!(o["drain_secs"].is_f64() && o["ratio"].is_f64(), "{o}");
    assert!(
        o["drained_events"].as_u64().unwrap() >= o["backlog_at_return"].as_u64().unwrap(),
        "{o}"
    );
    let pass: Vec<&Value> = r["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["pass"])
        .collect();
    assert_eq!(pass[3], true, "no event lost: {r}");
    srv.stop().await;
}
