//! Writes retried after their response was lost: the service carried out the
//! first attempt, and the retry must not be mistaken for someone else's
//! write (nor applied twice). The proxy in front of the real service loses
//! one response; the client's retry policy sends the request again.

mod common;

use anyhow::Result;
use durable_status::{
    CustomStatus, JsonText, NewInstance, RuntimeStatus, StateChange, StoreOptions,
};

/// Asserts that the proxy saw `method` at least twice since the last call:
/// the lost response really made the client send the request again.
fn sent_twice(proxy: &common::proxy::Proxy, method: &str) {
    let lines = proxy.take_lines();
    let sent = lines
        .iter()
        .filter(|l| l.starts_with(&format!("{method} ")))
        .count();
    assert!(sent >= 2, "{method} was sent {sent} times: {lines:?}");
}
use serde_json::json;

#[tokio::test]
async fn a_create_whose_response_was_lost_is_not_already_exists() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    proxy.lose_response_to("POST");
    store
        .create(NewInstance::new("lost-create", "Orch"))
        .await?;
    let lines = proxy.take_lines();
    let posts = lines.iter().filter(|l| l.starts_with("POST")).count();
    assert!(posts >= 2, "the insert was sent twice: {lines:?}");
    assert_eq!(
        store.get("lost-create").await?.unwrap().runtime_status,
        RuntimeStatus::Pending
    );
    // A real duplicate is still one.
    assert!(matches!(
        store.create(NewInstance::new("lost-create", "Orch")).await,
        Err(durable_status::Error::AlreadyExists {
            status: Some(RuntimeStatus::Pending),
            ..
        })
    ));
    Ok(())
}

#[tokio::test]
async fn a_conditional_write_whose_response_was_lost_is_not_a_conflict() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    let etag = store
        .create(NewInstance::new("lost-merge", "Orch"))
        .await?
        .etag;
    proxy.lose_response_to("MERGE");
    let status = CustomStatus::from_value(&json!({"step": 1}))?;
    let new_etag = store
        .set_custom_status_if_match("lost-merge", Some(&status), &etag)
        .await?;
    sent_twice(&proxy, "MERGE");
    assert_eq!(store.get("lost-merge").await?.unwrap().etag, new_etag);

    // A write that really lost still is a conflict.
    let err = store
        .set_custom_status_if_match("lost-merge", Some(&status), &etag)
        .await
        .unwrap_err();
    assert!(
        matches!(err, durable_status::Error::Conflict { .. }),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn read_modify_write_applies_once_when_a_response_is_lost() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    store.create(NewInstance::new("counter", "Orch")).await?;
    let increment = |current: Option<&CustomStatus>| {
        let count = current.map_or(0, |c| c.to_value()["count"].as_u64().unwrap_or(0));
        CustomStatus::from_value(&json!({"count": count + 1})).map(Some)
    };
    store.update_custom_status("counter", increment).await?;
    proxy.take_lines();
    proxy.lose_response_to("MERGE");
    store.update_custom_status("counter", increment).await?;
    sent_twice(&proxy, "MERGE");
    let count = store
        .get("counter")
        .await?
        .unwrap()
        .custom_status
        .unwrap()
        .to_value()["count"]
        .clone();
    assert_eq!(count, 2, "incremented once per call");
    Ok(())
}

#[tokio::test]
async fn a_guarded_terminate_whose_response_was_lost_succeeds() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    store
        .create(NewInstance::new("t", "Orch").status(RuntimeStatus::Running))
        .await?;
    proxy.lose_response_to("MERGE");
    let terminate = StateChange::Terminate {
        reason: "stop".into(),
    };
    store.change_state("t", &terminate).await?;
    sent_twice(&proxy, "MERGE");
    assert_eq!(
        store.get("t").await?.unwrap().runtime_status,
        RuntimeStatus::Terminated
    );
    Ok(())
}

#[tokio::test]
async fn a_replace_whose_response_was_lost_is_not_a_conflict() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    store.create(NewInstance::new("again", "Orch")).await?;
    store
        .complete("again", Some(JsonText::from_value(&1)?))
        .await?;
    proxy.take_lines();
    proxy.lose_response_to("PUT");
    store
        .create(NewInstance::new("again", "Second").overwrite_terminal(true))
        .await?;
    sent_twice(&proxy, "PUT");
    let status = store.get("again").await?.unwrap();
    assert_eq!(
        (status.name.as_str(), status.runtime_status),
        ("Second", RuntimeStatus::Pending)
    );
    Ok(())
}

/// A store of the same task hub straight on the emulator: another writer.
async fn other_writer(store: &durable_status::InstanceStore) -> durable_status::InstanceStore {
    durable_status::InstanceStore::connect(&common::emulator(), store.task_hub())
        .await
        .expect("the other writer connects")
}

fn count(status: Option<&CustomStatus>) -> u64 {
    status.map_or(0, |c| c.to_value()["count"].as_u64().unwrap_or(0))
}

fn increment(current: Option<&CustomStatus>) -> durable_status::Result<Option<CustomStatus>> {
    CustomStatus::from_value(&json!({"count": count(current) + 1})).map(Some)
}

#[tokio::test]
async fn a_competing_writer_in_the_lost_response_window_never_causes_a_double_increment(
) -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    store.create(NewInstance::new("counter", "Orch")).await?;
    let other = other_writer(&store).await;

    // Our increment reaches the service and is applied (0 to 1); its answer
    // is lost, and before our retry the other writer increments (1 to 2).
    let mut lost = proxy.lose_response_and_hold("MERGE");
    let ours = tokio::spawn({
        let store = store.clone();
        async move { store.update_custom_status("counter", increment).await }
    });
    lost.reached().await;
    other.update_custom_status("counter", increment).await?;
    lost.release();
    let outcome = ours.await?;

    sent_twice(&proxy, "MERGE");
    let err = outcome.expect_err("the store cannot know: it must not guess");
    assert!(
        matches!(err, durable_status::Error::OutcomeUnknown { .. }),
        "{err}"
    );
    assert!(!err.is_transient(), "a blind retry could apply it twice");
    let stored = other.get("counter").await?.unwrap();
    assert_eq!(
        count(stored.custom_status.as_ref()),
        2,
        "each writer's increment applied once"
    );
    Ok(())
}

#[tokio::test]
async fn a_guarded_change_never_changes_an_instance_completed_after_its_read() -> Result<()> {
    let (store, proxy) = common::proxied_store(StoreOptions::default()).await;
    store
        .create(NewInstance::new("late", "Orch").status(RuntimeStatus::Running))
        .await?;
    let other = other_writer(&store).await;

    // The suspend has read "Running"; its write waits at the proxy while
    // the other writer completes the instance.
    let mut held = proxy.hold_request("MERGE");
    let suspend = tokio::spawn({
        let store = store.clone();
        async move { store.suspend("late").await }
    });
    held.reached().await;
    other
        .complete("late", Some(JsonText::from_value(&"done")?))
        .await?;
    let completed = other.get("late").await?.unwrap();
    held.release();

    let err = suspend
        .await?
        .expect_err("a terminal instance is not changed");
    assert!(
        matches!(
            err,
            durable_status::Error::Terminal {
                status: RuntimeStatus::Completed,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(other.get("late").await?.unwrap(), completed, "unchanged");
    Ok(())
}
