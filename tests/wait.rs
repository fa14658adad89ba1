//! Waiting for an instance, against a real table service.

mod common;

use std::time::Duration;

use anyhow::Result;
use durable_status::{CustomStatus, Error, JsonText, NewInstance, RuntimeStatus, StoreOptions};
use serde_json::json;

const POLL: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(20);

#[tokio::test]
async fn waits_until_the_instance_is_terminal() -> Result<()> {
    let store = common::store().await;
    store
        .create(NewInstance::new("w", "Orch").status(RuntimeStatus::Running))
        .await?;
    let finisher = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        finisher
            .complete("w", Some(JsonText::from_value(&"result").unwrap()))
            .await
            .unwrap();
    });
    let status = store.wait_for_completion("w", LONG, POLL).await?;
    assert_eq!(status.runtime_status, RuntimeStatus::Completed);
    assert_eq!(
        status.output.as_deref(),
        Some("\"result\""),
        "the final read is whole"
    );
    Ok(())
}

#[tokio::test]
async fn waiting_times_out() -> Result<()> {
    let store = common::store().await;
    store.create(NewInstance::new("slow", "Orch")).await?;
    let err = store
        .wait_for_completion("slow", Duration::from_millis(300), POLL)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout(d) if d == Duration::from_millis(300)),
        "{err}"
    );
    let err = store
        .wait_for_custom_status_change("slow", None, Duration::from_millis(200), POLL)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    Ok(())
}

#[tokio::test]
async fn waiting_for_a_missing_instance_is_not_found() -> Result<()> {
    let store = common::store().await;
    assert!(matches!(
        store.wait_for_completion("none", LONG, POLL).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store
            .wait_for_custom_status_change("none", None, LONG, POLL)
            .await,
        Err(Error::NotFound { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn waits_until_the_custom_status_changes() -> Result<()> {
    let store = common::store().await;
    store
        .create(NewInstance::new("c", "Orch").status(RuntimeStatus::Running))
        .await?;
    let first = CustomStatus::from_value(&json!({"progress": 0.25}))?;
    store.set_custom_status("c", Some(&first)).await?;

    // Seen something else already: returns at once with what is there.
    let now = store
        .wait_for_custom_status_change("c", None, LONG, POLL)
        .await?;
    assert_eq!(now.custom_status.as_ref(), Some(&first));

    let writer = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The same value again is no change; a new one is.
        writer
            .set_custom_status(
                "c",
                Some(&CustomStatus::from_value(&json!({"progress": 0.25})).unwrap()),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        writer
            .set_custom_status(
                "c",
                Some(&CustomStatus::from_value(&json!({"progress": 0.5})).unwrap()),
            )
            .await
            .unwrap();
    });
    let next = store
        .wait_for_custom_status_change("c", Some(&first), LONG, POLL)
        .await?;
    assert_eq!(
        next.custom_status.unwrap().to_value(),
        json!({"progress": 0.5})
    );
    assert_eq!(next.runtime_status, RuntimeStatus::Running);
    Ok(())
}

#[tokio::test]
async fn a_terminal_instance_ends_the_wait_for_a_change() -> Result<()> {
    let store = common::store().await;
    store.create(NewInstance::new("t", "Orch")).await?;
    let finisher = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        finisher.terminate("t", "stop").await.unwrap();
    });
    let update = store
        .wait_for_custom_status_change("t", None, LONG, POLL)
        .await?;
    assert_eq!(
        (update.custom_status, update.runtime_status),
        (None, RuntimeStatus::Terminated)
    );
    Ok(())
}

#[tokio::test]
async fn polls_read_only_the_columns_they_need() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    store
        .create(NewInstance::new("q", "Orch").status(RuntimeStatus::Running))
        .await?;
    let finisher = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        finisher.complete("q", None).await.unwrap();
    });
    proxy.take_lines();
    store.wait_for_completion("q", LONG, POLL).await?;
    let lines: Vec<String> = proxy
        .take_lines()
        .into_iter()
        .filter(|l| l.starts_with("GET"))
        .collect();
    let (last, polls) = lines.split_last().unwrap();
    assert!(polls.len() >= 2, "{lines:?}");
    assert!(
        polls
            .iter()
            .all(|l| l.contains("?$select=PartitionKey,RuntimeStatus ")),
        "{lines:?}"
    );
    assert!(!last.contains("$select"), "the final read is whole: {last}");

    store
        .set_custom_status("q", Some(&CustomStatus::from_value(&1)?))
        .await?;
    proxy.take_lines();
    store
        .wait_for_custom_status_change("q", None, LONG, POLL)
        .await?;
    let lines = proxy.take_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("?$select=PartitionKey,CustomStatus,RuntimeStatus "),
        "{lines:?}"
    );
    Ok(())
}
