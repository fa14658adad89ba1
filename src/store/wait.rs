//! Waiting for an instance by polling, reading only the columns a poll needs.

use std::time::Duration;

use tokio::time::Instant;

use super::InstanceStore;
use crate::error::{Error, Result};
use crate::format::columns::{CUSTOM_STATUS, RUNTIME_STATUS};
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
