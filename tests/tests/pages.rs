//! Partition-read pages: bounded in bytes (`MAX_PAGE_BYTES`), and never ending inside a group
//! of cells that share a `created_at` (one go-mezzanine transaction, in adopted data), so that
//! a reader paging by `created_after` skips nothing.

use mezzanine_e2e::*;
use serde_json::{json, Value};

const SHARDS: u32 = 8;
const SHARD: u32 = 3;
/// A body of about 20 KiB.
fn big(tag: &str) -> Value {
    json!({"tag": tag, "pad": "x".repeat(20 << 10)})
}

/// Writes, in shard `SHARD`: `a` alone, then `b1`-`b3` in one batch, then `c` alone; then
/// gives `b1`-`b3` one `created_at` (as go-mezzanine stores a transaction's cells: mezzanine
/// gives each its own, but adopted data keeps such groups). Returns the column names in write
/// order.
async fn write_groups(c: &reqwest::Client, srv: &TestServer, url: &str) -> Vec<String> {
    let row = key_in_shard(SHARD, SHARDS);
    let (s, v) = post_json(c, &srv.url("/v1/cells"), &cell(&row, "a", 1, big("a"))).await;
    assert_eq!(s, 201, "{v}");
    let batch: Vec<Value> = ["b1", "b2", "b3"]
        .iter()
        .map(|col| cell(&row, col, 1, big(col)))
        .collect();
    let (s, v) = post_json(c, &srv.url("/v1/cells/batch"), &json!({"cells": batch})).await;
    assert_eq!(s, 200, "{v}");
    for r in v["results"].as_array().unwrap() {
        assert_eq!(r["status"], 201, "{v}");
    }
    let (s, v) = post_json(c, &srv.url("/v1/cells"), &cell(&row, "c", 1, big("c"))).await;
    assert_eq!(s, 201, "{v}");
    sql(
        url,
        &format!(
            "UPDATE cells_{SHARD:04} SET created_at = \
               (SELECT created_at FROM cells_{SHARD:04} WHERE column_name = 'b1') \
             WHERE column_name IN ('b2', 'b3')"
        ),
    )
    .await;
    ["a", "b1", "b2", "b3", "c"].map(String::from).to_vec()
}

/// Pages through the shard by `created_after`, as a change-stream reader does; returns the
/// column names seen and the size of each page.
async fn read_by_time(
    c: &reqwest::Client,
    srv: &TestServer,
    limit: u32,
) -> (Vec<String>, Vec<usize>) {
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..20 {
        let mut path =
            format!("/v1/cells/partitionRead?partition_number={SHARD}&read_type=1&limit={limit}");
        if let Some(a) = &after {
            path.push_str(&format!("&created_after={}", a.replace('+', "%2B")));
        }
        let (s, page) = get_json(c, &srv.url(&path)).await;
        assert_eq!(s, 200, "{page}");
        let page = page.as_array().unwrap().clone();
        let Some(last) = page.last() else {
            return (seen, sizes);
        };
        after = Some(last["created_at"].as_str().unwrap().to_owned());
        sizes.push(page.len());
        seen.extend(
            page.iter()
                .map(|c| c["column_name"].as_str().unwrap().to_owned()),
        );
    }
    panic!("paging did not end: {seen:?}");
}

#[tokio::test]
async fn a_page_cut_by_its_limit_leaves_a_transactions_cells_whole() {
    let (srv, urls) = TestServer::fresh(1, SHARDS).await;
    let c = client();
    let written = write_groups(&c, &srv, &urls[0]).await;
    // Limit 3 would end the first page inside b1-b3; the reader would then ask for cells
    // created after b2's time and never see b3.
    let (seen, sizes) = read_by_time(&c, &srv, 3).await;
    assert_eq!(seen, written, "pages {sizes:?}");
    srv.stop().await;
}

#[tokio::test]
async fn a_page_holds_at_most_max_page_bytes_and_still_skips_nothing() {
    let urls = fresh_databases(1).await;
    let mut config = default_config();
    config.max_page_bytes = 64 << 10;
    let srv = TestServer::start(config, even_map(&urls, SHARDS)).await;
    let c = client();
    let written = write_groups(&c, &srv, &urls[0]).await;
    // By added_id: every page within the bound (three 20 KiB cells fit, a fourth does not),
    // and paging reads every cell once.
    let all = read_shard(&c, &srv, SHARD).await;
    let cols: Vec<&str> = all
        .iter()
        .map(|c| c["column_name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, written);
    let (s, page) = get_json(
        &c,
        &srv.url(&format!(
            "/v1/cells/partitionRead?partition_number={SHARD}&read_type=2&limit=1000"
        )),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        page.as_array().unwrap().len(),
        3,
        "a page past MAX_PAGE_BYTES"
    );
    // By created_at: the bound ends a page inside b1-b3, so that page stops before them; the
    // group, larger than the bound on its own, comes whole on the next page.
    let (seen, sizes) = read_by_time(&c, &srv, 1000).await;
    assert_eq!(seen, written, "pages {sizes:?}");
    assert_eq!(sizes, [1, 3, 1]);
    srv.stop().await;
}
