//! `mezzanine bench triggers` as a user runs it: it registers its plugin, writes through the
//! API in its three phases, accounts for every acknowledged write's event (received or lost)
//! and deletes its plugin at the end. Whether the events arrive is the delivery's business
//! (tests/tests/triggers); this holds either way.

use mezzanine_e2e::{client, get_json, TestServer, ADMIN_TOKEN};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mezzanine");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_accounts_for_every_acknowledged_write_and_deletes_its_plugin() {
    let (srv, _) = TestServer::fresh(1, 8).await;
    let out = tokio::process::Command::new(BIN)
        .args(["bench", "triggers", "--server", &srv.base, "--json"])
        .args([
            "--duration",
            "1s",
            "--outage",
            "1s",
            "--drain-timeout",
            "1s",
        ])
        .args(["--connections", "2"])
        .env("MEZZANINE_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench triggers failed:\n{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        stderr.contains("registered plugin bench-triggers-"),
        "{stderr}"
    );
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
