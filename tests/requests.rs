//! Each operation costs the fewest HTTP requests it can. Counted by a
//! pass-through proxy in front of a real Azurite.

mod common;

use anyhow::Result;
use durable_status::{
    CustomStatus, JsonText, NewInstance, ReadOptions, StateChange, StoreOptions, WriteCondition,
};
use serde_json::json;

#[tokio::test]
async fn every_operation_takes_the_fewest_requests() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    let cost = |label: &str, expected: usize| {
        let n = proxy.take_requests();
        assert_eq!(n, expected, "{label} took {n} requests");
    };

    let etag = store
        .create(NewInstance::new("i", "Orch").input_value(&1)?)
        .await?
        .etag;
    cost("create", 1);
    store.get("i").await?;
    cost("get", 1);
    store.get_with("i", ReadOptions::without_payloads()).await?;
    cost("get without payloads", 1);
    let status = CustomStatus::from_value(&json!({"progress": 0.5}))?;
    store.set_custom_status("i", Some(&status)).await?;
    cost("set custom status", 1);
    let err = store
        .set_custom_status_if_match("i", Some(&status), &etag)
        .await
        .unwrap_err();
    assert!(matches!(err, durable_status::Error::Conflict { .. }));
    // A plain 412 was certainly not this write: no read to tell.
    cost("a conditional set that loses", 1);
    store.update_custom_status("i", |_| Ok(None)).await?;
    cost("read-modify-write without contention", 2);

    // Guarded by default: a read of the status, then a merge on its ETag.
    store.start("i").await?;
    cost("start", 2);
    store.suspend("i").await?;
    cost("suspend", 2);
    store.resume("i").await?;
    cost("resume", 2);
    store
        .continue_as_new("i", Some(JsonText::from_value(&2)?))
        .await?;
    cost("continue as new", 2);
    let etag = store.complete("i", None).await?;
    cost("complete", 2);
    let err = store.fail("i", "x").await.unwrap_err();
    assert!(matches!(err, durable_status::Error::Terminal { .. }));
    cost("a state change of a terminal instance (the read only)", 1);
    let fail = StateChange::Fail { error: "x".into() };
    store.change_state_if_match("i", &fail, &etag).await?;
    cost("a state change on the caller's ETag", 1);
    let terminate = StateChange::Terminate { reason: "y".into() };
    store.change_state_unchecked("i", &terminate).await?;
    cost("an unchecked state change", 1);
    store
        .delete_with("i", &WriteCondition::Unconditional)
        .await?;
    cost("delete", 1);

    let oversized = CustomStatus::from_value(&"x".repeat(20_000))?;
    assert!(store
        .set_custom_status("i", Some(&oversized))
        .await
        .is_err());
    assert!(store.create(NewInstance::new("", "Orch")).await.is_err());
    cost("refused input", 0);
    Ok(())
}

#[tokio::test]
async fn payload_free_reads_select_the_other_columns() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    store.create(NewInstance::new("i", "Orch")).await?;
    proxy.take_lines();
    store.get_with("i", ReadOptions::without_payloads()).await?;
    let lines = proxy.take_lines();
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].contains("$select=PartitionKey,Name,"),
        "{}",
        lines[0]
    );
    assert!(
        !lines[0].contains("Input") && !lines[0].contains("Output"),
        "{}",
        lines[0]
    );
    // Columns no status is decoded from are never read.
    let select = lines[0]
        .split_once("$select=")
        .map_or("", |(_, select)| select);
    for unread in ["RowKey", "TaskHubName", "Timestamp"] {
        assert!(!select.contains(unread), "{}", lines[0]);
    }
    store.get("i").await?;
    let lines = proxy.take_lines();
    assert!(
        lines[0].contains("$select=PartitionKey,Name,")
            && lines[0].contains("Input,InputBlobName,Output"),
        "{}",
        lines[0]
    );
    Ok(())
}
