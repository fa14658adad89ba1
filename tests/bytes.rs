//! Bytes on the wire: what the table service sends back for a count, a
//! listing without inputs and a point read of rows as Durable Functions
//! writes them, and the response format the store asks for.
//!
//! Run with `--nocapture` to see the figures.

mod common;

use anyhow::Result;
use durable_status::{
    CustomStatus, Error, InstanceQuery, InstanceStore, JsonText, NewInstance, RuntimeStatus,
    StoreOptions,
};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

const ROWS: usize = 2_000;
/// One instance in this many is completed, with an output; the others run.
/// (The listing's bytes per row depend on the values: with one in two
/// completed they are about 600 here, see BENCHMARKS.md.)
const COMPLETED_EVERY: usize = 10;
/// The targets, in response bytes per row.
const MAX_COUNT_BYTES_PER_ROW: f64 = 100.0;
const MAX_LISTING_BYTES_PER_ROW: f64 = 550.0;

/// A ~1 KiB orchestration input.
fn input(i: usize) -> JsonText {
    let items: Vec<_> = (0..18)
        .map(|n| json!({ "sku": format!("SKU-{i:05}-{n:02}"), "quantity": n + 1, "price": 19.99 }))
        .collect();
    let input =
        json!({ "orderId": format!("order-{i:05}"), "customer": "Contoso Ltd.", "items": items });
    JsonText::from_value(&input).unwrap()
}

/// `ROWS` instances with 32-digit hex ids (as Durable Functions makes them):
/// all with a ~1 KiB input and a custom status, started, some completed with
/// an output, the rest running.
async fn durable_functions_rows(store: &InstanceStore) -> Result<()> {
    futures::stream::iter(0..ROWS)
        .map(|i| async move {
            let id = format!("{i:032x}");
            store
                .create(NewInstance::new(id.clone(), "ProcessOrder").input(input(i)))
                .await?;
            store.start(&id).await?;
            let status = CustomStatus::from_value(&json!({ "step": "charged", "attempt": 1 }))?;
            store.set_custom_status(&id, Some(&status)).await?;
            if i % COMPLETED_EVERY == 0 {
                let output = JsonText::from_value(
                    &json!({ "shipped": true, "trackingId": format!("TRK{i:08}") }),
                )?;
                store.complete(&id, Some(output)).await?;
            }
            anyhow::Ok(())
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Every read asks JSON with minimal (or no) metadata, never full.
fn assert_accept(heads: &[common::proxy::RequestHead], format: &str) {
    assert!(!heads.is_empty(), "the proxy saw the requests");
    for head in heads {
        let accept = head.header("accept").unwrap_or_default();
        assert_eq!(
            accept,
            format!("application/json;{format}"),
            "{} asks {accept:?}",
            head.line
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_stay_small() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    durable_functions_rows(&store).await?;
    proxy.take_response_bytes();
    proxy.take_request_heads();

    let counts = store.count_by_status(&InstanceQuery::new()).await?;
    let count_bytes = proxy.take_response_bytes();
    assert_eq!(counts.total(), ROWS as u64);
    assert_eq!(
        counts.get(RuntimeStatus::Completed),
        ROWS.div_ceil(COMPLETED_EVERY) as u64
    );
    let count_heads = proxy.take_request_heads();

    let listed: Vec<_> = store
        .query(&InstanceQuery::new().include_input(false))
        .try_collect()
        .await?;
    let listing_bytes = proxy.take_response_bytes();
    assert_eq!(listed.len(), ROWS);
    assert!(listed
        .iter()
        .all(|i| i.input.is_none() && !i.etag.as_str().is_empty()));
    assert_eq!(
        listed.iter().filter(|i| i.output.is_some()).count(),
        ROWS.div_ceil(COMPLETED_EVERY)
    );
    let listing_heads = proxy.take_request_heads();

    let one = store.get(&format!("{:032x}", 0)).await?.expect("it exists");
    let get_bytes = proxy.take_response_bytes();
    assert!(one.input.is_some() && one.output.is_some() && one.custom_status.is_some());
    let get_heads = proxy.take_request_heads();

    // ETags read with minimal metadata still guard writes.
    let etag = listed[1].etag.clone();
    let status = CustomStatus::from_value(&json!("next"))?;
    let id = listed[1].instance_id.clone();
    store
        .set_custom_status_if_match(&id, Some(&status), &etag)
        .await?;
    let stale = store
        .set_custom_status_if_match(&id, Some(&status), &etag)
        .await;
    assert!(matches!(stale, Err(Error::Conflict { .. })), "{stale:?}");

    let per_row = |bytes: usize| bytes as f64 / ROWS as f64;
    println!(
        "{ROWS} rows: count {count_bytes} bytes ({:.1}/row), listing without input \
         {listing_bytes} bytes ({:.1}/row), one get {get_bytes} bytes",
        per_row(count_bytes),
        per_row(listing_bytes),
    );
    // A count needs no ETag: no metadata at all. Listings and reads carry
    // the ETags that guard writes.
    assert_accept(&count_heads, "odata=nometadata");
    assert_accept(&listing_heads, "odata=minimalmetadata");
    assert_accept(&get_heads, "odata=minimalmetadata");
    assert!(
        per_row(count_bytes) < MAX_COUNT_BYTES_PER_ROW,
        "count: {:.1} bytes/row",
        per_row(count_bytes)
    );
    assert!(
        per_row(listing_bytes) < MAX_LISTING_BYTES_PER_ROW,
        "listing: {:.1} bytes/row",
        per_row(listing_bytes)
    );
    Ok(())
}

/// An insert asks no echo of the entity: the answer is a 204 with an ETag.
#[tokio::test]
async fn inserts_are_not_echoed() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    // The first write creates the table; what is measured is the next one.
    store
        .create(NewInstance::new("first", "ProcessOrder"))
        .await?;
    proxy.take_response_bytes();
    proxy.take_request_heads();
    let created = store
        .create(NewInstance::new("echo", "ProcessOrder").input(input(0)))
        .await?;
    let bytes = proxy.take_response_bytes();
    let heads = proxy.take_request_heads();
    println!("create (one insert of a ~1 KiB input): {bytes} response bytes");
    let insert = heads
        .iter()
        .find(|h| h.line.starts_with("POST ") && h.line.ends_with("Instances"))
        .expect("an insert");
    assert_eq!(insert.header("prefer"), Some("return-no-content"));
    assert!(
        bytes < 512,
        "the insert's answer has no body: {bytes} bytes"
    );
    // The ETag of the insert guards the next write.
    let status = CustomStatus::from_value(&json!(1))?;
    store
        .set_custom_status_if_match("echo", Some(&status), &created.etag)
        .await?;
    Ok(())
}
