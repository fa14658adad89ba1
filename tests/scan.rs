//! Parallel scans against a real table service: the ranges read
//! concurrently return exactly the rows of one sequential scan, whatever the
//! ids, and the key space is cut where the hub's ids actually branch.

mod common;

use std::collections::BTreeMap;

use anyhow::Result;
use durable_status::format::keys::escape_key;
use durable_status::{
    InstanceQuery, InstanceStore, PurgeFilter, RuntimeStatus, StatusCounts, StoreOptions,
};
use futures::{StreamExt, TryStreamExt};
use proptest::prelude::*;
use serde_json::json;
use time::OffsetDateTime;

const STATUSES: [&str; 4] = ["Running", "Completed", "Failed", "Pending"];

/// Writes rows as the Durable Task provider does, each id with a status.
async fn write_rows(store: &InstanceStore, rows: &[(String, &'static str)]) {
    futures::stream::iter(rows)
        .for_each_concurrent(32, |(id, status)| async move {
            common::write_raw_row(
                store,
                json!({
                    "PartitionKey": escape_key(id),
                    "RowKey": "",
                    "Name": "Orch",
                    "RuntimeStatus": status,
                    "CustomStatus": "null",
                    "CreatedTime": "2024-01-01T00:00:00Z",
                    "CreatedTime@odata.type": "Edm.DateTime",
                    "LastUpdatedTime": "2024-01-01T00:00:00Z",
                    "LastUpdatedTime@odata.type": "Edm.DateTime",
                    "ExecutionId": "e1",
                }),
            )
            .await
        })
        .await;
}

fn with_statuses(ids: Vec<String>) -> Vec<(String, &'static str)> {
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| (id, STATUSES[i % STATUSES.len()]))
        .collect()
}

/// The ids of a listing, sorted; duplicates stay, so they show.
async fn sorted_ids(
    stream: futures::stream::BoxStream<
        'static,
        durable_status::Result<durable_status::InstanceStatus>,
    >,
) -> Result<Vec<String>> {
    let mut ids: Vec<String> = stream.map_ok(|i| i.instance_id).try_collect().await?;
    ids.sort();
    Ok(ids)
}

/// A proptest failure of an error.
fn fail(error: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("{error:#}"))
}

fn counts_of(counts: &StatusCounts) -> BTreeMap<String, u64> {
    counts
        .iter()
        .map(|(status, n)| (status.name().to_owned(), n))
        .collect()
}

/// The sequential scan and the parallel one, on the same hub.
async fn both(hub_store: &InstanceStore, concurrency: usize) -> (InstanceStore, InstanceStore) {
    let open = |concurrency| {
        InstanceStore::open(
            &common::storage(),
            hub_store.task_hub(),
            StoreOptions::default().scan_concurrency(concurrency),
        )
        .expect("the store opens")
    };
    (open(1), open(concurrency))
}

/// An id: one of the shapes hubs have, or characters from the whole range
/// (the escaped ones, supplementary characters, those above U+E000).
fn id_strategy() -> impl Strategy<Value = String> {
    let any_char = prop_oneof![
        proptest::char::range(' ', '~'),
        Just('/'),
        Just('\\'),
        Just('#'),
        Just('?'),
        Just('^'),
        Just('\u{1}'),
        proptest::char::range('\u{a0}', '\u{d7ff}'),
        proptest::char::range('\u{e000}', '\u{fffd}'),
        proptest::char::range('\u{10000}', '\u{10ffff}'),
    ];
    prop_oneof![
        proptest::collection::vec(any_char, 1..12).prop_map(|c| c.into_iter().collect()),
        any::<u128>().prop_map(|n| format!("{n:032x}")),
        (0u32..100_000).prop_map(|n| format!("order-{n}")),
        any::<u64>().prop_map(|n| format!("tenant-42/job-{n:016x}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Listings and counts read in parallel ranges return exactly what one
    /// sequential scan returns, with pages small enough to cut many ranges.
    #[test]
    fn parallel_scans_return_exactly_the_sequential_scan(
        ids in proptest::collection::btree_set(id_strategy(), 1..160),
        page_size in 3u32..20,
        concurrency in 2usize..12,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let store = common::store().await;
            let rows = with_statuses(ids.iter().cloned().collect());
            write_rows(&store, &rows).await;
            let (sequential, parallel) = both(&store, concurrency).await;
            let expected: Vec<String> = ids.iter().cloned().collect();

            let query = InstanceQuery::new().page_size(page_size);
            let ordered = sorted_ids(sequential.query(&query)).await.map_err(fail)?;
            prop_assert_eq!(&ordered, &expected);
            let unordered = sorted_ids(parallel.query_unordered(&query)).await.map_err(fail)?;
            prop_assert_eq!(&unordered, &expected);
            let payload_free = query.clone().include_input(false).include_output(false);
            prop_assert_eq!(&sorted_ids(parallel.query_unordered(&payload_free)).await.map_err(fail)?, &expected);

            let counts = counts_of(&parallel.count_by_status(&query).await.map_err(fail)?);
            prop_assert_eq!(&counts, &counts_of(&sequential.count_by_status(&query).await.map_err(fail)?));
            prop_assert_eq!(counts.values().sum::<u64>(), ids.len() as u64);

            // Filters and a prefix narrow the scan the same way.
            let first = expected[0].chars().next().unwrap().to_string();
            let narrowed = InstanceQuery::new()
                .page_size(page_size)
                .instance_id_prefix(first)
                .statuses([RuntimeStatus::Running, RuntimeStatus::Completed]);
            prop_assert_eq!(
                sorted_ids(parallel.query_unordered(&narrowed)).await.map_err(fail)?,
                sorted_ids(sequential.query(&narrowed)).await.map_err(fail)?
            );
            prop_assert_eq!(
                counts_of(&parallel.count_by_status(&narrowed).await.map_err(fail)?),
                counts_of(&sequential.count_by_status(&narrowed).await.map_err(fail)?)
            );
            Ok(())
        })?;
    }
}

/// The ranges a scan read, from its page requests: each range's first
/// page asks its own key range, and its next pages the same filter with a
/// continuation. Returns the pages each range read.
fn pages_per_range(lines: &[String], page_size: u32) -> BTreeMap<String, usize> {
    let mut ranges = BTreeMap::new();
    for line in lines {
        if !line.contains(&format!("$top={page_size}")) {
            continue; // a one-row probe
        }
        // Decoded, the filter holds spaces and quotes: it ends at the next
        // query parameter.
        let filter = line
            .split_once("$filter=")
            .map_or("", |(_, rest)| rest.split("&$").next().unwrap_or(rest))
            .to_owned();
        *ranges.entry(filter).or_insert(0) += 1;
    }
    ranges
}

/// The id of the i-th instance of a shape.
type IdOf = fn(usize) -> String;

/// For each shape of ids, a count cuts the key space where the ids branch:
/// many ranges, none reading most of the pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_space_is_cut_where_the_ids_branch() -> Result<()> {
    const ROWS: usize = 400;
    const PAGE: u32 = 10;
    let shapes: [(&str, IdOf); 6] = [
        ("guids", |i| {
            format!(
                "{:032x}",
                (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
            )
        }),
        ("order-N", |i| format!("order-{i}")),
        ("zero-padded", |i| format!("order-{i:06}")),
        ("a long shared prefix", |i| {
            format!(
                "tenant-42/region-eu/job-{:08x}",
                (i as u32).wrapping_mul(0x9e37_79b9)
            )
        }),
        ("escaped characters", |i| format!("a/b#c?{}\\{}", i % 7, i)),
        // The first page holds both families: only the second says how
        // many pages are left.
        ("two families", |i| {
            if i < 5 {
                format!("acme-{i}")
            } else {
                format!("zeta-{i}")
            }
        }),
    ];
    for (shape, id) in shapes {
        let (store, proxy) =
            common::proxied_store(StoreOptions::default().scan_concurrency(8)).await;
        write_rows(&store, &with_statuses((0..ROWS).map(id).collect())).await;
        proxy.take_lines();
        let counts = store
            .count_by_status(&InstanceQuery::new().page_size(PAGE))
            .await?;
        assert_eq!(counts.total(), ROWS as u64, "{shape}");
        let lines = proxy.take_lines();
        let ranges = pages_per_range(&lines, PAGE);
        let pages: usize = ranges.values().sum();
        let largest = ranges.values().max().copied().unwrap_or(0);
        let probes = lines.len() - pages;
        println!(
            "{shape}: {} ranges, {pages} pages, the largest range {largest} pages, {probes} probes",
            ranges.len()
        );
        assert!(
            ranges.len() >= 6,
            "{shape}: only {} ranges: {ranges:?}",
            ranges.len()
        );
        assert!(
            largest * 3 <= pages,
            "{shape}: one range read {largest} of {pages} pages: {ranges:?}"
        );
        // Probes cost little beside the pages they save waiting for.
        assert!(probes <= 60, "{shape}: {probes} probes");
    }
    Ok(())
}

/// A hub of a few pages is read in about as many ranges as it has pages,
/// whatever the slots: few probes, few short pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_of_a_few_pages_costs_few_probes() -> Result<()> {
    const ROWS: usize = 300;
    const PAGE: u32 = 100;
    let (store, proxy) = common::proxied_store(StoreOptions::default().scan_concurrency(16)).await;
    let ids: Vec<String> = (0..ROWS)
        .map(|i| {
            format!(
                "{:032x}",
                (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
            )
        })
        .collect();
    write_rows(&store, &with_statuses(ids)).await;
    proxy.take_lines();
    let counts = store
        .count_by_status(&InstanceQuery::new().page_size(PAGE))
        .await?;
    assert_eq!(counts.total(), ROWS as u64);
    let lines = proxy.take_lines();
    let pages: usize = pages_per_range(&lines, PAGE).values().sum();
    let probes = lines.len() - pages;
    println!("{pages} pages, {probes} probes");
    // One round of probes finds the branches, and with them the first page
    // tells that two pages are left: the rest is read in about as many
    // ranges, not cut into one per slot.
    assert!(pages <= 6, "{pages} pages for {ROWS} rows of {PAGE}");
    assert!(probes <= 20, "{probes} probes for {pages} pages");
    // A listing, which could cut its ranges again, as well.
    let listed: Vec<_> = store
        .query_unordered(&InstanceQuery::new().page_size(PAGE))
        .try_collect()
        .await?;
    assert_eq!(listed.len(), ROWS);
    let lines = proxy.take_lines();
    let pages: usize = pages_per_range(&lines, PAGE).values().sum();
    let probes = lines.len() - pages;
    println!("listing: {pages} pages, {probes} probes");
    assert!(
        pages <= 6,
        "listing: {pages} pages for {ROWS} rows of {PAGE}"
    );
    assert!(probes <= 20, "listing: {probes} probes for {pages} pages");
    Ok(())
}

/// A count reads no key, yet a long range the plan could not foresee is
/// cut while it runs: once slots fall idle, the long ranges' pages read
/// their keys, and the count is still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_cuts_a_long_range_while_it_runs() -> Result<()> {
    const PAGE: u32 = 10;
    // Counters: the plan cuts after `order-` at the digits the first page
    // shows, but after that page the branch of 1 still holds about 1,100
    // of the 2,000 ids (110 pages), and no probe tells.
    let ids: Vec<String> = (1..=2000).map(|i| format!("order-{i}")).collect();
    let (store, proxy) = common::proxied_store(StoreOptions::default().scan_concurrency(8)).await;
    write_rows(&store, &with_statuses(ids)).await;
    // The same hub, behind no proxy, read one page after another.
    let sequential = InstanceStore::open(
        &common::emulator(),
        store.task_hub(),
        StoreOptions::default().scan_concurrency(1),
    )?;
    let query = InstanceQuery::new().page_size(PAGE);
    let expected = counts_of(&sequential.count_by_status(&query).await?);
    proxy.take_lines();
    let counts = counts_of(&store.count_by_status(&query).await?);
    assert_eq!(counts, expected);
    assert_eq!(counts.values().sum::<u64>(), 2000);
    let lines = proxy.take_lines();
    let ranges = pages_per_range(&lines, PAGE);
    let pages: usize = ranges.values().sum();
    let largest = ranges.values().max().copied().unwrap_or(0);
    println!(
        "{} ranges, {pages} pages, the largest range {largest}",
        ranges.len()
    );
    // Read to its end, the range of `order-1` would take about 110 pages.
    assert!(largest <= 80, "one range read {largest} pages: {ranges:?}");
    Ok(())
}

/// A hub of one page costs one request, parallel or not, and a count asks
/// no metadata and only the status column.
#[tokio::test]
async fn a_small_hub_costs_one_request() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    let ids: Vec<String> = (0..50).map(|i| format!("{i:032x}")).collect();
    write_rows(&store, &with_statuses(ids.clone())).await;
    proxy.take_lines();
    proxy.take_request_heads();
    let counts = store.count_by_status(&InstanceQuery::new()).await?;
    assert_eq!(counts.total(), 50);
    let heads = proxy.take_request_heads();
    assert_eq!(
        heads.len(),
        1,
        "{:?}",
        heads.iter().map(|h| &h.line).collect::<Vec<_>>()
    );
    assert_eq!(
        heads[0].header("accept"),
        Some("application/json;odata=nometadata")
    );
    assert!(heads[0].line.contains("RuntimeStatus"), "{}", heads[0].line);
    proxy.take_lines();
    let listed = sorted_ids(store.query_unordered(&InstanceQuery::new())).await?;
    assert_eq!(listed, ids);
    assert_eq!(proxy.take_lines().len(), 1);
    Ok(())
}

/// A purge by filter scans in parallel ranges and deletes exactly the
/// matching instances, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_purge_deletes_exactly_the_matching_instances() -> Result<()> {
    let store = common::store_with(StoreOptions::default().scan_concurrency(8)).await;
    let ids: Vec<String> = (0..300)
        .map(|i| match i % 3 {
            0 => format!("{:032x}", (i as u128) << 100),
            1 => format!("order-{i}"),
            _ => format!("a/b#{i}"),
        })
        .collect();
    let rows = with_statuses(ids);
    write_rows(&store, &rows).await;
    let purged = store
        .purge(
            &PurgeFilter::created_from(OffsetDateTime::UNIX_EPOCH)
                .statuses([RuntimeStatus::Completed, RuntimeStatus::Failed])
                .include_history(false)
                .page_size(10),
        )
        .await?;
    let mut kept: Vec<String> = rows
        .iter()
        .filter(|(_, status)| !["Completed", "Failed"].contains(status))
        .map(|(id, _)| id.clone())
        .collect();
    kept.sort();
    assert_eq!(purged.deleted, (rows.len() - kept.len()) as u64);
    assert_eq!(purged.skipped, 0);
    assert_eq!(sorted_ids(store.query(&InstanceQuery::new())).await?, kept);
    Ok(())
}

/// A listing that ends on a full page makes no request for an empty page
/// after it: the service sends no continuation, and none is followed.
#[tokio::test]
async fn a_listing_ending_on_a_full_page_costs_no_extra_request() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default().scan_concurrency(1)).await;
    let ids: Vec<String> = (0..40).map(|i| format!("{i:032x}")).collect();
    write_rows(&store, &with_statuses(ids.clone())).await;
    proxy.take_lines();
    let query = InstanceQuery::new().page_size(20);
    assert_eq!(sorted_ids(store.query(&query)).await?, ids);
    assert_eq!(proxy.take_lines().len(), 2, "two full pages, two requests");
    assert_eq!(store.count_by_status(&query).await?.total(), 40);
    assert_eq!(proxy.take_lines().len(), 2);
    Ok(())
}
