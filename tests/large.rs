//! Payloads too large for a column, against Azurite's table and blob
//! services: written to gzip blobs as the Durable Task provider writes
//! them, read back from the provider's shapes (property blob, start message,
//! InputBlobName), refused past a limit, and purged exactly.

mod common;

use std::io::{Read, Write};

use anyhow::Result;
use durable_status::format::keys::escape_key;
use durable_status::{
    Error, InstanceQuery, InstanceStore, JsonText, NewInstance, PurgeFilter, ReadOptions,
    RuntimeStatus, SizeUnit, StorageConfig, StoreOptions,
};
use futures::TryStreamExt;
use serde_json::{json, Value};
use time::OffsetDateTime;

/// A JSON string of about `units` UTF-16 units.
fn big_json(units: usize, fill: char) -> JsonText {
    JsonText::from_value(&fill.to_string().repeat(units)).unwrap()
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// The container URL, as the store builds its blob URLs.
fn container_url(store: &InstanceStore) -> String {
    format!(
        "{}/{}-largemessages",
        common::storage().blob_endpoint.unwrap(),
        store.task_hub().to_ascii_lowercase()
    )
}

/// Writes a blob as the provider does: gzip bytes, no content encoding.
async fn put_blob(store: &InstanceStore, name: &str, text: &str) {
    let container = common::large_messages(store.task_hub());
    let _ = container.create().await;
    container
        .blob_client(name)
        .put_block_blob(gzip(text))
        .await
        .expect("the blob is written");
}

async fn blob_names(store: &InstanceStore) -> Vec<String> {
    use futures::StreamExt;
    let container = common::large_messages(store.task_hub());
    let mut names = Vec::new();
    let mut pages = container.list_blobs().into_stream();
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => names.extend(page.blobs.blobs().map(|b| b.name.clone())),
            Err(_) => break, // no container
        }
    }
    names.sort();
    names
}

/// The row's stored columns, as another tool reads them.
async fn raw(store: &InstanceStore, id: &str) -> serde_json::Map<String, Value> {
    common::raw_row(store, &escape_key(id)).await
}

/// A provider-shaped Instances row whose columns are given.
async fn provider_row(store: &InstanceStore, id: &str, columns: Value) {
    let mut row = json!({
        "PartitionKey": escape_key(id),
        "RowKey": "",
        "Name": "Orch",
        "RuntimeStatus": "Completed",
        "CustomStatus": "null",
        "CreatedTime": "2024-01-01T00:00:00Z",
        "CreatedTime@odata.type": "Edm.DateTime",
        "LastUpdatedTime": "2024-01-01T00:00:00Z",
        "LastUpdatedTime@odata.type": "Edm.DateTime",
        "ExecutionId": "e1",
    });
    row.as_object_mut()
        .unwrap()
        .extend(columns.as_object().unwrap().clone());
    common::write_raw_row(store, row).await;
}

#[tokio::test]
async fn large_inputs_and_outputs_are_kept_in_blobs_as_the_provider_keeps_them() -> Result<()> {
    let store = common::store().await;
    let id = "big/one#1";
    let input = big_json(40_000, 'i');
    store
        .create(NewInstance::new(id, "Orch").input(input.clone()))
        .await?;
    // The column holds the URL of a gzip blob named as the provider names it.
    let url = raw(&store, id).await["Input"].as_str().unwrap().to_owned();
    let pk = escape_key(id);
    let prefix = format!(
        "{}/{}/history--Input-",
        container_url(&store),
        utf8_escape(&pk)
    );
    assert!(url.starts_with(&prefix), "{url} starts with {prefix}");
    assert!(url.ends_with("-Input.json.gz"), "{url}");
    let random = &url[prefix.len()..url.len() - "-Input.json.gz".len()];
    assert!(
        random.len() == 8
            && random
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()),
        "{random}"
    );
    let names = blob_names(&store).await;
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with(&format!("{pk}/history--Input-")));
    let bytes = common::large_messages(store.task_hub())
        .blob_client(&names[0])
        .get_content()
        .await?;
    assert_eq!(
        gunzip(&bytes),
        input.as_str(),
        "a plain gzip reader reads it"
    );

    // Every read returns the payload.
    let got = store.get(id).await?.unwrap();
    assert_eq!(got.input.as_deref(), Some(input.as_str()));
    let output = big_json(35_000, 'o');
    store.start(id).await?;
    store.complete(id, Some(output.clone())).await?;
    let done = store.get(id).await?.unwrap();
    assert_eq!(done.runtime_status, RuntimeStatus::Completed);
    assert_eq!(done.output.as_deref(), Some(output.as_str()));
    assert!(raw(&store, id).await["Output"]
        .as_str()
        .unwrap()
        .contains("/history--Output-"));
    let listed: Vec<_> = store.query(&InstanceQuery::new()).try_collect().await?;
    assert_eq!(listed[0].input.as_deref(), Some(input.as_str()));
    assert_eq!(listed[0].output.as_deref(), Some(output.as_str()));
    let unordered: Vec<_> = store
        .query_unordered(&InstanceQuery::new())
        .try_collect()
        .await?;
    assert_eq!(unordered[0].output.as_deref(), Some(output.as_str()));
    let page = store.query_page(&InstanceQuery::new(), None).await?;
    assert_eq!(page.instances[0].input.as_deref(), Some(input.as_str()));
    let many = store.get_many([id], ReadOptions::default()).await?;
    assert_eq!(
        many[0].as_ref().unwrap().input.as_deref(),
        Some(input.as_str())
    );

    // Or, when asked, the reference as stored.
    let reference = store
        .get_with(id, ReadOptions::default().fetch_large_payloads(false))
        .await?
        .unwrap();
    assert_eq!(reference.input.as_deref(), Some(url.as_str()));
    let listed_refs: Vec<_> = store
        .query(&InstanceQuery::new().include_input(true))
        .try_collect()
        .await?;
    assert_eq!(listed_refs.len(), 1);

    // Failures and terminations carry large texts too; small ones stay.
    for (id, change) in [
        (
            "fails",
            durable_status::StateChange::Fail {
                error: "e".repeat(31_000),
            },
        ),
        (
            "ends",
            durable_status::StateChange::Terminate {
                reason: "r".repeat(31_000),
            },
        ),
    ] {
        store.create(NewInstance::new(id, "Orch")).await?;
        store.change_state(id, &change).await?;
        let output = store.get(id).await?.unwrap().output.unwrap();
        assert_eq!(output.len(), 31_002, "the JSON string, quotes included");
        assert!(raw(&store, id).await["Output"]
            .as_str()
            .unwrap()
            .starts_with("http"));
    }
    store
        .create(NewInstance::new("small", "Orch").input(big_json(30_000, 's')))
        .await?;
    assert!(raw(&store, "small").await["Input"]
        .as_str()
        .unwrap()
        .starts_with('"'));
    Ok(())
}

/// `Uri.EscapeDataString` of one segment, as the test expects the URL.
fn utf8_escape(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn rows_and_blobs_written_by_the_provider_read_back_as_payloads() -> Result<()> {
    let store = common::store().await;
    let container = container_url(&store);
    let input = json!({"order": 42, "lines": "x".repeat(40_000)}).to_string();

    // A property blob, its URL escaped (provider 2.2.0 and later).
    let id = "tenant/42#a?b";
    let pk = escape_key(id);
    let name = format!("{pk}/history--Input-0A1B2C3D-Input.json.gz");
    put_blob(&store, &name, &input).await;
    let output_name =
        format!("{pk}/history-0000000000000005-ExecutionCompleted-7F00AA11-Result.json.gz");
    put_blob(&store, &output_name, "\"done\"").await;
    provider_row(
        &store,
        id,
        json!({
            "Input": format!("{container}/{}/{}", utf8_escape(&pk), "history--Input-0A1B2C3D-Input.json.gz"),
            "Output": format!("{container}/{}/{}", utf8_escape(&pk), "history-0000000000000005-ExecutionCompleted-7F00AA11-Result.json.gz"),
        }),
    )
    .await;
    // The same, unescaped, as providers before 2.2.0 wrote it.
    let old = "old@one^1";
    let old_name = format!("{}/history--Input-11111111-Input.json.gz", escape_key(old));
    put_blob(&store, &old_name, &input).await;
    provider_row(
        &store,
        old,
        json!({ "Input": format!("{container}/{old_name}") }),
    )
    .await;
    // A start message too large for its queue: the input is a field of it.
    let started = "started/1";
    let message_name = format!(
        "{started}/message-{}-ExecutionStarted.json.gz",
        "ab".repeat(16)
    );
    let message = json!({
        "$type": "DurableTask.AzureStorage.MessageData",
        "ActivityId": "5406d369-4369-4673-afca-2de5a8c7e3d2",
        "TaskMessage": {
            "$type": "DurableTask.Core.TaskMessage",
            "Event": {"$type": "DurableTask.Core.History.ExecutionStartedEvent", "EventType": 0, "Name": "Orch", "Input": input},
            "SequenceNumber": 0
        },
        "SequenceNumber": 40
    });
    put_blob(&store, &message_name, &message.to_string()).await;
    provider_row(
        &store,
        started,
        json!({ "Input": format!("{container}/started/1/message-{}-ExecutionStarted.json.gz", "ab".repeat(16)) }),
    )
    .await;
    // A new instance: Input empty, the relative name in InputBlobName.
    let fresh = "fresh";
    let fresh_name = "fresh/history--Input-22222222-Input.json.gz";
    put_blob(&store, fresh_name, &input).await;
    provider_row(
        &store,
        fresh,
        json!({ "Input": "", "InputBlobName": fresh_name, "RuntimeStatus": "Pending" }),
    )
    .await;
    // A URL of another host is a plain payload: never followed.
    provider_row(
        &store,
        "foreign",
        json!({ "Input": "https://example.com/devstoreaccount1/x-largemessages/a.json.gz" }),
    )
    .await;

    for id in [id, old, started, fresh] {
        let got = store.get(id).await?.unwrap();
        assert!(
            got.input.as_deref() == Some(input.as_str()),
            "{id}: {:.200?}",
            got.input
        );
    }
    assert_eq!(
        store.get(id).await?.unwrap().output.as_deref(),
        Some("\"done\"")
    );
    assert_eq!(
        store.get("foreign").await?.unwrap().input.as_deref(),
        Some("https://example.com/devstoreaccount1/x-largemessages/a.json.gz")
    );
    let mut listed: Vec<_> = store.query(&InstanceQuery::new()).try_collect().await?;
    listed.retain(|i| i.instance_id != "foreign");
    assert_eq!(listed.len(), 4);
    assert!(listed
        .iter()
        .all(|i| i.input.as_deref() == Some(input.as_str())));

    // Through the HTTP API.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(durable_status::http::serve(
        listener,
        durable_status::http::HttpApi::new((*store).clone(), Vec::new()),
        std::future::pending(),
    ));
    for id in [id, started, fresh] {
        let url = format!(
            "http://{addr}{}/instances/{}",
            durable_status::http::BASE_PATH,
            utf8_escape(id)
        );
        let body: Value = serde_json::from_slice(&reqwest::get(&url).await?.bytes().await?)?;
        assert!(
            body["input"] == serde_json::from_str::<Value>(&input)?,
            "{id}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_missing_blob_is_an_error_naming_the_instance_and_the_blob() -> Result<()> {
    let store = common::store().await;
    let name = "gone/history--Input-33333333-Input.json.gz";
    provider_row(
        &store,
        "gone",
        json!({ "Input": format!("{}/{name}", container_url(&store)) }),
    )
    .await;
    let err = store.get("gone").await.unwrap_err();
    match &err {
        Error::LargePayload {
            instance_id,
            column,
            blob,
            reason,
        } => {
            assert_eq!(
                (instance_id.as_str(), *column, blob.as_str()),
                ("gone", "Input", name)
            );
            assert!(reason.contains("does not exist"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("gone") && text.contains(name), "{text}");
    // Not gzip: an error too, never an empty payload.
    put_blob(&store, name, "x").await;
    common::large_messages(store.task_hub())
        .blob_client(name)
        .put_block_blob(b"plain text".to_vec())
        .await?;
    let err = store.get("gone").await.unwrap_err().to_string();
    assert!(err.contains("not gzip"), "{err}");
    // The reference itself can still be read.
    let stored = store
        .get_with("gone", ReadOptions::default().fetch_large_payloads(false))
        .await?
        .unwrap();
    assert!(stored.input.unwrap().ends_with(name));
    Ok(())
}

#[tokio::test]
async fn payloads_past_the_limit_are_refused_before_anything_is_written() -> Result<()> {
    let store = common::store_with(StoreOptions::default().large_payload_limit(100_000)).await;
    let err = store
        .create(NewInstance::new("too-big", "Orch").input(big_json(60_000, 'x')))
        .await
        .unwrap_err();
    match err {
        Error::TooLarge {
            field,
            actual,
            limit,
            unit,
        } => {
            assert_eq!(
                (field, limit, unit),
                ("input", 100_000, SizeUnit::Utf16Bytes)
            );
            assert_eq!(actual, 2 * 60_002);
        }
        other => panic!("{other:?}"),
    }
    assert!(store.get("too-big").await?.is_none());
    assert!(blob_names(&store).await.is_empty());

    // Without a blob endpoint, what a column keeps: 60 KiB.
    let tables_only = StorageConfig::emulator_at(
        common::emulator()
            .table_endpoint
            .trim_end_matches("/devstoreaccount1"),
    );
    let no_blobs = InstanceStore::connect(&tables_only, store.task_hub()).await?;
    let err = no_blobs
        .create(NewInstance::new("no-blobs", "Orch").input(big_json(31_000, 'x')))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                field: "input",
                limit: 61_440,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(store.get("no-blobs").await?.is_none());
    let limit = StoreOptions::default().large_payload_limit(1000).validate();
    assert!(limit
        .unwrap_err()
        .to_string()
        .contains("large payload limit"));
    Ok(())
}

#[tokio::test]
async fn purges_delete_exactly_the_instances_blobs() -> Result<()> {
    let store = common::store().await;
    let ids = ["order-1", "order-10", "a", "a/b", "x^y", "q#?\\z", "keep"];
    // Blob Storage reads `\` in a name as `/`.
    let folder = |id: &str| id.replace('\\', "/");
    let guid = "0123456789abcdef0123456789abcdef";
    for id in ids {
        let pk = escape_key(id);
        put_blob(
            &store,
            &format!("{pk}/history--Input-0A0B0C0D-Input.json.gz"),
            "\"in\"",
        )
        .await;
        put_blob(
            &store,
            &format!("{}/message-{guid}-ExecutionStarted.json.gz", folder(id)),
            "{}",
        )
        .await;
        provider_row(
            &store,
            id,
            json!({ "Input": format!("{}/{}/history--Input-0A0B0C0D-Input.json.gz", container_url(&store), utf8_escape(&pk)) }),
        )
        .await;
    }
    let expected_left = |gone: &[&str]| -> Vec<String> {
        let mut names: Vec<String> = ids
            .iter()
            .filter(|id| !gone.contains(id))
            .flat_map(|id| {
                [
                    format!("{}/history--Input-0A0B0C0D-Input.json.gz", escape_key(id)),
                    format!("{}/message-{guid}-ExecutionStarted.json.gz", folder(id)),
                ]
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(blob_names(&store).await, expected_left(&[]));

    assert!(store.purge_instance("order-1").await?);
    assert_eq!(blob_names(&store).await, expected_left(&["order-1"]));
    assert!(store.purge_instance("a").await?);
    assert_eq!(blob_names(&store).await, expected_left(&["order-1", "a"]));

    // By filter: every completed instance with a prefix, in parallel ranges.
    let purged = store
        .purge(
            &PurgeFilter::created_from(OffsetDateTime::UNIX_EPOCH)
                .instance_id_prefix("a/")
                .statuses([RuntimeStatus::Completed]),
        )
        .await?;
    assert_eq!(purged.deleted, 1);
    assert_eq!(
        blob_names(&store).await,
        expected_left(&["order-1", "a", "a/b"])
    );
    for id in ["x^y", "q#?\\z"] {
        assert!(store.purge_terminal_instance(id).await?);
    }
    assert_eq!(
        blob_names(&store).await,
        expected_left(&["order-1", "a", "a/b", "x^y", "q#?\\z"])
    );

    // A hub without the container purges as before.
    let other = common::store().await;
    other.create(NewInstance::new("plain", "Orch")).await?;
    other.complete("plain", None).await?;
    let purged = other
        .purge(&PurgeFilter::created_from(OffsetDateTime::UNIX_EPOCH))
        .await?;
    assert_eq!(purged.deleted, 1);
    assert!(other.purge_instance("nothing").await.is_ok());
    Ok(())
}

/// A purge stopped after an instance's blobs and before its row leaves the
/// row, and running it again finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_stopped_between_blobs_and_row_is_finished_by_a_rerun() -> Result<()> {
    let store = common::emulator_store().await;
    store
        .create(NewInstance::new("stop/1", "Orch").input(big_json(40_000, 's')))
        .await?;
    store.complete("stop/1", None).await?;
    assert_eq!(blob_names_on(&store).await.len(), 1);
    let (purger, proxy) = common::through_proxy(&store, StoreOptions::default()).await;

    let mut gate = proxy.hold_request("DELETE");
    let purge = tokio::spawn(async move { purger.purge_instance("stop/1").await });
    gate.reached().await;
    // The blobs went first; the row's delete is held: stop the purge here.
    assert!(blob_names_on(&store).await.is_empty());
    purge.abort();
    let _ = purge.await;

    // (The held delete never reaches the service while the gate is shut.)
    let row = store
        .get_with("stop/1", ReadOptions::default().fetch_large_payloads(false))
        .await?;
    assert!(row.is_some(), "the row is left for a re-run to find");
    assert!(store.purge_instance("stop/1").await?);
    assert!(store.get("stop/1").await?.is_none());
    gate.release();
    Ok(())
}

async fn blob_names_on(store: &InstanceStore) -> Vec<String> {
    blob_names(store).await
}
