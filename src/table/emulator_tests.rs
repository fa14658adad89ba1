//! The table client against a real table service (the bundled emulator).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use futures::TryStreamExt;
use serde_json::json;

use super::*;
use crate::emulator::Azurite;
use crate::format::filter::odata_string;

fn azurite() -> &'static Azurite {
    static AZURITE: OnceLock<Azurite> = OnceLock::new();
    AZURITE.get_or_init(|| Azurite::start().unwrap_or_else(|e| panic!("Azurite must start: {e}")))
}

async fn table(name: &str) -> TableClient {
    let options = StoreOptions::default().retry_budget(Duration::ZERO);
    let client = TableClient::new(&azurite().config(), name, &options).unwrap();
    client.create_table_if_missing().await.unwrap();
    client
}

fn row(pk: &str, rk: &str) -> Entity {
    serde_json::from_value(json!({"PartitionKey": pk, "RowKey": rk, "N": 1})).unwrap()
}

#[tokio::test]
async fn a_batch_deletes_all_its_rows() {
    let client = table("BatchAll").await;
    let keys: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    for key in &keys {
        client.insert(&row("p'q", key)).await.result.unwrap();
    }
    client.delete_batch("p'q", &keys).await.unwrap();
    assert!(client
        .get::<Entity>("p'q", "0", None)
        .await
        .unwrap()
        .is_none());
    assert!(client
        .get::<Entity>("p'q", "99", None)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_failed_batch_is_an_error_and_deletes_nothing() {
    let client = table("BatchFail").await;
    client.insert(&row("p", "exists")).await.result.unwrap();
    let err = client
        .delete_batch("p", &["exists".into(), "missing".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Storage { status: 404, .. }), "{err}");
    assert!(
        client
            .get::<Entity>("p", "exists", None)
            .await
            .unwrap()
            .is_some(),
        "the batch was rolled back"
    );
}

#[tokio::test]
async fn queries_page_and_filter_with_quoted_values() {
    let client = table("QueryPages").await;
    for pk in ["a", "b'c", "d"] {
        client.insert(&row(pk, "")).await.result.unwrap();
    }
    let quoted = |filter: String| PageRequest {
        filter: Some(filter),
        ..PageRequest::default()
    };
    let page: Page<Entity> = client
        .query_page(
            &quoted(format!("PartitionKey eq {}", odata_string("b'c"))),
            None,
        )
        .await
        .unwrap();
    assert_eq!(page.rows.len(), 1);
    assert_eq!(page.rows[0].0["PartitionKey"], "b'c");

    let injection = format!(
        "PartitionKey eq {}",
        odata_string("x' or PartitionKey ne 'x")
    );
    let page: Page<Entity> = client.query_page(&quoted(injection), None).await.unwrap();
    assert!(
        page.rows.is_empty(),
        "a quoted value cannot widen the filter"
    );

    let one_at_a_time = PageRequest {
        select: Some(vec!["PartitionKey"]),
        top: Some(1),
        ..PageRequest::default()
    };
    let pages: Vec<Page<Entity>> = client
        .pages(one_at_a_time, None)
        .try_collect()
        .await
        .unwrap();
    let seen: Vec<&str> = pages
        .iter()
        .flat_map(|page| &page.rows)
        .map(|(e, _)| e["PartitionKey"].as_str().unwrap())
        .collect();
    assert_eq!(seen, ["a", "b'c", "d"]);
}

#[tokio::test]
async fn a_missing_table_is_named_and_queries_it_as_empty() {
    let client = table("Exists").await.sibling("NeverCreated");
    let err = client.get::<Entity>("a", "", None).await.unwrap_err();
    assert!(matches!(err, Error::TableNotFound { .. }), "{err}");
    let page: Page<Entity> = client
        .query_page(&PageRequest::default(), None)
        .await
        .unwrap();
    assert!(page.rows.is_empty() && page.continuation.is_none());
    let err = client.insert(&row("a", "")).await.result.unwrap_err();
    assert!(
        matches!(&err, Error::TableNotFound { table } if table == "NeverCreated"),
        "{err}"
    );
}

/// A server that answers every request with `status`, counting them.
fn always_answering(status: &'static str) -> (String, Arc<AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 8192];
            let _ = stream.read(&mut buf);
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\nx-ms-error-code: ServerBusy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (base, count)
}

#[tokio::test]
async fn throttling_is_retried_within_the_budget_and_said_to_be_safe() {
    let (base, requests) = always_answering("503 Service Unavailable");
    let config = StorageConfig::emulator_at(&base);
    let options = StoreOptions::default().retry_budget(Duration::from_secs(1));
    let client = TableClient::new(&config, "Busy", &options).unwrap();
    let written = client.insert(&row("pk", "")).await;
    let err = written.result.unwrap_err();
    assert!(matches!(err, Error::Storage { status: 503, .. }), "{err}");
    assert!(err.is_transient());
    assert!(requests.load(Ordering::SeqCst) > 1, "503 is retried");
    assert!(
        !written.uncertain,
        "a throttled write was not applied: it is no uncertain write"
    );
}

#[tokio::test]
async fn a_server_error_makes_a_retried_write_uncertain() {
    let (base, requests) = always_answering("500 Internal Server Error");
    let config = StorageConfig::emulator_at(&base);
    let options = StoreOptions::default().retry_budget(Duration::from_secs(1));
    let client = TableClient::new(&config, "Broken", &options).unwrap();
    let written = client.insert(&row("pk", "")).await;
    assert!(requests.load(Ordering::SeqCst) > 1, "500 is retried");
    assert!(written.uncertain, "a 500 may have been applied");
}

#[tokio::test]
async fn a_last_attempt_that_may_have_been_applied_counts_too() {
    // No retry at all: the one attempt's 500 still leaves the write uncertain.
    let (base, requests) = always_answering("500 Internal Server Error");
    let config = StorageConfig::emulator_at(&base);
    let options = StoreOptions::default().retry_budget(Duration::ZERO);
    let client = TableClient::new(&config, "Once", &options).unwrap();
    let written = client.insert(&row("pk", "")).await;
    assert_eq!(requests.load(Ordering::SeqCst), 1, "no retry");
    assert!(written.uncertain, "a 500 may have been applied");
}

#[tokio::test]
async fn nothing_listening_on_loopback_is_not_retried() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = StorageConfig::emulator_at(&format!("http://127.0.0.1:{port}"));
    // A budget of a minute: only the refusal to retry can end this quickly.
    let options = StoreOptions::default().retry_budget(Duration::from_secs(60));
    let client = TableClient::new(&config, "Nobody", &options).unwrap();
    let started = std::time::Instant::now();
    let err = client.get::<Entity>("pk", "", None).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transport {
                kind: crate::error::TransportKind::Connect,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "not retried for the budget's minute"
    );
}
