//! The HTTP side: the operations through the API, the seed rows, and the server's memory
//! from `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use hyper::Method;
use mezzanine_core::NewCell;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::conn::Conn;
use super::runner::{OpFn, OpFuture};
use super::{fresh_cells, new_cell, Op, Workload, COLUMNS, MAX_BATCH};

#[derive(Deserialize)]
struct BatchReply {
    results: Vec<BatchStatus>,
}

#[derive(Deserialize)]
struct BatchStatus {
    status: u16,
}

/// An answer other than 2xx, or a batch with cells that were not stored (`statuses`: theirs).
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Refused {
    what: String,
    statuses: Vec<u16>,
}

impl Refused {
    /// Whether the server only said that it is unavailable for now (503): worth sending again.
    fn unavailable(e: &anyhow::Error) -> bool {
        e.downcast_ref::<Refused>()
            .is_some_and(|r| !r.statuses.is_empty() && r.statuses.iter().all(|&s| s == 503))
    }

    /// A whole answer: its body when the status is 2xx, otherwise an error that quotes it.
    pub fn check(status: u16, body: bytes::Bytes) -> anyhow::Result<bytes::Bytes> {
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        let reason = reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        Err(Refused {
            what: format!("HTTP {status} {reason}: {text}"),
            statuses: vec![status],
        }
        .into())
    }
}

/// Sends a request and reads the whole answer; a status other than 2xx is an error.
pub async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<bytes::Bytes> {
    let resp = req.send().await?;
    let status = resp.status();
    Refused::check(status.as_u16(), resp.bytes().await?)
}

/// Sends a request and parses its JSON answer; an error for a non-2xx status.
pub async fn send_json(req: reqwest::RequestBuilder) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_slice(&send(req).await?)?)
}

/// `POST /v1/cells/batch` through reqwest (seeding); an error unless every cell was stored.
async fn post_batch(work: &Workload, cells: &[NewCell]) -> anyhow::Result<u64> {
    let req = work
        .client
        .post(work.url("/v1/cells/batch"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(batch_body(cells)?);
    batch_stored(&send(req).await?, cells.len())
}

/// The JSON body of a batch write.
fn batch_body(cells: &[NewCell]) -> anyhow::Result<Vec<u8>> {
    let wire: Vec<Value> = cells.iter().map(wire).collect();
    Ok(serde_json::to_vec(&json!({ "cells": wire }))?)
}

/// The number of cells a batch's answer says were stored; an error unless all `sent` were.
fn batch_stored(answer: &[u8], sent: usize) -> anyhow::Result<u64> {
    let reply: BatchReply = serde_json::from_slice(answer)?;
    let failed: Vec<u16> = reply
        .results
        .iter()
        .map(|r| r.status)
        .filter(|s| !(200..300).contains(s))
        .collect();
    if reply.results.len() != sent {
        bail!("{} results for {sent} cells", reply.results.len());
    }
    if !failed.is_empty() {
        let what = format!(
            "{} of {sent} cells failed (statuses {:?})",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        return Err(Refused {
            what,
            statuses: failed,
        }
        .into());
    }
    Ok(sent as u64)
}

/// A cell as the API takes it.
fn wire(c: &NewCell) -> Value {
    let k = &c.key;
    json!({"row_key": k.row_key, "column_name": k.column_name, "ref_key": k.ref_key, "body": c.body})
}

/// An operation through the HTTP API, for one worker: it sends on a connection of its own.
pub fn op(work: &Arc<Workload>, op: Op) -> OpFn {
    let work = work.clone();
    let conn = Arc::new(Mutex::new(Conn::new(work.target.clone())));
    Arc::new(move || -> OpFuture {
        let w = work.clone();
        let conn = conn.clone();
        match op {
            Op::Write => {
                let cell = w.fresh_cell();
                Box::pin(async move {
                    let body = serde_json::to_vec(&wire(&cell))?;
                    let mut conn = conn.lock().await;
                    conn.send(Method::POST, "/v1/cells", Some(body)).await?;
                    Ok(1)
                })
            }
            Op::Batch => {
                let cells = fresh_cells(w.batch_size);
                Box::pin(async move {
                    let body = batch_body(&cells)?;
                    let mut conn = conn.lock().await;
                    let answer = conn.send(Method::POST, "/v1/cells/batch", Some(body));
                    batch_stored(&answer.await?, cells.len())
                })
            }
            Op::Latest | Op::Row => {
                let picked = w.pick();
                Box::pin(async move {
                    let (row, column) = picked.context("no seeded rows")?;
                    let path = match op {
                        Op::Latest => format!("/v1/cells/{row}/{column}"),
                        _ => format!("/v1/cells/{row}"),
                    };
                    conn.lock().await.send(Method::GET, &path, None).await?;
                    Ok(1)
                })
            }
            Op::Partition => {
                let shard = w.random_shard();
                Box::pin(async move {
                    let path = format!(
                        "/v1/cells/partitionRead?partition_number={shard}&read_type=2&added_id=0&limit=100"
                    );
                    conn.lock().await.send(Method::GET, &path, None).await?;
                    Ok(1)
                })
            }
        }
    })
}

/// Writes `rows` rows x 3 columns x 2 versions through the batch API; returns the row keys.
pub async fn seed(work: &Workload, rows: usize) -> anyhow::Result<Vec<Uuid>> {
    let keys: Vec<Uuid> = (0..rows).map(|_| Uuid::new_v4()).collect();
    let coordinates = keys
        .iter()
        .flat_map(|r| COLUMNS.map(|c| [(*r, c, 1), (*r, c, 2)]));
    let cells: Vec<NewCell> = {
        let mut rng = rand::thread_rng();
        let cells = coordinates.flatten();
        cells.map(|(r, c, v)| new_cell(r, c, v, &mut rng)).collect()
    };
    wait_ready(work).await;
    let mut sent = futures::stream::iter(cells.chunks(MAX_BATCH))
        .map(|chunk| seed_batch(work, chunk))
        .buffer_unordered(4);
    while let Some(result) = sent.next().await {
        result.context("seeding through POST /v1/cells/batch failed")?;
    }
    Ok(keys)
}

/// One seeding batch, sent again (it is idempotent: the identical cells answer 200) while the
/// server answers that it is unavailable, as a client honouring `Retry-After` would, up to 5
/// times.
async fn seed_batch(work: &Workload, cells: &[NewCell]) -> anyhow::Result<u64> {
    let mut attempt = 1;
    loop {
        match post_batch(work, cells).await {
            Err(e) if attempt < 5 && Refused::unavailable(&e) => {
                eprintln!("bench: a seeding batch was refused ({e:#}); sending it again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Waits (up to 30 s) until the server answers `/v1/readyz` with 200: every backend up.
pub async fn wait_ready(work: &Workload) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut said = false;
    loop {
        let ready = work.client.get(work.url("/v1/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("bench: the server is still not ready after 30 s; going on");
            return;
        }
        if !said {
            eprintln!("bench: waiting for the server to be ready (a backend is down)");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The server's resident memory from `/metrics`, in bytes.
pub async fn scrape_rss(client: &reqwest::Client, server: &str) -> Option<f64> {
    let req = client
        .get(format!("{server}/metrics"))
        .timeout(Duration::from_secs(2));
    let text = send(req).await.ok()?;
    parse_rss(&String::from_utf8_lossy(&text))
}

fn parse_rss(metrics: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix("process_resident_memory_bytes")?;
        let rest = match rest.strip_prefix('{') {
            Some(labelled) => labelled.split_once('}')?.1,
            None => rest,
        };
        if !rest.starts_with(char::is_whitespace) {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Scrapes `/metrics` every second while `phase` runs; returns its result and the most RSS
/// seen, in MB.
pub async fn watching_rss<T>(
    work: &Workload,
    phase: impl std::future::Future<Output = T>,
) -> (T, Option<f64>) {
    let (client, server) = (work.client.clone(), work.server.clone());
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        let mut max: Option<f64> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut stopped => return max,
                _ = tick.tick() => {
                    if let Some(rss) = scrape_rss(&client, &server).await {
                        max = Some(max.map_or(rss, |m| m.max(rss)));
                    }
                }
            }
        }
    });
    let out = phase.await;
    let _ = stop.send(());
    let max = watcher.await.ok().flatten();
    (out, max.map(|b| b / 1e6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_prometheus_text() {
        let text = "# TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes_total 1\n\
                    process_resident_memory_bytes 52428800\n";
        assert_eq!(parse_rss(text), Some(52428800.0));
        assert_eq!(
            parse_rss("process_resident_memory_bytes{a=\"b\"} 7e3"),
            Some(7000.0)
        );
        assert_eq!(parse_rss("up 1\n"), None);
    }
}
