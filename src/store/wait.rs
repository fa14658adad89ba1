//! Waiting for an instance by polling, reading only the columns a poll
//! needs, and watching it as a stream of its changes.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::time::Instant;

use super::InstanceStore;
use crate::error::{Error, Result};
use crate::format::columns::{COLUMNS_WITHOUT_PAYLOADS, CUSTOM_STATUS, OUTPUT, RUNTIME_STATUS};
use crate::format::keys::partition_key;
use crate::model::{CustomStatus, InstanceStatus, RuntimeStatus};

/// The shortest interval between two polls; shorter ones are raised to it.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What [`InstanceStore::wait_for_custom_status_change`] saw.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CustomStatusUpdate {
    /// The custom status now.
    pub custom_status: Option<CustomStatus>,
    /// The runtime status now.
    pub runtime_status: RuntimeStatus,
}

impl InstanceStore {
    /// Polls until the instance is terminal, then returns it whole.
    ///
    /// Each poll reads only the RuntimeStatus column; the full record is read
    /// once, at the end. [`Error::NotFound`] when there is no such instance
    /// (or it is deleted meanwhile), [`Error::Timeout`] when `timeout` passes.
    pub async fn wait_for_completion(
        &self,
        instance_id: &str,
        timeout: Duration,
        poll_interval: Duration,
    ) -> Result<InstanceStatus> {
        self.poll(
            instance_id,
            &[RUNTIME_STATUS],
            timeout,
            poll_interval,
            |status| status.runtime_status.is_terminal(),
        )
        .await?;
        self.get(instance_id)
            .await?
            .ok_or_else(|| Error::not_found(instance_id))
    }

    /// Polls until the custom status differs from `last_seen` (the text the
    /// caller last saw; `None` for none), or until the instance is terminal,
    /// when it will not change again.
    ///
    /// Each poll reads only the CustomStatus and RuntimeStatus columns.
    pub async fn wait_for_custom_status_change(
        &self,
        instance_id: &str,
        last_seen: Option<&CustomStatus>,
        timeout: Duration,
        poll_interval: Duration,
    ) -> Result<CustomStatusUpdate> {
        let columns = [CUSTOM_STATUS, RUNTIME_STATUS];
        let status = self
            .poll(instance_id, &columns, timeout, poll_interval, |status| {
                status.custom_status.as_ref() != last_seen || status.runtime_status.is_terminal()
            })
            .await?;
        Ok(CustomStatusUpdate {
            custom_status: status.custom_status,
            runtime_status: status.runtime_status,
        })
    }

    /// Watches an instance: a stream of its status (without its input),
    /// first as it is, then each time its runtime status, custom status or
    /// output changes, polled every `poll_interval`; the stream ends after
    /// the instance's terminal status. Each poll reads the columns of the
    /// status but Input. An instance that does not exist (or is deleted
    /// meanwhile) ends the stream with [`Error::NotFound`]; a failed read
    /// ends it with its error.
    pub fn watch(
        &self,
        instance_id: &str,
        poll_interval: Duration,
    ) -> BoxStream<'static, Result<InstanceStatus>> {
        struct State {
            store: InstanceStore,
            instance_id: String,
            pk: Option<String>,
            last: Option<(RuntimeStatus, Option<CustomStatus>, Option<String>)>,
            done: bool,
        }
        let pk = match partition_key(instance_id) {
            Ok(pk) => pk,
            Err(e) => return futures::stream::once(async { Err(e) }).boxed(),
        };
        let poll_interval = poll_interval.max(MIN_POLL_INTERVAL);
        let state = State {
            store: self.clone(),
            instance_id: instance_id.to_owned(),
            pk: Some(pk),
            last: None,
            done: false,
        };
        futures::stream::unfold(state, move |mut state| async move {
            if state.done {
                return None;
            }
            let pk = state.pk.clone()?;
            let mut columns = COLUMNS_WITHOUT_PAYLOADS.to_vec();
            columns.push(OUTPUT);
            loop {
                if state.last.is_some() {
                    tokio::time::sleep(poll_interval).await;
                }
                let status = match state
                    .store
                    .read_existing(&state.instance_id, &pk, &columns)
                    .await
                {
                    Ok(status) => status,
                    Err(e) => {
                        state.done = true;
                        return Some((Err(e), state));
                    }
                };
                let seen = (
                    status.runtime_status,
                    status.custom_status.clone(),
                    status.output.clone(),
                );
                if state.last.as_ref() == Some(&seen) {
                    continue;
                }
                state.done = status.runtime_status.is_terminal();
                state.last = Some(seen);
                return Some((Ok(status), state));
            }
        })
        .boxed()
    }

    async fn poll(
        &self,
        instance_id: &str,
        columns: &[&'static str],
        timeout: Duration,
        poll_interval: Duration,
        mut done: impl FnMut(&InstanceStatus) -> bool,
    ) -> Result<InstanceStatus> {
        let pk = partition_key(instance_id)?;
        // A zero interval would poll as fast as the service answers.
        let poll_interval = poll_interval.max(MIN_POLL_INTERVAL);
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.read_existing(instance_id, &pk, columns).await?;
            if done(&status) {
                return Ok(status);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(timeout));
            }
            tokio::time::sleep(poll_interval.min(deadline - now)).await;
        }
    }
}
